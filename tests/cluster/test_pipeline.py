"""The whole pipeline through ``ray job submit`` on the autoscaling local cluster, from zero worker nodes.

ingest -> train -> embed -> reembed -> evaluate, each job submitted with ``--working-dir`` to the head of
``ray_cluster.local.yaml`` (dashboard and job API on loopback), each checked against what it gives
without a cluster: the rows the source yields in this process, the model's own encoding of them.
Then, on the same cluster: the service deployed by a job with two gateway replicas; a real Prometheus
(``infra/prometheus/prometheus.local.yml``) that sums them, sees the jobs' live and pushed figures and
answers every dashboard query; and the scheduled refresh of a drop folder that a new year lands in.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import torch
import yaml
from unigeoclip import Modality, UniGeoCLIP, load_config
from unigeoclip.geo.s2 import cell_token, token_center
from unigeoclip.ingest.pipeline import extract_locally
from unigeoclip.preprocess.batch import DecodeBatch
from unigeoclip.preprocess.spec import PreprocessSpec
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig
from unigeoclip.vectors import EmbeddingDB
from unigeoclip.vectors.versions import model_version_id

from ..files_world import PARIS, build_world
from ..helpers import expected_keys, stored_keys, stored_rows
from ..local_cluster import LocalCluster, free_port
from ..observability import Watch, dashboard_queries

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.filterwarnings("ignore:lance is not fork-safe")]
# Ray's processes report their metrics every second (10 s by default), so a short job's figures are seen.
SYSTEM_CONFIG = {"metrics_report_interval_ms": 1000}

PROBE = """
import json, sys, time
import ray
ray.init()
@ray.remote(num_cpus=1)
def first_task():
    return time.time()
print("PROBE " + json.dumps({"first_task_s": ray.get(first_task.remote()) - float(sys.argv[1])}))
"""
TRAIN = ["--steps", "20", "--workers", "2", "--set", "train.worker_resources.accelerator=1", "--set",
         "train.micro_batch=16", "--set", "train.cpus_per_worker=0.5", "--set", "train.cpus_per_decoder=0.25",
         "--set", "train.ckpt_every=10", "--set", "train.val_every=10", "--set", "train.log_every=5"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(system_config=SYSTEM_CONFIG)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def watch(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watch]:
    """Prometheus on the cluster's nodes (Ray's own service-discovery file) and a Pushgateway, from the start."""
    w = Watch(tmp_path_factory.mktemp("watch"), cluster.prometheus_targets)
    w.start()
    yield w
    w.stop()


def node_types(cluster: LocalCluster) -> list[str]:
    """The node group of every alive worker node (the fake provider labels them by resources only)."""
    return sorted("gpu_workers" if "accelerator" in n.resources_total else "cpu_workers" for n in cluster.nodes())


@dataclass
class Pipeline:
    shared: Path
    first_task_s: float
    nodes_after_probe: list[str]
    gpu_nodes_after_train: set[str] = field(default_factory=set)  # before idle nodes are taken away
    out: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.shared / "store"

    @property
    def run(self) -> Path:
        return self.shared / "run"

    @property
    def db(self) -> Path:
        return self.shared / "db"


@pytest.fixture(scope="module")
def pipeline(cluster: LocalCluster, watch: Watch) -> Pipeline:
    """Every job of the pipeline submitted in turn, from a cluster with no worker node; figures pushed to ``watch``."""
    assert cluster.nodes() == [], "the cluster starts with the head only"
    probe = cluster.dir / "probe"
    probe.mkdir()
    (probe / "probe.py").write_text(PROBE)
    out = cluster.submit("python", "probe.py", f"{time.time():.3f}", working_dir=probe)
    first_task_s = json.loads(out.split("PROBE ", 1)[1].splitlines()[0])["first_task_s"]
    print(f"submission -> first task, from zero worker nodes: {first_task_s:.1f} s")
    p = Pipeline(cluster.dir / "shared", first_task_s, node_types(cluster))  # shared: a path every node sees
    env = {"UNIGEOCLIP_PUSHGATEWAY": watch.pushgateway}
    store, run, db = str(p.store), str(p.run), str(p.db)
    jobs = {
        "ingest": ["jobs/ingest.py", "--source", "synthetic", "--config", "tiny", "--store", store],
        "train": ["jobs/train.py", "--config", "tiny", "--store", store, "--out", run, *TRAIN],
        "embed": ["jobs/embed.py", "--model", f"{run}/model", "--store", store, "--db", db, "--batch-size", "8"],
        "reembed": ["jobs/reembed.py", "--store", store, "--db", db],
        "evaluate": ["jobs/evaluate.py", "--model", f"{run}/model", "--store", store, "--out", str(p.shared / "report"),
                     "--db", db, "--no-geoclip", "--no-pictures"],
    }  # fmt: skip
    for name, command in jobs.items():
        started = time.monotonic()
        p.out[name] = cluster.submit("python", *command, env=env)
        p.seconds[name] = time.monotonic() - started
        if name == "train":
            p.gpu_nodes_after_train = {n.node_id for n in cluster.nodes() if "accelerator" in n.resources_total}
    print(f"pipeline on the local cluster: {p.seconds}; nodes at the end: {node_types(cluster)}")
    return p


def test_pipeline_from_zero_worker_nodes(cluster: LocalCluster, pipeline: Pipeline) -> None:
    assert pipeline.nodes_after_probe == ["cpu_workers"], "one CPU node came for one CPU task"

    cfg = load_config("tiny")
    source = SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data)
    rows, _ = extract_locally(source, cfg.data, source.plan())
    samples = SampleStore(pipeline.store)
    assert sorted(samples.keys()["sample_id"].to_pylist()) == sorted(r["sample_id"] for r in rows)

    run = pipeline.run
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20 and np.isfinite([m["loss"] for m in log if "loss" in m]).all()
    ranks = [json.loads((run / "workers" / f"rank-{r}.json").read_text()) for r in range(2)]
    gpu_nodes = pipeline.gpu_nodes_after_train
    assert {r["node_id"] for r in ranks} <= gpu_nodes and len(gpu_nodes) == 2, "training ran on the GPU group"

    version = model_version_id(run / "model")
    keys = stored_keys(pipeline.db, version)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(samples)
    table = stored_rows(pipeline.db, version)
    coords = {i: v for i, m, v in zip(table["sample_id"].to_pylist(), table["modality"].to_pylist(),
                                      table["vector"].to_pylist(), strict=True) if m == "coords"}  # fmt: skip
    current = samples.samples().to_table(filter="current = true")
    model = UniGeoCLIP.from_pretrained(run / "model")
    # the canonical inputs, as the embed job reads them
    decoded = DecodeBatch(PreprocessSpec.of(model.config), augment=False)(current)
    with torch.no_grad():
        want = model.encode(Modality.COORDS, torch.from_numpy(decoded["coords"]))
    got = np.stack([coords[i] for i in current["sample_id"].to_pylist()])
    np.testing.assert_allclose(got, want.float().numpy(), atol=1e-5)

    out = pipeline.out["reembed"]
    assert re.search(r"embedded: 0 rows", out) and re.search(rf"skipped: {len(keys)} already", out), out[-2000:]

    report = pipeline.shared / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics and (report / "report.md").is_file()


def test_every_job_reports_its_figures_to_prometheus(pipeline: Pipeline, watch: Watch) -> None:
    """Pushed at each job's end (exact), and live from Ray's export while training ran."""
    samples = SampleStore(pipeline.store)
    store, run = samples.root, str(pipeline.run.resolve())
    written = watch.wait_for(f'unigeoclip_ingest_rows_written{{store="{store}"}}', samples.count())
    assert written == samples.count(), written
    assert watch.value(f'unigeoclip_ingest_rejects{{store="{store}"}}') == 0.0
    assert watch.value(f'unigeoclip_train_step{{run="{run}"}}') == 20.0
    assert np.isfinite(watch.value(f'unigeoclip_train_loss{{run="{run}"}}') or np.nan)
    version = model_version_id(pipeline.run / "model")
    keys = len(stored_keys(pipeline.db, version))
    assert watch.value(f'unigeoclip_embed_rows_embedded{{model_version="{version}"}}') == keys
    assert watch.value(f'unigeoclip_reembed_rows_embedded{{model_version="{version}"}}') == 0.0
    # Live: rank 0 set its gauges at every logged step (every 5) while the run went.
    live = watch.value(f'max(max_over_time(ray_unigeoclip_train_step{{run="{run}"}}[1h]))')
    assert live is not None and 5 <= live <= 20, live
    seen = watch.value(f'max(max_over_time(ray_unigeoclip_ingest_samples_total{{store="{store}",status="new"}}[1h]))')
    assert seen is not None and 0 < seen <= samples.count(), seen


# ---------------------------------------------------------------- the service and the scheduled refresh


def drop_year(world_root: Path, drop: Path, year: int, *, invert: bool = False, text: str | None = None) -> Path:
    """A year folder of the files source's drop layout, from the generated world in ``world_root``.

    The first year takes everything (rasters, a DSM without a CRS, street images, texts: with their bad
    rows, which become rejects); a later one a new aerial mosaic (colours inverted) and one new text.
    """
    folder = drop / str(year)
    (folder / "aerial").mkdir(parents=True)
    with rasterio.open(world_root / "aerial.tif") as src:
        profile, data = src.profile, src.read()
    if invert:
        data[:3] = 255 - data[:3]
    with rasterio.open(folder / "aerial" / "paris.tif", "w", **profile) as dst:
        dst.write(data)
    if text is None:
        (folder / "dsm").mkdir()
        shutil.copy(world_root / "dsm.tif", folder / "dsm" / "paris.tif")
        shutil.copy(world_root / "dsm_nocrs.tif", folder / "dsm" / "nocrs.tif")
        shutil.copytree(world_root / "street", folder / "street")
        shutil.copy(world_root / "street_index.csv", folder / "street.csv")
        shutil.copy(world_root / "texts.jsonl", folder / "text.jsonl")
    else:
        lat, lon = token_center(cell_token(*PARIS, 16))
        (folder / "text.jsonl").write_text(json.dumps({"id": f"new-{year}", "lat_deg": lat, "lon_deg": lon,
                                                       "text": text}) + "\n")  # fmt: skip
    return folder


@dataclass
class Served:
    url: str
    world: Path
    drop: Path
    store: Path
    db: Path
    first_ingest: str


@pytest.fixture(scope="module")
def served(cluster: LocalCluster, watch: Watch, pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """A user's files (a first year in the drop folder) ingested and embedded by jobs, then served by a job."""
    world = tmp_path_factory.mktemp("world")
    build_world(world)
    shared = pipeline.shared / "files"
    drop, store, db = shared / "drop", shared / "store", shared / "db"
    drop_year(world, drop, 2021)
    env = {"UNIGEOCLIP_PUSHGATEWAY": watch.pushgateway}
    source = ["--source", "files", "--config", "tiny", "--set", f"data.sources.files.drop_dir={drop}"]
    first = cluster.submit("python", "jobs/ingest.py", *source, "--store", str(store), env=env)
    cluster.submit("python", "jobs/embed.py", "--model", str(pipeline.run / "model"), "--store", str(store),
                   "--db", str(db), "--batch-size", "8", env=env)  # fmt: skip
    config = shared / "serve.yaml"  # two gateway replicas: Prometheus must add them up
    small = {"num_cpus": 0.25}
    config.write_text(yaml.safe_dump({"refresh_s": 1.0, "gateway": {"num_replicas": 2, **small},
                                      "encoder": {"num_replicas": 1, **small},
                                      "retriever": {"num_replicas": 1, **small}}))  # fmt: skip
    port = free_port()
    out = cluster.submit("python", "jobs/serve.py", "--detach", "--db", str(db), "--port", str(port),
                         "--serve-config", str(config), "--proxy-location", "HeadOnly")  # fmt: skip
    assert "deployed" in out and "keeps running" in out, out[-2000:]
    url = f"http://127.0.0.1:{port}"
    cluster.wait_for(lambda: _ready(url), 180, "ready service after its job ended")
    return Served(url, world, drop, store, db, first)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def _search(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json=body, timeout=30)


def test_prometheus_sums_the_requests_of_every_gateway_replica(served: Served, watch: Watch) -> None:
    total = 'sum(ray_unigeoclip_serve_requests_total{route="/v1/search"})'
    before = -1.0
    while before != (now := watch.value(total) or 0.0):  # settled: every earlier request exported and scraped
        before = now
        time.sleep(3.0)
    good = {"query": {"text": "a tall white tower by the river"}, "targets": ["text", "aerial"], "k": 3}
    sent = [_search(served.url, good).status_code for _ in range(50)]
    sent += [_search(served.url, good | {"k": 100_000}).status_code for _ in range(10)]
    assert sent.count(200) == 50 and sent.count(422) == 10, sent
    got = watch.wait_for(total, before + 60)
    assert got == before + 60, f"Prometheus counts {got}, {before} + 60 were sent"
    replicas = watch.query('count by (replica) (ray_unigeoclip_serve_requests_total{route="/v1/search"})')
    assert len(replicas) == 2, replicas  # both gateway replicas answered, and Prometheus saw both
    errors = watch.value('sum(ray_unigeoclip_serve_errors_total{route="/v1/search",reason="invalid"})')
    assert errors is not None and errors >= 10
    print(f"\nPrometheus: {got:.0f} search requests summed over {len(replicas)} gateway replicas")


def test_refresh_ingests_a_dropped_year_embeds_only_it_and_serve_answers_without_a_restart(
    cluster: LocalCluster, served: Served, watch: Watch
) -> None:
    query = {"query": {"text": "A new glass tower by the river"}, "targets": ["text"], "k": 5,
             "filters": {"year": 2022}}  # fmt: skip
    r = _search(served.url, query)
    assert r.status_code == 200 and r.json()["hits"] == [], r.text
    replicas = {a.actor_id for a in cluster.actors("ServeReplica:")}
    samples = SampleStore(served.store)
    before = {r["sample_id"] for r in samples.samples().to_table(filter="current = true").to_pylist()}

    drop_year(served.world, served.drop, 2022, invert=True, text="A new glass tower by the river")
    source = ["--source", "files", "--config", "tiny", "--set", f"data.sources.files.drop_dir={served.drop}"]
    started = time.monotonic()
    out = cluster.submit("python", "jobs/refresh.py", *source, "--store", str(served.store), "--db", str(served.db),
                         "--batch-size", "8", env={"UNIGEOCLIP_PUSHGATEWAY": watch.pushgateway})  # fmt: skip
    ended = time.monotonic()

    current = samples.samples().to_table(filter="current = true").to_pylist()
    new = [r for r in current if r["sample_id"] not in before]
    assert new and {r["year"] for r in new} == {2022}, "the run wrote the dropped year's samples, nothing else"
    assert {r["sample_id"] for r in current} >= before, "and kept every sample it had"
    assert re.search(rf"written: {len(new)} new samples", out) and re.search(rf"skipped: {len(before)} already", out)
    new_keys = {k for k in expected_keys(samples) if k[0] in {r["sample_id"] for r in new}}
    version = EmbeddingDB(served.db).alias()["model_version"]
    keys = stored_keys(served.db, version)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(samples), "every current sample, once"
    assert re.search(rf"embedded: {len(new_keys)} rows", out), out[-3000:]  # only the new samples' modalities

    def answers() -> list[dict]:
        hits: list[dict] = _search(served.url, query).json()["hits"]
        return hits

    hits = cluster.wait_for(answers, 60, "hit of the new year from the running service")
    print(f"\nrefresh job: {ended - started:.1f} s for {len(new)} new samples ({len(new_keys)} rows); the service "
          f"answered from them {time.monotonic() - ended:.1f} s after it ended")  # fmt: skip
    assert hits[0]["sample_id"] in {r["sample_id"] for r in new} and hits[0]["year"] == 2022, hits[0]
    assert {a.actor_id for a in cluster.actors("ServeReplica:")} == replicas, "no replica restarted"


def test_every_dashboard_query_returns_series(pipeline: Pipeline, served: Served, watch: Watch) -> None:
    """Each panel of infra/grafana/*.json, over the window these jobs and the service ran in."""
    end = time.time()
    empty = [(board, title, expr) for board, title, expr in dashboard_queries()
             if not watch.query_range(expr, watch.started, end)]  # fmt: skip
    assert len(dashboard_queries()) >= 15 and not empty, empty
    print(f"\n{len(dashboard_queries())} dashboard queries, each with series over {end - watch.started:.0f} s")


def test_a_command_without_an_address_starts_its_own_ray_beside_a_running_cluster(cluster: LocalCluster) -> None:
    """A plain ``ray.init()`` would join any Ray running on the machine (here the 0-CPU head): the CLI's
    "default: RAY_ADDRESS, else a local Ray" must hold anyway."""
    import subprocess
    import sys

    env = {k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"}
    code = ("from unigeoclip.cluster import runtime; r = runtime.ensure_ray(num_cpus=1); "
            "print('RESULT', r.get('CPU'), runtime.can_grow())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("RESULT", 1)[1].split() == ["1.0", "False"]
