"""The Lance sample store on disk (or an object-store URI): samples, rejects, and what built them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.fs as pafs

from .. import atomic
from ..config import DataConfig
from ..errors import ConfigError, NotFoundError
from .schema import REJECT_SCHEMA, SAMPLE_SCHEMA

SAMPLES, REJECTS, META = "samples.lance", "rejects.lance", "store.json"
STORE_FORMAT = 1


class SampleStore:
    """``ROOT/samples.lance`` (one row per (cell, year, content)), ``ROOT/rejects.lance``, ``ROOT/store.json``.

    ``ROOT`` is a local directory or any URI Lance understands (``s3://...``, ``gs://...``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root).rstrip("/")
        self.samples_uri = f"{self.root}/{SAMPLES}"
        self.rejects_uri = f"{self.root}/{REJECTS}"

    def __repr__(self) -> str:
        return f"SampleStore({self.root!r})"

    # -- metadata -------------------------------------------------------------------------------

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if "://" not in self.root:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            return pafs.LocalFileSystem(), str(Path(self.root).resolve())
        fs, path = pafs.FileSystem.from_uri(self.root)
        return fs, path

    def meta(self) -> dict[str, Any] | None:
        """The store's ``store.json`` (format, cell level, DSM size), or None before its first use."""
        fs, path = self._fs()
        info = fs.get_file_info(f"{path}/{META}")
        if info.type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(f"{path}/{META}") as f:
            loaded: dict[str, Any] = json.loads(f.read().decode())
            return loaded

    def ensure_compatible(self, data: DataConfig) -> None:
        """Create ``store.json`` on first use; refuse to mix samples keyed or sized differently."""
        wanted = {"format": STORE_FORMAT, "cell_level": data.cell_level, "dsm_px": data.dsm_px}
        have = self.meta()
        if have is None:
            fs, path = self._fs()
            if "://" in self.root:  # one object-store PUT: whole or absent
                with fs.open_output_stream(f"{path}/{META}") as f:
                    f.write(json.dumps(wanted, indent=1).encode())
            else:
                atomic.write_text(f"{path}/{META}", json.dumps(wanted, indent=1))
            return
        clash = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
        if clash:
            details = ", ".join(f"{k}: store has {a}, config has {b}" for k, (a, b) in clash.items())
            raise ConfigError(
                f"{self.root} was built with other settings ({details}); use the same settings or a new store"
            )

    # -- samples --------------------------------------------------------------------------------

    def has_samples(self) -> bool:
        """Whether the samples table exists yet."""
        try:
            lance.dataset(self.samples_uri)
        except (ValueError, OSError, FileNotFoundError):
            return False
        return True

    def samples(self) -> lance.LanceDataset:
        """The samples table; ``NotFoundError`` when nothing was ingested here yet."""
        if not self.has_samples():
            raise NotFoundError(f"no sample store at {self.samples_uri}: run `unigeoclip ingest --store {self.root}`")
        return lance.dataset(self.samples_uri)

    def ensure_samples_table(self) -> None:
        """Create the empty samples table with the store's schema if it does not exist yet."""
        if not self.has_samples():
            lance.write_dataset(SAMPLE_SCHEMA.empty_table(), self.samples_uri, mode="create")

    def append_samples(self, tables: Iterable[pa.Table], *, rows_per_file: int) -> int:
        """Append sample rows as they come (a stream of tables): files of ``rows_per_file`` rows, one commit.

        Written while the stream is still being produced (nothing is buffered beyond one file); nothing is
        committed when the stream holds no rows. Returns the rows appended.
        """
        batches = (b for table in tables for b in table.cast(SAMPLE_SCHEMA).to_batches() if b.num_rows)
        first = next(batches, None)
        if first is None:
            return 0
        written = 0

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal written
            for batch in itertools.chain([first], batches):
                written += batch.num_rows
                yield batch

        reader = pa.RecordBatchReader.from_batches(SAMPLE_SCHEMA, counted())
        mode = "append" if self.has_samples() else "create"
        lance.write_dataset(reader, self.samples_uri, schema=SAMPLE_SCHEMA, mode=mode, max_rows_per_file=rows_per_file)
        return written

    def count_run(self, run_id: str) -> int:
        """Rows written by one ingest run."""
        return int(self.samples().count_rows(filter=f"ingest_run = '{run_id}'")) if self.has_samples() else 0

    def keys(self) -> pa.Table:
        """``sample_id, cell_token, year, content_hash, current`` of every stored row (small: no payloads)."""
        if not self.has_samples():
            return pa.table({"sample_id": [], "cell_token": [], "year": [], "content_hash": [], "current": []})
        return self.samples().to_table(columns=["sample_id", "cell_token", "year", "content_hash", "current"])

    def count(self, split: str | None = None, *, current_only: bool = True) -> int:
        """Rows of ``split`` (every split when None), current ones only unless ``current_only`` is false."""
        if not self.has_samples():
            return 0
        clauses = ([f"split = '{split}'"] if split else []) + (["current = true"] if current_only else [])
        return int(self.samples().count_rows(filter=" AND ".join(clauses) or None))

    def repair_current(self) -> list[str]:
        """Leave one current row per (cell, year): the newest run's. Returns the rows marked superseded.

        Appending a new version and marking the old one superseded are two commits; a job killed between
        them leaves two current rows for a (cell, year). The next ingest calls this first and finishes it.
        """
        if not self.has_samples():
            return []
        rows = (
            self.samples()
            .to_table(columns=["sample_id", "cell_token", "year", "ingest_run", "ingested_at"], filter="current = true")
            .to_pylist()
        )
        by_place: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in rows:
            by_place.setdefault((r["cell_token"], int(r["year"])), []).append(r)
        stale = [
            r["sample_id"]
            for group in by_place.values()
            if len(group) > 1
            for r in sorted(group, key=lambda r: (r["ingested_at"], r["ingest_run"]))[:-1]  # all but the newest
        ]
        self.mark_superseded(stale)
        return stale

    def mark_superseded(self, sample_ids: Sequence[str]) -> None:
        """Flag rows replaced by newer content for their (cell, year); they stay in the table (and its history)."""
        if not sample_ids:
            return
        quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sample_ids)
        self.samples().update({"current": "false"}, where=f"sample_id IN ({quoted})")

    # -- rejects --------------------------------------------------------------------------------

    def append_rejects(self, rows: Sequence[dict[str, Any]]) -> int:
        """Append the rejects the table does not hold yet (same source, id, reason and place): a rerun of the
        same input adds none. Returns how many were appended."""
        key = ("source", "source_id", "reason", "modality", "year", "cell_token")
        held = {tuple(r[k] for k in key) for r in self.rejects().select(list(key)).to_pylist()}
        fresh, seen = [], set(held)
        for r in rows:
            k = tuple(r.get(f) for f in key)
            if k not in seen:
                seen.add(k)
                fresh.append(r)
        if not fresh:
            return 0
        table = pa.Table.from_pylist(fresh, schema=REJECT_SCHEMA)
        mode = "append" if self.has_rejects() else "create"
        lance.write_dataset(table, self.rejects_uri, mode=mode)
        return len(fresh)

    def has_rejects(self) -> bool:
        """Whether the rejects table exists yet."""
        try:
            lance.dataset(self.rejects_uri)
        except (ValueError, OSError, FileNotFoundError):
            return False
        return True

    def rejects(self) -> pa.Table:
        """Every reject row (an empty table with the rejects schema before the first)."""
        if not self.has_rejects():
            return REJECT_SCHEMA.empty_table()
        return lance.dataset(self.rejects_uri).to_table()


__all__ = ["SAMPLE_SCHEMA", "SampleStore"]
