"""ANN search in LanceDB: recall@10 and latency against exact search, index build time, IVF_PQ vs IVF_HNSW_SQ.

Vectors are synthetic but shaped like contrastive embeddings (unit vectors clustered
around many centres, each cluster spread in its own low-dimensional subspace; see
``unigeoclip.vectors.tuning.synthetic_embeddings``); queries are fresh draws from the same
distribution, not stored rows. Ground truth is an exact matmul. Every latency is one
query at a time, after a warm-up, on this machine (2 cores, local disk). The sweep gives
the recall/latency curve the index policy's defaults were chosen from; the summary
compares the chosen setting with LanceDB's own exact (flat) search in the same run.
Goal: recall@10 >= 0.95 at least 10x faster than exact search.

    .venv/bin/python benchmarks/bench_ann.py [--rows 1000000] [--dim 512] [--queries 200] [--types IVF_PQ,IVF_HNSW_SQ]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from unigeoclip.vectors.index import DEFAULT_POLICY
from unigeoclip.vectors.schema import VECTOR
from unigeoclip.vectors.tuning import CurvePoint, exact_neighbours, measure, synthetic_embeddings

SWEEP = {
    "IVF_PQ": [{"nprobes": p, "refine_factor": r} for p in (10, 20, 40, 80, 120) for r in (5, 10)],
    "IVF_HNSW_SQ": [{"nprobes": p, "ef": e} for p in (10, 20, 40, 80, 120) for e in (50, 100)],
}


def table_of(db: lancedb.DBConnection, vectors: np.ndarray) -> object:
    dim = vectors.shape[1]
    schema = pa.schema([("id", pa.int64()), (VECTOR, pa.list_(pa.float32(), dim))])

    def batches():  # stream: never a second copy of the whole matrix
        for start in range(0, len(vectors), 100_000):
            block = vectors[start : start + 100_000]
            yield pa.record_batch(
                [pa.array(np.arange(start, start + len(block))),
                 pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim)], schema=schema,
            )  # fmt: skip

    return db.create_table("bench", data=pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite")


def show(kind: str, p: CurvePoint) -> str:
    knob = f"refine {p.refine_factor:>3}" if p.refine_factor is not None else f"ef {p.ef:>4}"
    return (
        f"  {kind:<12} nprobes {p.nprobes:>3}  {knob}   recall@10 {p.recall:.3f}   "
        f"p50 {p.p50_ms:7.2f} ms   p99 {p.p99_ms:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=30, help="exact LanceDB scans timed (they are slow)")
    parser.add_argument("--types", default="IVF_PQ,IVF_HNSW_SQ")
    parser.add_argument("--clusters", type=int, default=1000, help="centres of the synthetic distribution")
    parser.add_argument("--spread", type=float, default=1.0, help="cluster reach relative to the gap between centres")
    parser.add_argument("--work", default=None, help="directory for the table [a temporary one, removed after]")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_ann_"))

    start = time.perf_counter()
    shape = {"clusters": args.clusters, "spread": args.spread}
    vectors = synthetic_embeddings(args.rows, args.dim, seed=0, **shape)
    queries = synthetic_embeddings(args.queries, args.dim, seed=1, **shape)
    truth = exact_neighbours(vectors, queries, 10)
    print(f"{args.rows} vectors x {args.dim} dims ({args.clusters} clusters, spread {args.spread}), "
          f"{args.queries} queries; data and ground truth in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    db = lancedb.connect(work)
    table = table_of(db, vectors)
    del vectors
    exact = measure(table, queries[: args.exact_queries], truth[: args.exact_queries], exact=True)
    print(f"exact (flat) search: recall@10 {exact.recall:.3f}   p50 {exact.p50_ms:.1f} ms   p99 {exact.p99_ms:.1f} ms")

    chosen: dict[str, CurvePoint] = {}
    default: CurvePoint | None = None
    for kind in args.types.split(","):
        policy = replace(DEFAULT_POLICY, index_type=kind)  # type: ignore[arg-type]
        start = time.perf_counter()
        table.create_index(VECTOR, config=policy.index_config(args.rows, args.dim), replace=True)
        build = time.perf_counter() - start
        extra = f", {policy.sub_vectors(args.dim)} sub-vectors" if kind == "IVF_PQ" else ""
        print(f"\n{kind}: built in {build:.0f} s ({policy.partitions(args.rows)} partitions{extra})")
        measure(table, queries[:20], truth[:20], **SWEEP[kind][0])  # warm the index cache
        points = [measure(table, queries, truth, **s) for s in SWEEP[kind]]
        for p in points:
            print(show(kind, p))
        if kind == DEFAULT_POLICY.index_type:
            d = DEFAULT_POLICY
            default = measure(table, queries, truth, nprobes=d.nprobes, refine_factor=d.refine_factor)
        good = [p for p in points if p.recall >= 0.95]
        if good:
            chosen[kind] = min(good, key=lambda p: p.p50_ms)
            print(f"  fastest at recall@10 >= 0.95: {show(kind, chosen[kind]).strip()}   build {build:.0f} s")

    print("\nsummary (same run, same queries, one query at a time):")
    print(f"  exact             p50 {exact.p50_ms:8.1f} ms  p99 {exact.p99_ms:8.1f} ms")
    for kind, p in chosen.items():
        print(f"  {kind:<12}      p50 {p.p50_ms:8.2f} ms  p99 {p.p99_ms:8.2f} ms  recall@10 {p.recall:.3f}  "
              f"{exact.p50_ms / p.p50_ms:6.0f}x faster than exact (p50)   goal: >= 0.95 and >= 10x")  # fmt: skip
    if default is not None:
        print(f"  policy default:   {show(DEFAULT_POLICY.index_type, default).strip()}   "
              f"{exact.p50_ms / default.p50_ms:.0f}x faster than exact (p50)")  # fmt: skip
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
