"""The query encoder deployment: batches queries (``@serve.batch``) and embeds them with the serving model.

One call carries every modality of one query, so an ensemble query is encoded by a single model
version even while the store switches versions. Inside a batch, rows of the same modality go
through the tower together.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from ray import serve

from ..cluster.runtime import actor_device
from ..errors import InputError
from ..modality import Modality
from ..vectors import EmbeddingDB
from .config import ServeConfig
from .decode import Prepared, model_input
from .versions import AliasWatcher, check_override, model_dir_for, serving_pointer

log = logging.getLogger(__name__)
INTERNAL = {"error": "internal error while encoding this query", "status": 500, "reason": "internal"}
KEEP_MODELS = 2  # the serving model and the one before it (queries in flight during a switch)


class QueryEncoder:
    """Holds the serving version's model (and the previous one); answers ``{vectors, model_version, batch}``."""

    def __init__(self, cfg: ServeConfig) -> None:
        import torch

        torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.db = EmbeddingDB(cfg.db)
        check_override(self.db, cfg.model)
        self._lock = threading.Lock()
        self.models: OrderedDict[str, Any] = OrderedDict()
        pointer = serving_pointer(self.db)
        self._load(pointer["model_version"])
        self.current: str = pointer["model_version"]
        batcher: Any = self._encode_batch  # @serve.batch adds the setters
        batcher.set_max_batch_size(cfg.max_batch_size)
        batcher.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.watcher = AliasWatcher(self.db, cfg.refresh_s, self._on_alias, pointer)

    def _load(self, version: str) -> Any:
        from ..models.unigeoclip import UniGeoCLIP

        model = UniGeoCLIP.from_pretrained(model_dir_for(self.db, version, self.cfg.model), device=actor_device())
        with self._lock:
            self.models[version] = model
            while len(self.models) > KEEP_MODELS:
                self.models.popitem(last=False)
        return model

    def _on_alias(self, pointer: dict[str, Any]) -> None:
        version = pointer["model_version"]
        if version not in self.models:
            self._load(version)  # in the watcher thread: requests keep using the current model meanwhile
        self.current = version

    def ready(self) -> dict[str, Any]:
        """This replica's part of ``GET /readyz``: the serving model version and the modalities it has towers for."""
        model = self.models[self.current]
        return {"model_version": self.current, "modalities": [m.value for m in model.modalities]}

    async def encode(self, query: dict[str, Prepared]) -> dict[str, Any]:
        """One query's prepared inputs -> a unit vector per modality, or ``{"error": ...}`` (a tower it lacks)."""
        result: dict[str, Any] = await self._encode_batch(query)
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)  # both reset from the config
    async def _encode_batch(self, queries: list[dict[str, Prepared]]) -> list[dict[str, Any]]:
        import torch

        version = self.current
        model = self.models[version]
        spec = model.preprocess_spec()
        have = set(model.modalities)
        out: list[dict[str, Any]] = [{"model_version": version, "batch": len(queries), "vectors": {}} for _ in queries]
        rows: dict[Modality, list[tuple[int, Any]]] = {}
        for i, query in enumerate(queries):
            try:
                shaped = {Modality(m): model_input(Modality(m), x, spec) for m, x in query.items()}
                lacking = [m.value for m in shaped if m not in have]
                if lacking:
                    names = ", ".join(m.value for m in model.modalities)
                    raise InputError(f"model version {version!r} has no {lacking[0]!r} tower (it has: {names})")
            except InputError as exc:
                out[i] = {"error": str(exc)}
                continue
            except Exception:  # one query's unexpected failure fails that query only, never its batch
                log.exception("shaping query %d of a batch of %d failed", i, len(queries))
                out[i] = dict(INTERNAL)
                continue
            for m, x in shaped.items():
                rows.setdefault(m, []).append((i, x))
        failed: set[int] = set()
        with torch.inference_mode():
            for m, pairs in rows.items():
                try:
                    self._encode_rows(model, m, pairs, out)
                except Exception:  # find the rows that fail on their own: the others still get answers
                    log.exception("encoding a %s batch of %d failed; retrying row by row", m.value, len(pairs))
                    for pair in pairs:
                        try:
                            self._encode_rows(model, m, [pair], out)
                        except Exception:
                            log.exception("encoding %s query %d failed", m.value, pair[0])
                            failed.add(pair[0])
        for i in failed:
            out[i] = dict(INTERNAL)
        return out

    @staticmethod
    def _encode_rows(model: Any, m: Modality, pairs: list[tuple[int, Any]], out: list[dict[str, Any]]) -> None:
        import torch

        items = [x for _, x in pairs]
        inputs: Any = items if m is Modality.TEXT else torch.from_numpy(np.stack(items))
        z = model.encode(m, inputs).float().cpu().numpy()  # (B, D)
        for j, (i, _) in enumerate(pairs):
            out[i]["vectors"][m.value] = z[j]
