"""The ingest pipeline: source -> parallel extraction (Ray Data) -> validation -> Lance sample store.

Idempotent: a rerun appends only (cell, year, content hash) rows the store lacks;
new content for a stored (cell, year) is appended and the older row marked not
current (it stays in the table). Those are two commits: a run killed between them
leaves two current rows for a (cell, year), and the next run first repairs that
(``SampleStore.repair_current``: the newest stays current). Bad input never stops the
job and is never dropped silently: it lands in the ``rejects`` table with its reason
and source id, once (a rerun of the same input adds no duplicate rejects).

One small actor, the :class:`IngestLedger`, sees every key of the run: it answers
"stored already / duplicate / new" for each extracted sample and gathers rejects, so
parallel workers agree without a second pass over the data.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from ..cluster.runtime import actor_pool, can_grow
from ..config import DataConfig, IngestConfig
from ..lease import held
from ..obs.metrics import push_run_metrics, textfile_beside
from ..obs.progress import Rate, polled
from ..samples.schema import SAMPLE_SCHEMA
from ..samples.store import SampleStore
from ..samples.validate import check_sample, reject_row
from ..sources.base import RawSample, Reject, Source
from .aside import PlanAside

NEW, STORED, DUPLICATE, NEW_VERSION = "new", "stored", "duplicate", "new_version"
# Rows per file (Lance fragment) of the samples table: a few hundred rows (~100 MB) are written as soon as
# extraction has made them, so writing overlaps it.
WRITE_ROWS = 256


@ray.remote(num_cpus=0)
class IngestLedger:
    """Run-wide bookkeeping: stored keys, keys claimed in this run, rejects, superseded rows."""

    def __init__(self, stored: dict[str, Any], store: str) -> None:
        from ray.util.metrics import Counter as RayCounter

        # Live, while the run goes: ray_unigeoclip_ingest_samples_total{store, status}, ..._rejects_total{reason}.
        self.live_samples = RayCounter("unigeoclip_ingest_samples", "extracted samples by what became of them",
                                       tag_keys=("store", "status"))  # fmt: skip
        self.live_rejects = RayCounter("unigeoclip_ingest_rejects", "rejected inputs by reason",
                                       tag_keys=("store", "reason"))  # fmt: skip
        self.store = store
        self.stored_hashes: set[tuple[str, int, str]] = set()
        self.current_by_place: dict[tuple[str, int], list[str]] = {}
        for sid, cell, year, content, current in zip(
            stored["sample_id"],
            stored["cell_token"],
            stored["year"],
            stored["content_hash"],
            stored["current"],
            strict=True,
        ):
            self.stored_hashes.add((cell, int(year), content))
            if current:
                self.current_by_place.setdefault((cell, int(year)), []).append(sid)
        self.claimed: dict[tuple[str, int], str] = {}
        self.rejects: list[dict[str, Any]] = []
        self.superseded: list[str] = []
        self.counts: Counter[str] = Counter()
        self.items_done = 0  # plan items extracted so far (the run's progress lines)

    def claim(self, keys: list[tuple[str, int, str]], items: int = 0) -> list[str]:
        """Each ``(cell, year, content_hash)``'s status: stored, duplicate, new or new_version (first claim wins).

        ``items``: how many plan items the keys were extracted from (counted for :meth:`progress`)."""
        self.items_done += items
        out = []
        for cell, year, content in keys:
            place = (cell, year)
            if (cell, year, content) in self.stored_hashes:
                status = STORED
            elif place in self.claimed:
                status = DUPLICATE
            else:
                self.claimed[place] = content
                status = NEW_VERSION if place in self.current_by_place else NEW
                if status == NEW_VERSION:
                    self.superseded.extend(self.current_by_place[place])
            self.counts[status] += 1
            self.live_samples.inc(tags={"store": self.store, "status": status})
            out.append(status)
        return out

    def add_rejects(self, rows: list[dict[str, Any]]) -> None:
        """Keeps reject rows for the end of the run and counts them in the live rejects metric."""
        self.rejects.extend(rows)
        for reason, n in Counter(r["reason"] for r in rows).items():
            self.live_rejects.inc(n, tags={"store": self.store, "reason": reason})

    def report(self) -> dict[str, Any]:
        """The run's rejects, superseded sample ids and counts by status, read once extraction is done."""
        return {"rejects": self.rejects, "superseded": self.superseded, "counts": dict(self.counts)}

    def progress(self) -> tuple[int, int]:
        """Plan items extracted so far, and rejects so far (while the run goes)."""
        return self.items_done, len(self.rejects)


class ExtractSamples:
    """Ray Data transform: plan items (JSON) -> validated, new sample rows; rejects go to the ledger."""

    def __init__(self, source: Source, data: DataConfig, run_id: str, ledger: Any, shared: Any = None) -> None:
        self.source, self.data, self.run_id, self.ledger = source, data, run_id, ledger
        if shared is not None:  # the source's shared data, read once on the driver (see share_source_data)
            self.source.use_shared_data(ray.get(shared))  # type: ignore[attr-defined]

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Plan items (JSON) -> the validated rows the store lacks; rejects and duplicates go to the ledger."""
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        for produced in extract_items(self.source, [json.loads(raw) for raw in batch["item"]], isolate=True):
            for p in produced:
                if isinstance(p, Reject):
                    rejects.append(p)
                    continue
                checked = check_sample(p, self.data, self.run_id)
                rejects.extend(checked.rejects)
                if checked.row is not None:
                    rows.append(checked.row)
        keys = [(r["cell_token"], r["year"], r["content_hash"]) for r in rows]
        statuses = ray.get(self.ledger.claim.remote(keys, items=len(batch["item"])))
        kept = []
        for row, status in zip(rows, statuses, strict=True):
            if status in (NEW, NEW_VERSION):
                kept.append(row)
            elif status == DUPLICATE:
                rejects.append(
                    Reject(
                        row["source"], row["source_id"], "duplicate",
                        f"a second sample for cell {row['cell_token']}, year {row['year']} in this run; "
                        "the first was kept",
                        "", row["year"], row["cell_token"],
                    )
                )  # fmt: skip
        if rejects:
            self.ledger.add_rejects.remote([reject_row(r, self.run_id) for r in rejects])
        return pa.Table.from_pylist(kept, schema=SAMPLE_SCHEMA)


def extract_items(source: Source, items: Sequence[dict[str, Any]], *, isolate: bool) -> list[list[RawSample | Reject]]:
    """Each item's samples and rejects: the source's ``extract_batch`` when it has one, else ``extract`` per item.

    ``isolate``: an item whose extraction raises becomes an ``extract_failed`` reject (a broken input must not
    stop the job), and a batch whose extraction raises is taken again item by item, so only the broken one is
    rejected. Without it, the exception propagates (debugging, benchmarks).
    """
    batched = getattr(source, "extract_batch", None)
    if batched is not None and len(items) > 1:
        try:
            return list(batched(items))
        except Exception:  # retried item by item below, where each failure is recorded
            if not isolate:
                raise
    out: list[list[RawSample | Reject]] = []
    for item in items:
        try:
            out.append(list(source.extract(item)))
        except Exception as exc:  # a broken input must not stop the job: record it and go on
            if not isolate:
                raise
            out.append([Reject(source.name, _item_id(item), "extract_failed", f"{type(exc).__name__}: {exc}")])
    return out


def share_source_data(source: Source) -> ray.ObjectRef | None:
    """The source's ``shared_data()`` (what every worker would read: rasters, tables), once in the object store.

    Where this process holds it already (``shared_data_held()``: a run before this one adopted it), it is put
    from here; else a Ray task reads it, on another core while the driver plans. Each node's workers get the
    object from Ray (numpy arrays zero-copy) and adopt it with ``use_shared_data``; the files ship with the
    package, so any node can read them. None for a source without shared data. :func:`check_shared` waits
    for the read, raises its error as the source raised it, and has this process adopt the data.
    """
    if getattr(source, "shared_data", None) is None:
        return None
    if getattr(source, "shared_data_held", lambda: False)():
        return ray.put(source.shared_data())  # type: ignore[attr-defined]
    return _read_shared_data.remote(source)


@ray.remote
def _read_shared_data(source: Source) -> Any:
    return source.shared_data()  # type: ignore[attr-defined]


def check_shared(source: Source, shared: ray.ObjectRef | None) -> None:
    """Wait for :func:`share_source_data`'s read; its error (a missing package file...) is raised as it was raised.

    This process then adopts the data (zero-copy views of the object where the read ran on this node), so
    the next run from here puts it without reading the files again."""
    if shared is None:
        return
    try:
        source.use_shared_data(ray.get(shared))  # type: ignore[attr-defined]
    except ray.exceptions.RayTaskError as exc:
        if exc.cause is None:  # the error could not be rebuilt here: Ray's own message says what it was
            raise
        raise exc.cause from None


def _item_id(item: dict[str, Any]) -> str:
    return str(item.get("id") or item.get("cell") or item.get("source_id") or json.dumps(item, sort_keys=True)[:120])


@dataclass
class IngestSummary:
    """What one ingest run did: items planned, samples written, already stored and superseded, rejects by reason."""

    run_id: str
    store: str
    planned_items: int
    written: int
    already_stored: int
    superseded: int
    rejects: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    total_current: int = 0
    metrics: str = ""

    @property
    def figures(self) -> dict[str, float | dict[str, float]]:
        """What :func:`push_run_metrics` exports: ``unigeoclip_ingest_<figure>{store}``."""
        return {
            "planned_items": self.planned_items,
            "rows_written": self.written,
            "rows_already_stored": self.already_stored,
            "rows_superseded": self.superseded,
            "rejects": sum(self.rejects.values()),
            "rejects_by_reason": {reason: float(n) for reason, n in self.rejects.items()},
            "seconds": self.seconds,
            "current_samples": self.total_current,
        }

    def __str__(self) -> str:
        lines = [
            f"ingest {self.run_id} into {self.store}: {self.planned_items} items in {self.seconds:.1f} s "
            f"({self.planned_items / max(self.seconds, 1e-9):.1f} items/s)",
            f"  written: {self.written} new samples ({self.superseded} older rows superseded)",
            f"  skipped: {self.already_stored} already stored",
            f"  rejects: {sum(self.rejects.values())}"
            + ("".join(f"\n    {reason}: {n}" for reason, n in sorted(self.rejects.items())) if self.rejects else ""),
            f"  store now holds {self.total_current} current samples",
        ]
        if self.metrics:
            lines.append(f"  metrics: {self.metrics}")
        if self.rejects.get("extract_failed"):
            lines.append("  WARNING: some items failed to extract; see the rejects table for the errors")
        return "\n".join(lines)


def ingest(
    source: Source | PlanAside,
    store: SampleStore,
    data: DataConfig,
    *,
    plan: IngestConfig | None = None,
    lease_wait_s: float = 0.0,
) -> IngestSummary:
    """Run the pipeline on the current Ray cluster (see :func:`unigeoclip.cluster.runtime.ensure_ray`).

    ``source`` may be a :class:`~unigeoclip.ingest.aside.PlanAside` planning it already (started before
    Ray, as the ``unigeoclip`` command does); its plan is then used. The extraction actors form an
    autoscaling pool (``plan``: min and max actors, one CPU each), so on an autoscaling cluster the
    pool grows as the nodes its demand brings join. One run writes to a store at a time: it holds the
    store's writer lease (:mod:`unigeoclip.lease`) throughout, waiting ``lease_wait_s`` for another
    run's, else raising ``LeaseHeld`` naming it.
    """
    with held(store.root, "ingest", wait_s=lease_wait_s):
        if isinstance(source, PlanAside):
            return _ingest(source.source, store, data, plan, source.items)
        return _ingest(source, store, data, plan, source.plan)


def _ingest(
    source: Source,
    store: SampleStore,
    data: DataConfig,
    plan: IngestConfig | None,
    planned: Callable[[], list[dict[str, Any]]],
) -> IngestSummary:
    start = time.perf_counter()
    store.ensure_compatible(data)
    repaired = store.repair_current()  # a run killed between its two commits left two current rows somewhere
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    keys = store.keys()
    stored = {name: keys.column(name).to_pylist() for name in keys.column_names}
    # The ledger's process starts and the source's shared data is read (a task) while this process plans.
    ledger = IngestLedger.remote(stored, store.root)  # type: ignore[attr-defined]
    try:
        shared = share_source_data(source)
        items = planned()
        check_shared(source, shared if items else None)
        written = 0
        if items:
            _extract_and_write(items, source, store, data, plan or IngestConfig(), run_id, ledger, shared)
            written = store.count_run(run_id)
        report = ray.get(ledger.report.remote())
    finally:
        ray.kill(ledger)  # also when planning or extraction failed
    store.mark_superseded(report["superseded"])
    store.append_rejects(report["rejects"])
    counts = report["counts"]
    summary = IngestSummary(
        run_id=run_id,
        store=store.root,
        planned_items=len(items),
        written=written,
        already_stored=counts.get(STORED, 0),
        superseded=len(report["superseded"]) + len(repaired),
        rejects=Counter(r["reason"] for r in report["rejects"]),
        seconds=time.perf_counter() - start,
        total_current=store.count(),
    )
    summary.metrics = push_run_metrics("ingest", summary.figures, labels={"store": store.root},
                                       default_textfile=textfile_beside(store.root, "ingest"))  # fmt: skip
    return summary


def _extract_and_write(
    items: list[dict[str, Any]],
    source: Source,
    store: SampleStore,
    data: DataConfig,
    plan: IngestConfig,
    run_id: str,
    ledger: Any,
    shared: ray.ObjectRef | None,
) -> None:
    """Plan items -> Ray Data blocks -> the extraction actors -> the store's samples table (one commit)."""
    batches = math.ceil(len(items) / plan.items_per_batch)
    # One block per batch: the last blocks then leave no actor idle for long (a tail of one batch).
    extract_kwargs = {"source": source, "data": data, "run_id": run_id, "ledger": ledger, "shared": shared}
    ds = ray.data.from_items([{"item": json.dumps(it)} for it in items], override_num_blocks=batches).map_batches(
        ExtractSamples,
        fn_constructor_kwargs=extract_kwargs,
        batch_size=plan.items_per_batch,
        batch_format="numpy",
        compute=actor_pool(plan.min_actors, plan.max_actors, batches),
        num_cpus=1,
    )
    store.ensure_samples_table()  # the table exists after a run, even one whose every item was rejected
    with polled(Rate("ingest", len(items), "items"), lambda: _progress(ledger)):
        if can_grow():  # a cluster: Ray Data's write tasks (lance-ray) write where the rows are, one commit
            import lance_ray

            # Writing is light: with a whole CPU per write task, writes would wait for the extraction
            # actors (which hold every CPU) and back-pressure would stall them.
            lance_ray.write_lance(ds, store.samples_uri, schema=SAMPLE_SCHEMA, mode="append",
                                  min_rows_per_file=WRITE_ROWS, ray_remote_args={"num_cpus": 0.1})  # fmt: skip
        else:
            # This machine's own Ray: the rows stream to this process, which writes them while extraction
            # goes on (files of WRITE_ROWS rows, one commit). Write tasks were slower here: they could not
            # start before the extraction actors, which hold every CPU, were done, and each then started a
            # worker process of its own, a serial tail of seconds (notes/issue25.md).
            store.append_samples(ds.iter_batches(batch_size=None, batch_format="pyarrow"),
                                 rows_per_file=WRITE_ROWS)  # fmt: skip


def _progress(ledger: Any) -> tuple[int, str]:
    """The run's progress line fields from its ledger: items extracted, and rejects so far (when there are any)."""
    items, rejects = ray.get(ledger.progress.remote())
    return items, f"{rejects:,} rejected" if rejects else ""


def extract_locally(
    source: Source, data: DataConfig, items: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """The same work in this process, without Ray (for benchmarks and debugging: an exception is raised)."""
    rows, rejects = [], []
    for produced in extract_items(source, items, isolate=False):
        for p in produced:
            if isinstance(p, RawSample):
                checked = check_sample(p, data, "local")
                rejects.extend(checked.rejects)
                if checked.row is not None:
                    rows.append(checked.row)
            else:
                rejects.append(p)
    return rows, rejects
