"""The re-embedding schedule stays in step with the code: the command the CronJob submits parses."""

from __future__ import annotations

from pathlib import Path

import yaml
from unigeoclip.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_cronjob_submits_reembed_as_a_ray_job_with_arguments_the_cli_accepts() -> None:
    cron = yaml.safe_load((ROOT / "infra" / "kuberay" / "cronjob-reembed.yaml").read_text())
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["ray", "job", "submit"]
    entry = command[command.index("--") + 1 :]
    assert entry[:2] == ["python", "jobs/reembed.py"] and (ROOT / entry[1]).is_file()
    args = build_parser().parse_args(["reembed", *entry[2:]])
    assert args.model is None and args.db and args.store and args.pushgateway


def test_readme_cron_line_runs_the_same_job() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "ray job submit" in line and "jobs/reembed.py" in line]
    assert lines, "the README gives the cron line for the re-embedding job"
    entry = lines[0].split(" -- ", 1)[1].split(">>")[0].split()
    assert entry[:2] == ["python", "jobs/reembed.py"]
    build_parser().parse_args(["reembed", *entry[2:]])
