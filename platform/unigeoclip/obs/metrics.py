"""A job's figures for Prometheus: live through Ray while it runs, and once at its end for the record.

* **While it runs** (:class:`unigeoclip.train.live.LiveGauges`; Ray's, so it lives with the Ray code):
  gauges recorded in the job's Ray processes, which every
  node's metrics agent exports as ``ray_unigeoclip_<job>_<figure>`` (Prometheus finds the nodes in
  Ray's service-discovery file, or the pods' annotations). They say how far a long run is; they
  disappear with the processes that set them.
* **At its end** (:func:`push_run_metrics`): a batch job is gone before a scrape could be sure to
  see its last figures, so it pushes them once (the Prometheus convention for batch jobs) to a
  Pushgateway, or writes them for node-exporter's textfile collector. Each push replaces the job's
  previous group, so a dashboard shows the last run; ``*_last_run_timestamp_seconds`` lets an alert
  fire when a schedule stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

PUSHGATEWAY_ENV = "UNIGEOCLIP_PUSHGATEWAY"
TEXTFILE_ENV = "UNIGEOCLIP_METRICS_TEXTFILE"

Figures = Mapping[str, float | Mapping[str, float]]
"""``{figure: value}``; a breakdown ``{figure: {label value: value}}`` becomes one gauge labelled ``kind``."""


def textfile_beside(root: str | Path, job: str) -> str | None:
    """``ROOT/metrics/unigeoclip_<job>.prom`` for a local output directory (LanceDB and the sample store ignore
    the folder); None for an object store, where node-exporter could not read it."""
    return None if "://" in str(root) else f"{str(root).rstrip('/')}/metrics/unigeoclip_{job}.prom"


def run_registry(job: str, figures: Figures, labels: Mapping[str, str]) -> CollectorRegistry:
    """Gauges ``unigeoclip_<job>_<figure>{labels}`` plus ``unigeoclip_<job>_last_run_timestamp_seconds``."""
    registry = CollectorRegistry()
    names = list(labels)
    for figure, value in {**figures, "last_run_timestamp_seconds": time.time()}.items():
        described = f"{job} run: {figure.replace('_', ' ')}"
        if isinstance(value, Mapping):
            gauge = Gauge(f"unigeoclip_{job}_{figure}", described, [*names, "kind"], registry=registry)
            for kind, n in value.items():
                gauge.labels(*labels.values(), kind).set(float(n))
            continue
        gauge = Gauge(f"unigeoclip_{job}_{figure}", described, names, registry=registry)
        (gauge.labels(**labels) if names else gauge).set(float(value))
    return registry


def push_run_metrics(
    job: str,
    figures: Figures,
    *,
    labels: Mapping[str, str] | None = None,
    pushgateway: str | None = None,
    textfile: str | Path | None = None,
    default_textfile: str | Path | None = None,
) -> str:
    """Push to ``pushgateway`` (or ``$UNIGEOCLIP_PUSHGATEWAY``); else, or if the push fails, write a textfile.

    The textfile is ``textfile``, else ``$UNIGEOCLIP_METRICS_TEXTFILE``, else ``default_textfile`` (the
    job's own place, beside its output), else ``unigeoclip_<job>.prom`` here. It may name a directory,
    node-exporter's textfile folder: the file is then ``unigeoclip_<job>.prom`` in it, so jobs sharing
    the setting keep their own file. Returns where the figures went. A metrics failure never fails the
    job whose work is done.
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
    path = Path(textfile or os.environ.get(TEXTFILE_ENV) or default_textfile or f"unigeoclip_{job}.prom")
    if path.is_dir():
        path = path / f"unigeoclip_{job}.prom"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)  # writes a temporary file and renames it: never half-written
    except OSError as exc:
        return f"{note}not written to {path} ({exc})"
    return f"{note}written to {path}"
