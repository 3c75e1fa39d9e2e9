"""``build_app(cfg)``: the three deployments wired into one Serve application.

    gateway (FastAPI ingress) --encode--> QueryEncoder (@serve.batch) --vector--> Retriever (LanceDB)

Scaling comes from ``cfg.gateway`` / ``cfg.encoder`` / ``cfg.retriever``; a Serve config file's
``deployments:`` section can override any of it by deployment name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application

from .config import ServeConfig
from .encoder import QueryEncoder
from .gateway import Gateway
from .retriever import Retriever

GATEWAY, ENCODER, RETRIEVER = "Gateway", "QueryEncoder", "Retriever"


def build_app(cfg: ServeConfig | Mapping[str, Any]) -> Application:
    """The retrieval service for ``cfg`` (a :class:`ServeConfig`, or its fields as a dict: ``serve run`` args)."""
    cfg = cfg if isinstance(cfg, ServeConfig) else ServeConfig.model_validate(dict(cfg))
    encoder = serve.deployment(name=ENCODER, **cfg.encoder.deployment_options())(QueryEncoder)
    retriever = serve.deployment(name=RETRIEVER, **cfg.retriever.deployment_options())(Retriever)
    gateway = serve.deployment(name=GATEWAY, **cfg.gateway.deployment_options())(Gateway)
    return gateway.bind(cfg, encoder.bind(cfg), retriever.bind(cfg))
