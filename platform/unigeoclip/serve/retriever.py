"""The retriever deployment: searches the store's serving snapshot, and recent ones, by query vector.

A search names the model version its vector came from. The serving snapshot answers when it is
that version; a snapshot the alias just left stays open (``KEEP_STORES``) for queries encoded
before the switch; a version this replica has not seen yet (the encoder noticed the switch
first) is opened on the spot. A snapshot of at most ``memory_rows`` rows is also loaded into
memory and searched there exactly (:mod:`.memory`); larger ones are searched in LanceDB (with its
ANN index). ``search`` is a coroutine: a small in-memory snapshot is searched right on the event
loop (about a millisecond, as long as handing the work to a thread costs), anything that waits on
LanceDB or numpy for longer in a worker thread (both release the GIL there).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import InputError, NotFoundError
from ..vectors import EmbeddingDB, EmbeddingStore
from ..vectors.db import is_storage_fault
from .config import ServeConfig
from .items import ItemReader
from .memory import MemorySnapshot
from .versions import AliasWatcher, serving_pointer

log = logging.getLogger(__name__)
KEEP_STORES = 3
STORAGE_FAULT = "the embedding store could not be read; retry shortly (the operator's logs have the details)"
SAMPLE_STORAGE_FAULT = "the sample store could not be read; retry shortly (the operator's logs have the details)"
INLINE_SEARCH_VALUES = 4_000_000  # an in-memory search this small (a millisecond or two) runs on the loop, not a thread
HIT_COLUMNS = ["sample_id", "modality", "cell_token", "lat_deg", "lon_deg", "year", "score"]


class Retriever:
    """Serve deployment: searches the serving version of the embedding store (in memory when small)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.db = EmbeddingDB(cfg.db)
        self._lock = threading.Lock()
        self.stores: OrderedDict[str, EmbeddingStore] = OrderedDict()
        self.memory: dict[str, MemorySnapshot] = {}
        self.items = ItemReader(cfg.store) if cfg.store is not None else None
        pointer = serving_pointer(self.db)
        self._adopt(EmbeddingStore.open(self.db))
        self.watcher = AliasWatcher(self.db, cfg.refresh_s, self._on_alias, pointer)

    def _adopt(self, store: EmbeddingStore) -> EmbeddingStore:
        snapshot = MemorySnapshot(store) if len(store) <= self.cfg.memory_rows else None
        with self._lock:
            if snapshot is not None:
                self.memory[store.model_version] = snapshot
            else:
                self.memory.pop(store.model_version, None)
            self.stores[store.model_version] = store
            self.stores.move_to_end(store.model_version)
            while len(self.stores) > KEEP_STORES:
                gone, _ = self.stores.popitem(last=False)
                self.memory.pop(gone, None)
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
        """This replica's part of ``GET /readyz``: the serving snapshot's versions, its rows, whether in memory."""
        store = self.stores[self.current]
        return {"model_version": store.model_version, "table_version": store.table_version, "rows": len(store),
                "in_memory": store.model_version in self.memory}  # fmt: skip

    async def item(self, sample_id: str, modality: str | None = None, view: int = 0) -> dict[str, Any]:
        """``{"body", "media_type"}``: one sample's stored content of ``modality``, or its summary when None
        (:class:`ItemReader`); or ``{"error", "status"}``."""
        if self.items is None:
            return {"error": "this service has no sample store to read items from: start it with --store (the store "
                    "its embeddings were made from)", "status": 404, "reason": "no_store"}  # fmt: skip
        try:
            body: bytes | dict[str, Any]
            if modality is None:
                body, media_type = await asyncio.to_thread(self.items.summary, sample_id), "application/json"
            else:
                body, media_type = await asyncio.to_thread(self.items.read, sample_id, modality, view=view)
        except InputError as exc:
            return {"error": str(exc), "status": 422, "reason": "invalid"}
        except NotFoundError as exc:
            return {"error": str(exc), "status": 404, "reason": "not_found"}
        except (OSError, RuntimeError) as exc:
            if not is_storage_fault(exc):
                raise
            log.exception("reading sample %r from the sample store failed", sample_id)
            return {"error": SAMPLE_STORAGE_FAULT, "status": 503, "reason": "storage"}
        return {"body": body, "media_type": media_type}

    async def search(
        self, vector: np.ndarray, model_version: str, *, k: int, targets: list[str] | None, filters: dict[str, Any]
    ) -> dict[str, Any]:
        """``{"hits": [...]}`` best first (score = cosine with ``vector``), or ``{"error": ...}`` for a bad filter
        (with ``"status": 503`` when the store itself could not be read)."""
        snapshot = self.memory.get(model_version)
        if snapshot is not None and snapshot.vectors.size <= INLINE_SEARCH_VALUES:
            return self._search(vector, model_version, k=k, targets=targets, filters=filters)
        return await asyncio.to_thread(self._search, vector, model_version, k=k, targets=targets, filters=filters)

    def _search(
        self, vector: np.ndarray, model_version: str, *, k: int, targets: list[str] | None, filters: dict[str, Any]
    ) -> dict[str, Any]:
        """:meth:`search` in the calling thread: the version opened if new here, then memory or LanceDB."""
        try:
            store = self._store(model_version)
            snapshot = self.memory.get(store.model_version)
            if snapshot is not None:
                hits = snapshot.search(vector, k=k, modality=targets, **filters)
            else:
                hits = store.search(vector, k=k, modality=targets, **filters).select(HIT_COLUMNS).to_pylist()
        except InputError as exc:
            return {"error": str(exc)}
        except (OSError, RuntimeError) as exc:
            if not is_storage_fault(exc):
                raise
            # a missing or unreadable table file: the server's fault, and no path goes to the client
            log.exception("search of model version %r failed reading the store", model_version)
            return {"error": STORAGE_FAULT, "status": 503, "reason": "storage"}
        return {"hits": hits, "model_version": store.model_version}
