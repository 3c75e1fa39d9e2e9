"""The retriever deployment: searches the store's serving snapshot, and recent ones, by query vector.

A search names the model version its vector came from. The serving snapshot answers when it is
that version; a snapshot the alias just left stays open (``KEEP_STORES``) for queries encoded
before the switch; a version this replica has not seen yet (the encoder noticed the switch
first) is opened on the spot. Methods are plain ``def``: Serve runs them in a thread pool, and
LanceDB releases the GIL while it searches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import InputError
from ..store import EmbeddingDB, EmbeddingStore
from .config import ServeConfig
from .versions import AliasWatcher, serving_pointer

KEEP_STORES = 3
HIT_COLUMNS = ["item_id", "modality", "cell_token", "lat_deg", "lon_deg", "year", "score"]


class Retriever:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.db = EmbeddingDB(cfg.db)
        self._lock = threading.Lock()
        self.stores: OrderedDict[str, EmbeddingStore] = OrderedDict()
        pointer = serving_pointer(self.db)
        self._adopt(EmbeddingStore.open(self.db))
        self.watcher = AliasWatcher(self.db, cfg.refresh_s, self._on_alias, pointer)

    def _adopt(self, store: EmbeddingStore) -> EmbeddingStore:
        with self._lock:
            self.stores[store.model_version] = store
            self.stores.move_to_end(store.model_version)
            while len(self.stores) > KEEP_STORES:
                self.stores.popitem(last=False)
            self.current = store.model_version
        return store

    def _on_alias(self, pointer: dict[str, Any]) -> None:
        self._adopt(EmbeddingStore.open(self.db))

    def _store(self, model_version: str) -> EmbeddingStore:
        store = self.stores.get(model_version)
        if store is not None:
            return store
        store = EmbeddingStore.open(self.db)  # the encoder saw the switch first: catch up now
        if store.model_version == model_version:
            return self._adopt(store)
        named = EmbeddingStore.open(self.db, model_version=model_version)
        if not named.complete:
            raise InputError(f"model version {model_version!r} is not completely embedded; it cannot be searched")
        with self._lock:
            self.stores[model_version] = named
            self.stores.move_to_end(model_version, last=False)  # not serving: first to go
        return named

    def ready(self) -> dict[str, Any]:
        store = self.stores[self.current]
        return {"model_version": store.model_version, "table_version": store.table_version, "rows": len(store)}

    def search(
        self, vector: np.ndarray, model_version: str, *, k: int, targets: list[str] | None, filters: dict[str, Any]
    ) -> dict[str, Any]:
        """``{"hits": [...]}`` best first (score = cosine with ``vector``), or ``{"error": ...}`` for a bad filter."""
        try:
            store = self._store(model_version)
            table = store.search(vector, k=k, modality=targets, **filters)
        except (InputError, FileNotFoundError) as exc:
            return {"error": str(exc)}
        return {"hits": table.select(HIT_COLUMNS).to_pylist(), "model_version": store.model_version}
