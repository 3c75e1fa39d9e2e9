"""The service's Prometheus metrics: each gateway replica's own registry, and the same series through Ray.

Two views of one set of series, written by the same calls:

* **Ray's metrics export** (the one to scrape): every node's metrics agent serves what the replicas on
  that node recorded, as ``ray_unigeoclip_serve_*`` tagged with ``deployment``, ``replica`` and
  ``application``. Prometheus scrapes every node (Ray's service-discovery file
  ``/tmp/ray/prom_metrics_service_discovery.json``, or the pods' ``prometheus.io`` annotations on
  Kubernetes), so ``sum(...)`` adds up every replica wherever it runs.
* **``GET /metrics``**: the registry of the gateway replica that took the request (label ``replica``
  on the version series), as ``unigeoclip_serve_*``. With one replica it is the whole service; with
  several, a load balancer sends each scrape to one of them, so use it to look at a replica, not to
  count the service.

(A ``prometheus_client`` registry does not survive Ray's serialisation, so both are built inside the
replica.) The encoder reports the size of the batch each query rode in with its answer, so the
batch-size histogram lives here too and one view shows the whole request path.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from ray.serve import metrics as ray_metrics

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RAY_PREFIX = "ray_"  # what Ray's export puts in front of every application metric's name

REQUESTS = ("unigeoclip_serve_requests", "HTTP requests answered", ("route", "status"))
ERRORS = ("unigeoclip_serve_errors", "requests answered with an error, by reason", ("route", "reason"))
LATENCY = ("unigeoclip_serve_request_seconds", "request latency in the gateway", ("route",))
BATCH = ("unigeoclip_serve_encoder_batch_size", "queries per encoder batch, as each query saw it", ("modality",))
# Every call to the encoder or the retriever, by outcome: "ok", "retried" (it met a dead replica and is sent
# again), "unavailable" (still no live replica after every retry: a 503), "overloaded" (its queue was full),
# "timeout" (no answer in call_timeout_s). `upstream`, not `deployment`: Ray's
# export tags every series with the deployment that recorded it.
UPSTREAM = ("unigeoclip_serve_upstream_calls", "calls from the gateway to a deployment, by outcome",
            ("upstream", "outcome"))  # fmt: skip
VERSION = ("unigeoclip_serve_model_version_info", "1 for the model version this replica last answered with",
           ("model_version",))  # fmt: skip


class ServiceMetrics:
    """Requests and errors by route and status, latency per route, encoder batch sizes, upstream calls, version."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, replica: str) -> None:
        disable_created_metrics()  # the *_created series double every counter for nothing a dashboard uses
        self.registry = r = CollectorRegistry()
        self._requests = Counter(*REQUESTS, registry=r)
        self._errors = Counter(*ERRORS, registry=r)
        self._latency = Histogram(*LATENCY, buckets=LATENCY_BUCKETS, registry=r)
        self._batch = Histogram(*BATCH, buckets=BATCH_BUCKETS, registry=r)
        self._upstream = Counter(*UPSTREAM, registry=r)
        self._version = Gauge(VERSION[0], VERSION[1], [*VERSION[2], "replica"], registry=r)
        # Ray's export adds deployment, replica and application by itself. (Ray annotates tag_keys as Tuple[str],
        # one key; any tuple of keys is what it takes.)
        self._ray_requests = ray_metrics.Counter(*REQUESTS)  # type: ignore[arg-type]
        self._ray_errors = ray_metrics.Counter(*ERRORS)  # type: ignore[arg-type]
        self._ray_latency = ray_metrics.Histogram(LATENCY[0], LATENCY[1], list(LATENCY_BUCKETS), LATENCY[2])
        self._ray_batch = ray_metrics.Histogram(BATCH[0], BATCH[1], list(BATCH_BUCKETS), BATCH[2])
        self._ray_upstream = ray_metrics.Counter(*UPSTREAM)  # type: ignore[arg-type]
        self._ray_version = ray_metrics.Gauge(*VERSION)
        self._replica = replica
        self._serving: str | None = None

    def observe(self, route: str, status: int, seconds: float, reason: str | None = None) -> None:
        """One answered request."""
        self._requests.labels(route, str(status)).inc()
        self._ray_requests.inc(tags={"route": route, "status": str(status)})
        self._latency.labels(route).observe(seconds)
        self._ray_latency.observe(seconds, tags={"route": route})
        if reason is not None:
            self._errors.labels(route, reason).inc()
            self._ray_errors.inc(tags={"route": route, "reason": reason})

    def batch(self, modality: str, size: int) -> None:
        """A query of ``modality`` was encoded in a batch of ``size``."""
        self._batch.labels(modality).observe(size)
        self._ray_batch.observe(size, tags={"modality": modality})

    def upstream(self, deployment: str, outcome: str) -> None:
        """One attempt of a call to ``deployment``: ``ok``, ``retried`` or ``unavailable``."""
        self._upstream.labels(deployment, outcome).inc()
        self._ray_upstream.inc(tags={"upstream": deployment, "outcome": outcome})

    def serving(self, model_version: str) -> None:
        """The version the last answer came from: 1 for it, 0 (Ray) or gone (``/metrics``) for the one before."""
        if model_version == self._serving:
            return
        if self._serving is not None:
            self._version.remove(self._serving, self._replica)
            self._ray_version.set(0, tags={"model_version": self._serving})
        self._version.labels(model_version, self._replica).set(1)
        self._ray_version.set(1, tags={"model_version": model_version})
        self._serving = model_version

    def render(self) -> bytes:
        """This replica's registry in the Prometheus text format: the ``GET /metrics`` body."""
        return generate_latest(self.registry)
