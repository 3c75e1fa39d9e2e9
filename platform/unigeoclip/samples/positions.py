"""Row positions in a pinned version of the samples table: a split's rows, and the rows of a work item.

Positions in one Lance version never change content, so work items carry positions (small) and each
worker takes its rows itself: Lance's random access, no payload through the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from .store import SampleStore


def split_positions(store: SampleStore, split: str) -> tuple[int, np.ndarray]:
    """``(version, positions)`` of the current rows of ``split`` in the samples table, read once."""
    dataset = store.samples()
    flags = dataset.to_table(columns=["split", "current"])
    mask = np.asarray(flags.column("split").to_numpy(zero_copy_only=False) == split) & np.asarray(
        flags.column("current").to_numpy(zero_copy_only=False), dtype=bool
    )
    return int(dataset.version), np.flatnonzero(mask)


def chunk_positions(batch: Mapping[str, Any]) -> list[int]:
    """The row positions of a batch of work items (each item's ``rows`` list), in order."""
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in batch["rows"]]).tolist()


def take_chunk(dataset: Any, batch: Mapping[str, Any], columns: list[str]) -> pa.Table:
    """The rows at a work item's ``rows`` positions (one list per item in ``batch``) of a pinned Lance dataset."""
    return dataset.take(chunk_positions(batch), columns=columns)
