"""The ANN index policy: when a table is worth indexing, how the index is built and refreshed, how it is searched.

Small tables stay exact: a flat scan of a few tens of thousands of vectors is fast, and
an index trained on too few rows partitions badly. Past ``min_rows`` the table gets an
IVF_PQ index (the measured choice, see ``benchmarks/bench_ann.py`` and docs/embedding-store.md's
benchmark table) searched with ``nprobes`` partitions and a re-ranking of
``refine_factor * k`` candidates on the full vectors. Rows added later go into the
index incrementally (``optimize``); once too large a share of the table was never seen
by the index's training, it is retrained from scratch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from lancedb.index import BTree, HnswSq, IvfPq

from .schema import VECTOR

IndexType = Literal["IVF_PQ", "IVF_HNSW_SQ"]
DISTANCE: Literal["cosine"] = "cosine"  # vectors are unit norm; cosine also keeps un-normalised queries right


@dataclass(frozen=True)
class IndexPolicy:
    """When to index and how to search. Defaults come from the measured recall/latency curve (bench_ann.py)."""

    min_rows: int = 50_000  # below this, searches are exact scans
    index_type: IndexType = "IVF_PQ"
    rows_per_partition: int = 4096  # IVF partitions = rows / this (at least 1)
    sub_vector_dim: int = 16  # PQ: dims per sub-vector (num_sub_vectors = dim / this)
    nprobes: int = 80  # IVF partitions probed per query (a third of them at 1M rows: docs/embedding-store.md)
    refine_factor: int = 10  # re-rank refine_factor * k PQ candidates on the full vectors
    ef: int = 100  # IVF_HNSW_SQ: candidate list size of the graph search
    max_iterations: int = 20  # k-means iterations (IVF and PQ training)
    retrain_fraction: float = 0.25  # more unindexed rows than this share of the table: retrain from scratch
    keep_versions: timedelta = timedelta(days=7)  # older table versions are pruned (the published one is tagged)

    def partitions(self, rows: int) -> int:
        """The IVF partitions for ``rows`` rows: one per ``rows_per_partition``, at least 1."""
        return max(1, rows // self.rows_per_partition)

    def sub_vectors(self, dim: int) -> int:
        """The largest divisor of ``dim`` not above ``dim / sub_vector_dim`` (PQ needs an even split)."""
        target = max(1, dim // self.sub_vector_dim)
        return next(n for n in range(target, 0, -1) if dim % n == 0)

    def index_config(self, rows: int, dim: int) -> Any:
        """The LanceDB index config (IVF_PQ or IVF_HNSW_SQ, cosine) for ``rows`` vectors of ``dim`` values."""
        if self.index_type == "IVF_PQ":
            return IvfPq(
                distance_type=DISTANCE,
                num_partitions=self.partitions(rows),
                num_sub_vectors=self.sub_vectors(dim),
                max_iterations=self.max_iterations,
            )
        return HnswSq(distance_type=DISTANCE, num_partitions=self.partitions(rows), max_iterations=self.max_iterations)


DEFAULT_POLICY = IndexPolicy()


def vector_index(table: Any) -> Any | None:
    """The table's index on ``vector`` (its config), or None."""
    return next((ix for ix in table.list_indices() if list(ix.columns) == [VECTOR]), None)


def index_summary(table: Any) -> str:
    """One line on how ``table`` is searched: its ANN index with indexed and unindexed rows, or exact."""
    ix = vector_index(table)
    if ix is None:
        return f"exact search ({table.count_rows()} rows, no ANN index)"
    stats = table.index_stats(ix.name)
    return (
        f"{stats.index_type} ({stats.num_indexed_rows} rows indexed, {stats.num_unindexed_rows} not yet; "
        f"{stats.distance_type})"
    )


def maintain_index(table: Any, policy: IndexPolicy = DEFAULT_POLICY, *, wrote: bool = True) -> str:
    """Compact the table and build, extend or retrain its index as the policy says; returns what was done.

    Called after every run that wrote rows. Scalar indexes on the upsert key and the filter
    columns come with the vector index (small tables scan fast without them).
    """
    if not wrote:
        return "unchanged"
    compact(table, keep_versions=policy.keep_versions)
    rows = int(table.count_rows())
    ix = vector_index(table)
    if ix is None:
        if rows < policy.min_rows:
            return f"exact search ({rows} rows < {policy.min_rows})"
        return _build(table, policy, rows, "built")
    stats = table.index_stats(ix.name)
    unindexed = int(stats.num_unindexed_rows)
    if rows and unindexed / rows > policy.retrain_fraction:
        return _build(table, policy, rows, "retrained")
    return f"{stats.index_type} updated ({rows} rows)"


def compact(table: Any, *, keep_versions: timedelta) -> None:
    """Merge the small fragments of many commits, add new rows to existing indexes, prune old versions.

    Not LanceDB's ``optimize``: its pruning refuses to run once a tagged (published)
    version is older than the window, and the published snapshot must outlive it.
    """
    dataset = table.to_lance()
    dataset.optimize.compact_files()
    dataset.optimize.optimize_indices()
    dataset.cleanup_old_versions(older_than=keep_versions, error_if_tagged_old_versions=False)
    table.checkout_latest()


def _build(table: Any, policy: IndexPolicy, rows: int, verb: str) -> str:
    dim = table.schema.field(VECTOR).type.list_size
    table.create_index(VECTOR, config=policy.index_config(rows, dim), replace=True)
    for column in ("sample_id", "cell_id"):
        table.create_index(column, config=BTree(), replace=True)
    return f"{policy.index_type} {verb} ({rows} rows, {policy.partitions(rows)} partitions" + (
        f", {policy.sub_vectors(dim)} sub-vectors)" if policy.index_type == "IVF_PQ" else ")"
    )


def partitions_to_probe(table: Any, policy: IndexPolicy) -> int:
    """The IVF partitions a search probes (``policy.nprobes``, at least 1), or 0 when the table has no index."""
    ix = vector_index(table)
    if ix is None:
        return 0
    return max(1, math.ceil(policy.nprobes))
