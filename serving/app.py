"""The Ray Serve application: ``serve run serving.app:app`` or ``serve run serving/serve_config.yaml``.

``app`` reads its settings from the environment (``UNIGEOCLIP_DB``, optional ``UNIGEOCLIP_MODEL``,
``UNIGEOCLIP_API_KEY``); ``builder`` takes them as Serve application args (``serve_config.yaml``
``args:``, or ``serve run serving.app:builder db=data/embeddings``). Building binds deployments
only: models and tables load inside the replicas.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application
from unigeoclip.serve import ServeConfig, build_app


def builder(args: dict[str, Any]) -> Application:
    return build_app(ServeConfig.model_validate(args))


def _from_env() -> ServeConfig:
    model = os.environ.get("UNIGEOCLIP_MODEL")
    return ServeConfig(db=os.environ.get("UNIGEOCLIP_DB", "data/embeddings"), model=model or None)


app = build_app(_from_env())
