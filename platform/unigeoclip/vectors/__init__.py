"""The embedding store: LanceDB tables per model version, upserts, the ANN index, and the serving alias.

``EmbeddingStore`` (search, get) is the read side the retrieval service and the evaluation use;
``EmbeddingDB`` is the write side the embedding jobs use.

The names below are imported on first use: the embedding job's model actors read ``vectors.schema``
and ``vectors.versions`` only, and need not pay for importing LanceDB (its cost: notes/issue25.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .db import EmbeddingDB
    from .index import DEFAULT_POLICY, IndexPolicy
    from .search import EmbeddingStore

__all__ = ["DEFAULT_POLICY", "EmbeddingDB", "EmbeddingStore", "IndexPolicy"]
__getattr__ = lazy_names(
    __name__, {"EmbeddingDB": ".db", "DEFAULT_POLICY": ".index", "IndexPolicy": ".index", "EmbeddingStore": ".search"}
)
