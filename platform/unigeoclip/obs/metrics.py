"""A batch job's figures for Prometheus: pushed to a Pushgateway, or written for node-exporter's textfile collector.

A batch job is gone before any scrape could reach it, so it pushes its figures once, at
the end (the Prometheus convention for batch jobs). Each push replaces the job's previous
group, so a dashboard shows the last run; ``*_last_run_timestamp_seconds`` lets an alert
fire when the schedule stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

PUSHGATEWAY_ENV = "UNIGEOCLIP_PUSHGATEWAY"
TEXTFILE_ENV = "UNIGEOCLIP_METRICS_TEXTFILE"


def run_registry(job: str, figures: Mapping[str, float], labels: Mapping[str, str]) -> CollectorRegistry:
    """Gauges ``unigeoclip_<job>_<figure>{labels}`` plus ``unigeoclip_<job>_last_run_timestamp_seconds``."""
    registry = CollectorRegistry()
    names = list(labels)
    for figure, value in {**figures, "last_run_timestamp_seconds": time.time()}.items():
        gauge = Gauge(f"unigeoclip_{job}_{figure}", f"{job} run: {figure.replace('_', ' ')}", names, registry=registry)
        (gauge.labels(**labels) if names else gauge).set(float(value))
    return registry


def push_run_metrics(
    job: str,
    figures: Mapping[str, float],
    *,
    labels: Mapping[str, str] | None = None,
    pushgateway: str | None = None,
    textfile: str | Path | None = None,
) -> str:
    """Push to ``pushgateway`` (or ``$UNIGEOCLIP_PUSHGATEWAY``); else, or if the push fails, write ``textfile``.

    Returns where the figures went. A metrics failure never fails the job whose work is done.
    """
    registry = run_registry(job, figures, labels or {})
    gateway = pushgateway or os.environ.get(PUSHGATEWAY_ENV)
    note = ""
    if gateway:
        try:
            push_to_gateway(gateway, job=f"unigeoclip_{job}", registry=registry, timeout=10)
            return f"pushed to {gateway}"
        except OSError as exc:
            note = f"push to {gateway} failed ({exc}); "
    path = Path(textfile or os.environ.get(TEXTFILE_ENV) or f"unigeoclip_{job}.prom")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # writes a temporary file and renames it: never half-written
    return f"{note}written to {path}"
