"""The serving deployment files stay in step with the code: configs validate, the dashboard queries real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from ray.serve.schema import ServeDeploySchema
from unigeoclip.serve import ServeConfig, build_app
from unigeoclip.serve.metrics import RAY_PREFIX, ServiceMetrics

ROOT = Path(__file__).resolve().parents[1].parent


def serve_configs() -> list[tuple[str, dict[str, Any]]]:
    rayservice = yaml.safe_load((ROOT / "infra/kuberay/rayservice.yaml").read_text())
    return [
        ("serving/serve_config.yaml", yaml.safe_load((ROOT / "serving/serve_config.yaml").read_text())),
        ("infra/kuberay/rayservice.yaml", yaml.safe_load(rayservice["spec"]["serveConfigV2"])),
    ]


def test_serve_configs_validate_and_build() -> None:
    for where, raw in serve_configs():
        schema = ServeDeploySchema.model_validate(raw)
        (app,) = schema.applications
        assert app.import_path == "serving.app:builder", where
        cfg = ServeConfig.model_validate(app.args)
        assert cfg.encoder.num_replicas is None and cfg.encoder.max_replicas > cfg.encoder.min_replicas, where
        assert build_app(cfg) is not None  # binding needs no cluster


def test_local_config_listens_on_loopback_only() -> None:
    local = dict(serve_configs())["serving/serve_config.yaml"]
    assert local["http_options"]["host"] == "127.0.0.1"


def test_the_dashboard_queries_metrics_the_service_exports() -> None:
    """Names only (tests/cluster/test_pipeline.py runs every query against a real Prometheus): the gateway's
    series as Ray exports them (``ray_`` + the name ``/metrics`` shows), and Ray Serve's own."""
    exported = ServiceMetrics("r").render().decode()
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", exported, flags=re.M))
    families = {n for n, _ in names}
    series = families | {f"{n}_{s}" for n, kind in names if kind == "histogram" for s in ("bucket", "sum", "count")}
    series |= {f"{n}_total" for n, kind in names if kind == "counter"}
    dashboard = json.loads((ROOT / "infra/grafana/unigeoclip-serve.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(\w*unigeoclip_serve_\w+)", target["expr"])
    }
    ray_series = {f"{RAY_PREFIX}{s}" for s in series}
    assert used and used <= ray_series, used - ray_series
    scrape = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    assert {"ray", "serve-haproxy", "unigeoclip-jobs"} == {j["job_name"] for j in scrape["scrape_configs"]}
