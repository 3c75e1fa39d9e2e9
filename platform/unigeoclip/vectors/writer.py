"""Upserts into a model version's table: ``merge_insert`` keyed on (item, modality, model version).

A commit is atomic in Lance, and a key written twice is updated, not duplicated: a job
killed between commits loses only its uncommitted buffer, and its rerun writes exactly
the rows still missing. Rows are buffered into large commits because every commit
joins against the table's keys and leaves a fragment for compaction to merge.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .schema import KEY
from .sql import in_list


def upsert(table: Any, rows: pa.Table) -> tuple[int, int]:
    """One atomic commit; returns ``(inserted, updated)``."""
    if rows.num_rows == 0:
        return 0, 0
    result = table.merge_insert(list(KEY)).when_matched_update_all().when_not_matched_insert_all().execute(rows)
    return int(result.num_inserted_rows), int(result.num_updated_rows)


def delete_items(table: Any, sample_ids: Sequence[str], *, chunk: int = 1000) -> int:
    """Delete every row of the given items (superseded samples); returns the rows deleted."""
    before = int(table.count_rows())
    for start in range(0, len(sample_ids), chunk):
        table.delete(in_list("sample_id", sample_ids[start : start + chunk]))
    return before - int(table.count_rows()) if sample_ids else 0


class BufferedUpserter:
    """Collects rows and upserts them once ``commit_rows`` are waiting or ``commit_seconds`` have passed."""

    def __init__(self, table: Any, schema: pa.Schema, *, commit_rows: int, commit_seconds: float) -> None:
        self.table, self.schema = table, schema
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.inserted = self.updated = self.commits = 0
        self._last = time.monotonic()

    def add(self, rows: pa.Table) -> None:
        """Buffer ``rows``; flush once ``commit_rows`` wait or ``commit_seconds`` have passed since the last commit."""
        if rows.num_rows:
            self.pending.append(rows)
            self.pending_rows += rows.num_rows
        if self.pending_rows >= self.commit_rows or (
            self.pending_rows and time.monotonic() - self._last >= self.commit_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Upsert every buffered row in one commit and add to the counts (nothing when the buffer is empty)."""
        if not self.pending_rows:
            return
        batch = pa.concat_tables(self.pending).cast(self.schema)
        inserted, updated = upsert(self.table, batch)
        self.inserted += inserted
        self.updated += updated
        self.commits += 1
        self.pending, self.pending_rows, self._last = [], 0, time.monotonic()
