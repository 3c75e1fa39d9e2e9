"""The service's Prometheus metrics, kept in a registry each gateway replica creates for itself.

(A ``prometheus_client`` registry does not survive Ray's serialisation, so it is built inside the
replica.) The encoder reports the size of the batch each query rode in with its answer, so the
batch-size histogram lives here too and one scrape of ``/metrics`` shows the whole request path.
With several gateway replicas each answers for itself: label ``replica`` tells them apart.
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

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """Requests and errors by route and status, latency per route, encoder batch sizes, serving version."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, replica: str) -> None:
        disable_created_metrics()  # the *_created series double every counter for nothing a dashboard uses
        self.registry = CollectorRegistry()
        labels = {"replica": replica}
        r = self.registry
        self.requests = Counter(
            "unigeoclip_serve_requests", "HTTP requests answered", ["route", "status"], registry=r
        ).labels
        self.errors = Counter(
            "unigeoclip_serve_errors", "requests answered with an error, by reason", ["route", "reason"], registry=r
        ).labels
        self.latency = Histogram(
            "unigeoclip_serve_request_seconds", "request latency in the gateway", ["route"], buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels  # fmt: skip
        self.batch_size = Histogram(
            "unigeoclip_serve_encoder_batch_size", "queries per encoder batch, as each query saw it", ["modality"],
            buckets=BATCH_BUCKETS, registry=r,
        ).labels  # fmt: skip
        self.replica_restarts = Counter(
            "unigeoclip_serve_upstream_retries", "calls retried after a replica died", ["deployment"], registry=r
        ).labels
        self.info = Gauge(
            "unigeoclip_serve_model_version_info", "1 for the model version this replica last answered with",
            ["model_version", "replica"], registry=r,
        )  # fmt: skip
        self._replica = labels["replica"]
        self._version: str | None = None

    def observe(self, route: str, status: int, seconds: float, reason: str | None = None) -> None:
        self.requests(route, str(status)).inc()
        self.latency(route).observe(seconds)
        if reason is not None:
            self.errors(route, reason).inc()

    def serving(self, model_version: str) -> None:
        if model_version != self._version:
            if self._version is not None:
                self.info.remove(self._version, self._replica)
            self.info.labels(model_version, self._replica).set(1)
            self._version = model_version

    def render(self) -> bytes:
        return generate_latest(self.registry)
