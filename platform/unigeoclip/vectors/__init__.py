"""The embedding store: LanceDB tables per model version, upserts, the ANN index, and the serving alias.

``EmbeddingStore`` (search, get) is the read side the retrieval service and the evaluation use;
``EmbeddingDB`` is the write side the embedding jobs use.
"""

from .db import EmbeddingDB
from .index import DEFAULT_POLICY, IndexPolicy
from .search import EmbeddingStore

__all__ = ["DEFAULT_POLICY", "EmbeddingDB", "EmbeddingStore", "IndexPolicy"]
