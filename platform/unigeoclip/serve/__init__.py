"""The retrieval service: Ray Serve deployments over the embedding store (see ``build_app``).

Small one-purpose modules: ``config`` (typed settings and limits), ``schemas`` (request and
response bodies), ``requests`` (body limits, JSON/multipart parsing, API key, error bodies),
``decode`` (inputs -> arrays), ``ensemble`` (multimodal ensembling, geolocation), ``metrics``
(Prometheus), ``versions`` (following the serving alias), and one module per deployment.
Importing this package imports neither Ray nor torch; ``build_app`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Limits, Scaling, ServeConfig

if TYPE_CHECKING:
    from ray.serve import Application

__all__ = ["Limits", "Scaling", "ServeConfig", "build_app", "start_service"]


def build_app(cfg: ServeConfig | dict[str, Any]) -> Application:
    """The Serve application for ``cfg`` (imports Ray Serve on first use)."""
    from .app import build_app as build

    return build(cfg)


def start_service(
    cfg: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "INFO",
    proxy_location: str | None = None,
) -> str:
    """Deploy the service on this Ray cluster at ``host:port``; returns its URL (imports Ray Serve on first use).

    ``proxy_location``: ``EveryNode`` (Serve's default), ``HeadOnly`` or ``Disabled`` (see ``app.start_service``).
    """
    from .app import start_service as start

    return start(cfg, host=host, port=port, log_level=log_level, proxy_location=proxy_location)
