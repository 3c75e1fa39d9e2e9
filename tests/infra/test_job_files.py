"""The deployment files stay in step with the code: job commands parse, the dashboard stays private, Serve is fast."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from unigeoclip.app.cli import build_parser
from unigeoclip.cluster.ingress import FAST_SERVE_INGRESS
from unigeoclip.sources.synthetic.source import SyntheticSourceConfig

ROOT = Path(__file__).resolve().parents[2]
JOBS = {p.stem for p in (ROOT / "jobs").glob("*.py")}


def entrypoints() -> list[tuple[str, list[str]]]:
    """The ``entrypoint`` of every RayJob manifest (what the cluster actually runs)."""
    found = []
    for path in (ROOT / "infra").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            entry = (doc or {}).get("spec", {}).get("entrypoint")
            if entry:
                found.append((path.name, shlex.split(entry)))
    return found


def test_manifests_parse_as_yaml() -> None:
    for path in [ROOT / "ray_cluster.yaml", *(ROOT / "infra").rglob("*.yaml")]:
        assert list(yaml.safe_load_all(path.read_text())), path


@pytest.mark.parametrize(("where", "words"), entrypoints())
def test_job_entrypoints_in_manifests_parse(where: str, words: list[str]) -> None:
    assert words[0] == "python" and words[1].startswith("jobs/"), f"{where}: entrypoints run a job script"
    job = Path(words[1]).stem
    assert job in JOBS, f"{where} runs {words[1]}, which does not exist"
    build_parser().parse_args([job, *words[2:]])


def test_dashboard_is_not_exposed_beyond_the_head() -> None:
    cluster = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    assert any("--dashboard-host=127.0.0.1" in c for c in cluster["head_start_ray_commands"])
    for path in (ROOT / "infra" / "kuberay").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        spec = doc.get("spec", {})
        head = spec.get("headGroupSpec") or spec.get("rayClusterSpec", {}).get("headGroupSpec")
        if head:
            assert head.get("serviceType", "ClusterIP") == "ClusterIP", path


def test_the_image_gives_every_node_the_fast_serve_ingress() -> None:
    """Every cluster (ray_cluster.yaml, infra/kuberay) runs this image: Serve there uses the local default's ingress."""
    env = {}
    for line in (ROOT / "infra" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            env |= dict(word.split("=", 1) for word in shlex.split(line[4:]))
    assert {k: env.get(k) for k in FAST_SERVE_INGRESS} == FAST_SERVE_INGRESS


def test_serve_detach_needs_a_cluster_to_leave_the_service_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from unigeoclip.app.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", "--db", "nowhere", "--detach"]) == 2
    err = capsys.readouterr().err
    assert "--detach" in err and "RAY_ADDRESS" in err, err


def test_refresh_refuses_to_start_when_nothing_serves_yet(tmp_path: Path) -> None:
    """Before ingesting anything: a scheduled run must not do half its work and then fail."""
    from unigeoclip import load_config
    from unigeoclip.embed import refresh
    from unigeoclip.errors import ConfigError
    from unigeoclip.samples.store import SampleStore
    from unigeoclip.sources.synthetic.source import SyntheticSource

    cfg = load_config("tiny")
    store = SampleStore(tmp_path / "store")
    with pytest.raises(ConfigError, match=r"nothing serves from .* run `unigeoclip embed"):
        refresh(SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data), store, tmp_path / "db", cfg.data)
    assert not (tmp_path / "store" / "samples.lance").exists()
