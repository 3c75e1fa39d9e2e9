"""``build_app(cfg)``: the three deployments wired into one Serve application.

    gateway (FastAPI ingress) --encode--> QueryEncoder (@serve.batch) --vector--> Retriever (LanceDB)

or, with ``cfg.colocate``, the gateway alone, holding an encoder and a retriever in its own process.

Scaling comes from ``cfg.gateway`` / ``cfg.encoder`` / ``cfg.retriever``; a Serve config file's
``deployments:`` section can override any of it by deployment name.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.schema import DeploymentStatus, LoggingConfig

from ..obs.progress import Rate, polled
from .config import ServeConfig
from .encoder import QueryEncoder
from .gateway import Gateway
from .retriever import Retriever

GATEWAY, ENCODER, RETRIEVER = "Gateway", "QueryEncoder", "Retriever"
APP_NAME = "unigeoclip"


def build_app(cfg: ServeConfig | Mapping[str, Any]) -> Application:
    """The retrieval service for ``cfg`` (a :class:`ServeConfig`, or its fields as a dict: ``serve run`` args)."""
    cfg = cfg if isinstance(cfg, ServeConfig) else ServeConfig.model_validate(dict(cfg))
    gateway = serve.deployment(name=GATEWAY, **cfg.gateway.deployment_options())(Gateway)
    if cfg.colocate:  # the gateway builds the encoder and the retriever in its own process
        return gateway.bind(cfg, None, None)
    encoder = serve.deployment(name=ENCODER, **cfg.encoder.deployment_options())(QueryEncoder)
    retriever = serve.deployment(name=RETRIEVER, **cfg.retriever.deployment_options())(Retriever)
    return gateway.bind(cfg, encoder.bind(cfg), retriever.bind(cfg))


def start_service(
    cfg: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "INFO",
    proxy_location: str | None = None,
) -> str:
    """Start Serve's HTTP ingress on ``host:port`` and deploy the service there; returns its base URL.

    ``proxy_location``: Serve's ``EveryNode`` (its default: every node answers on ``port``), ``HeadOnly``
    (one entry point; also what several nodes on one machine need, since they would share the port) or
    ``Disabled``.

    The ingress is HAProxy where the cluster runs Serve's high-throughput mode (a local Ray from
    ``runtime.ensure_ray``, the project's image), else Serve's Python proxy.

    Returns once every deployment is running (``serve.run`` waits); ``/readyz`` says when the model
    and the store are loaded. ``log_level="WARNING"`` also drops the per-request access log (demos,
    tests: Prometheus keeps the counts). Stop it with ``serve.shutdown()``. While Serve and the deployments
    start, a progress line (how many deployments are healthy, what is still starting) is logged three
    seconds in, then every minute.
    """
    logging = LoggingConfig(log_level=log_level, enable_access_log=log_level.upper() in ("DEBUG", "INFO"))
    app = build_app(cfg)
    started = threading.Event()  # Serve's controller is up: its status can be asked

    def progress() -> tuple[int, str]:
        return deployments_healthy() if started.is_set() else (0, "starting: Serve's controller and ingress")

    rate = Rate("serve", 1 if cfg.colocate else 3, "deployments", first_s=3.0, from_start=True)
    with polled(rate, progress, every_s=1.0):
        serve.start(http_options={"host": host, "port": port}, logging_config=logging, proxy_location=proxy_location)
        started.set()
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config=logging)
    return f"http://{host}:{port}"


def deployments_healthy() -> tuple[int, str]:
    """``(deployments of the service that are healthy, "starting: the others")`` from Serve's status."""
    status = serve.status().applications.get(APP_NAME)
    if status is None:  # serve.run has not reached the controller yet
        return 0, ""
    waiting = sorted(name for name, d in status.deployments.items() if d.status != DeploymentStatus.HEALTHY)
    return len(status.deployments) - len(waiting), f"starting: {', '.join(waiting)}" if waiting else ""
