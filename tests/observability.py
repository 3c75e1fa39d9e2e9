"""A real Prometheus and Pushgateway (Debian's packages, installed by ``make test``) for the cluster tests.

Prometheus runs the project's own ``infra/prometheus/prometheus.local.yml``, with only the paths and
ports of this test's cluster put in and a 1 s scrape interval, so the scrape config docs/serving.md ships
is the one under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .local_cluster import ROOT, free_port

LOCAL_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.local.yml"
DASHBOARDS = sorted((ROOT / "infra" / "grafana").glob("*.json"))


def binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: `make test` installs Debian's {package} (or apt-get install it)")
    return found


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


class Watch:
    """Prometheus scraping a Ray cluster's nodes (Ray's service-discovery file) and a Pushgateway."""

    def __init__(self, workdir: Path, ray_targets: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pushgateway = f"http://127.0.0.1:{free_port()}"
        self.url = f"http://127.0.0.1:{free_port()}"
        cfg = yaml.safe_load(LOCAL_CONFIG.read_text())
        cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        jobs["ray"]["file_sd_configs"][0]["files"] = [str(ray_targets)]
        jobs["ray"]["file_sd_configs"][0]["refresh_interval"] = "1s"
        jobs["unigeoclip-jobs"]["static_configs"][0]["targets"] = [self.pushgateway.removeprefix("http://")]
        del jobs["serve-haproxy-local"]  # the cluster's nodes run Serve's Python proxy
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0.0

    def start(self) -> None:
        gateway = [binary("prometheus-pushgateway", "prometheus-pushgateway"),
                   f"--web.listen-address={self.pushgateway.removeprefix('http://')}"]  # fmt: skip
        prometheus = [binary("prometheus", "prometheus"), f"--config.file={self.config}",
                      f"--storage.tsdb.path={self.dir / 'tsdb'}",
                      f"--web.listen-address={self.url.removeprefix('http://')}"]  # fmt: skip
        for name, command in (("pushgateway", gateway), ("prometheus", prometheus)):
            log = (self.dir / f"{name}.log").open("wb")
            self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        for ready in (f"{self.pushgateway}/-/ready", f"{self.url}/-/ready"):
            while True:
                try:
                    _get(ready, timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError):
                    assert time.monotonic() < deadline, f"{ready} never answered; logs in {self.dir}"
                    time.sleep(0.25)
        self.started = time.time()

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)

    def _api(self, path: str, **params: Any) -> Any:
        body = json.loads(_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        return list(self._api("query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The value of a query that gives one series (None when it gives none)."""
        found = self.query(expr)
        assert len(found) <= 1, (expr, found)
        return float(found[0]["value"][1]) if found else None

    def query_range(self, expr: str, start: float, end: float, step_s: float = 2.0) -> list[dict[str, Any]]:
        """A range query's series over ``[start, end]``: what a dashboard panel over that window shows."""
        return list(self._api("query_range", query=expr, start=start, end=end, step=step_s)["result"])

    def wait_for(self, expr: str, want: float, timeout_s: float = 90) -> float | None:
        """Poll ``expr`` until its one series equals ``want``; returns the last value (for the assert's message)."""
        deadline = time.monotonic() + timeout_s
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(1.0)
        return got

    def targets_up(self) -> list[str]:
        return [t["scrapeUrl"] for t in self._api("targets")["activeTargets"] if t["health"] == "up"]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """``(dashboard file, panel title, PromQL)`` of every target of every dashboard in ``infra/grafana``."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out
