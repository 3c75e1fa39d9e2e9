"""Byte-bounded LRU caches inside a reader actor: decoded images, and whole decoded rows.

A training run reads every sample once per epoch. Inflating the same PNG tiles 30 times
was the reader's largest cost (about 40% of its CPU on the `small` demo), so pixels are
cached before augmentation and every epoch still gets fresh flips and crops; keys are
content digests, so a changed image can never be served from the cache. When a row's
decode draws nothing at random (no augmentation, or an augmentation config that is the
identity), the finished row itself is cached by its position in the pinned table version:
later epochs skip the take, the crop and the tokenizer as well.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """Least-recently-used map holding at most ``max_bytes`` of values (``size_of`` measures one)."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None; counts a hit or a miss."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` unless it alone exceeds the budget; evict the least recently used beyond it."""
        size = self.size_of(value)
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.bytes -= old


class DecodedImageCache:
    """Decoded images keyed by the digest of their encoded bytes (``max_bytes`` <= 0: no caching)."""

    def __init__(self, max_bytes: int) -> None:
        self.lru: BoundedLRU[bytes, np.ndarray] = BoundedLRU(max_bytes, lambda a: a.nbytes)

    def get(self, data: bytes, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
        """``decode(data)``, from the cache when these exact bytes were decoded before (read-only array)."""
        if self.lru.max_bytes <= 0:
            return decode(data)
        key = hashlib.blake2b(data, digest_size=16).digest()
        cached = self.lru.get(key)
        if cached is not None:
            return cached
        array = decode(data)
        array.setflags(write=False)  # shared by later calls: augmentations must copy, never write in place
        self.lru.put(key, array)
        return array


Row = dict[str, np.ndarray]  # one decoded row: every batch key, first dimension 1


def row_nbytes(row: Mapping[str, np.ndarray]) -> int:
    """Bytes held by a decoded row's arrays (the row cache's measure)."""
    return sum(int(v.nbytes) for v in row.values())


def split_rows(batch: Mapping[str, np.ndarray]) -> list[Row]:
    """A decoded batch as one read-only ``Row`` per sample (copies: a row must not pin its whole batch)."""
    n = len(next(iter(batch.values())))
    rows = []
    for i in range(n):
        row = {k: v[i : i + 1].copy() for k, v in batch.items()}
        for v in row.values():
            v.setflags(write=False)
        rows.append(row)
    return rows


def join_rows(rows: list[Row]) -> dict[str, np.ndarray]:
    """Rows (all with the same keys) back into one batch, in the given order."""
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
