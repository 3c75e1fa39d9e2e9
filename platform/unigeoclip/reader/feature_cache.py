"""Frozen-tower features, computed once per content and kept beside the sample store.

A locked tower (``model.<m>.locked``, LiT) never changes, so its pooled features of an input
never change either: training reads them from here instead of running the tower each step.
One Lance table per (modality, tower key) at ``STORE/features/<modality>-<key>.lance`` with
columns ``content_hash`` (the sample store's ``<m>_hash``) and ``features`` (float32 list).

The key is a hash of the tower's weights and of every setting that shapes its features
(pooling, token length, tokenizer, image size), so a changed tower reads a new table: a
cache is never stale, only unused. Rows are only ever appended (content hashes are unique
in a table), so a crash mid-write loses at most the last batch, recomputed by the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

FOLDER = "features"


def table_uri(store_root: str, modality: str, key: str) -> str:
    """The Lance table of one tower's features: ``STORE/features/<modality>-<key>.lance``."""
    return f"{store_root.rstrip('/')}/{FOLDER}/{modality}-{key}.lance"


@dataclass(frozen=True)
class CacheRef:
    """Where one locked tower's features live: what the reader's decoders open."""

    modality: str
    uri: str
    dim: int


class FeatureCache:
    """The features of one locked tower: look up by content hash, append the missing ones."""

    def __init__(self, ref: CacheRef) -> None:
        self.ref = ref

    def _dataset(self) -> object | None:
        import lance

        try:
            return lance.dataset(self.ref.uri)
        except (FileNotFoundError, ValueError):  # not written yet
            return None

    def hashes(self) -> set[str]:
        """The content hashes already cached (none before the first write)."""
        ds = self._dataset()
        if ds is None:
            return set()
        return set(ds.to_table(columns=["content_hash"]).column("content_hash").to_pylist())  # type: ignore[attr-defined]

    def append(self, hashes: list[str], features: np.ndarray) -> None:
        """Add ``(N, F)`` features for ``hashes`` (not yet in the cache)."""
        import lance

        if features.shape != (len(hashes), self.ref.dim):
            raise ValueError(f"features {features.shape} for {len(hashes)} hashes of a {self.ref.dim}-d tower")
        flat = pa.array(np.ascontiguousarray(features, np.float32).reshape(-1))
        table = pa.table({"content_hash": pa.array(hashes, pa.string()),
                          "features": pa.FixedSizeListArray.from_arrays(flat, self.ref.dim)})  # fmt: skip
        lance.write_dataset(table, self.ref.uri, mode="append" if self._dataset() is not None else "create")

    def load(self) -> dict[str, np.ndarray]:
        """Every cached feature by content hash (a decoder holds them in memory: N x F x 4 bytes)."""
        ds = self._dataset()
        if ds is None:
            return {}
        table = ds.to_table()  # type: ignore[attr-defined]
        matrix = table.column("features").combine_chunks().flatten().to_numpy().reshape(-1, self.ref.dim)
        return dict(zip(table.column("content_hash").to_pylist(), matrix, strict=True))

    def nbytes(self) -> int:
        """Bytes on disk of the cache's table (0 before the first write, and for an object-store URI)."""
        ds = self._dataset()
        if ds is None:
            return 0
        return int(sum(f.stat().st_size for f in _files(self.ref.uri)))


def _files(uri: str) -> Iterable:
    from pathlib import Path

    return (p for p in Path(uri).rglob("*") if p.is_file()) if "://" not in uri else ()
