"""The refresh schedule stays in step with the code: the command each scheduler submits parses."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from unigeoclip.app.cli import build_parser
from unigeoclip.config import parse_overrides

ROOT = Path(__file__).resolve().parents[2]


def _check_refresh(entry: list[str]) -> None:
    assert entry[:2] == ["python", "jobs/refresh.py"] and (ROOT / entry[1]).is_file()
    args = build_parser().parse_args(["refresh", *entry[2:]])
    assert args.source == "files" and args.db and args.store and args.pushgateway
    drop = parse_overrides(args.set)["data"]["sources"]["files"]["drop_dir"]
    assert drop.startswith("/data/"), "the drop folder is on the shared volume every pod mounts"


def test_cronjob_submits_the_refresh_as_a_ray_job_with_arguments_the_cli_accepts() -> None:
    cron = yaml.safe_load((ROOT / "infra" / "kuberay" / "cronjob-refresh.yaml").read_text())
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["ray", "job", "submit"]
    _check_refresh(command[command.index("--") + 1 :])


def test_raycronjob_runs_the_same_refresh() -> None:
    cron = yaml.safe_load((ROOT / "infra" / "kuberay" / "raycronjob-refresh.yaml").read_text())
    assert cron["kind"] == "RayCronJob"
    _check_refresh(shlex.split(cron["spec"]["jobTemplate"]["entrypoint"]))


def test_the_documented_cron_line_runs_the_same_job() -> None:
    readme = (ROOT / "docs" / "embedding-store.md").read_text()
    lines = [line for line in readme.splitlines() if "ray job submit" in line and "jobs/refresh.py" in line]
    assert lines, "docs/embedding-store.md gives the cron line for the refresh job"
    entry = lines[0].split(" -- ", 1)[1].split(">>")[0].split()
    assert entry[:2] == ["python", "jobs/refresh.py"]
    build_parser().parse_args(["refresh", *entry[2:]])
