"""Measuring an ANN index: recall@k against exact search and query latency, on a table and a set of queries.

What the index policy's defaults were chosen with (``benchmarks/bench_ann.py``), and what
a deployment can rerun on its own table (queries sampled from the table itself) before
trusting other search parameters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .index import DISTANCE
from .schema import VECTOR


def synthetic_embeddings(
    n: int, dim: int, *, seed: int = 0, clusters: int = 1000, intrinsic: int = 16, spread: float = 1.0
) -> np.ndarray:
    """``(n, dim)`` unit vectors shaped like contrastive embeddings rather than like white noise.

    Points gather around ``clusters`` random centres (places, scenes), each cluster spread
    along its own ``intrinsic``-dimensional subspace plus a little isotropic noise.
    ``spread`` sets how far a cluster reaches relative to the gap between centres; near
    neighbours come from a point's own and nearby clusters, as in a real gallery. The
    centres depend only on ``dim`` and ``clusters``, so queries drawn with another seed
    come from the same distribution.
    """
    layout = np.random.default_rng(12345 + dim + clusters)
    centres = layout.standard_normal((clusters, dim)).astype(np.float32) / np.sqrt(dim)
    bases = layout.standard_normal((clusters, intrinsic, dim)).astype(np.float32) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    z = rng.integers(clusters, size=n)
    local = rng.standard_normal((n, intrinsic)).astype(np.float32) * (spread / np.sqrt(intrinsic))
    out = np.empty((n, dim), np.float32)
    order = np.argsort(z, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(z, minlength=clusters))])
    for c in range(clusters):  # one small matmul per cluster, not an (n, intrinsic, dim) gather
        rows = order[bounds[c] : bounds[c + 1]]
        out[rows] = centres[c] + local[rows] @ bases[c]
    for start in range(0, n, 100_000):
        block = out[start : start + 100_000]
        block += (0.25 * spread / np.sqrt(dim)) * rng.standard_normal(block.shape).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 100_000) -> np.ndarray:
    """``(Q, k)`` row numbers of the ``k`` most cosine-similar vectors (ground truth, by blocked matmul)."""
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk]
        sims = qn @ (block / np.linalg.norm(block, axis=1, keepdims=True)).T  # (Q, chunk)
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        s = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], axis=1)
        i = np.concatenate([best_i, top + start], axis=1)
        order = np.argsort(-s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i


@dataclass(frozen=True)
class CurvePoint:
    """One setting of the search parameters, measured."""

    nprobes: int
    refine_factor: int | None
    ef: int | None
    recall: float  # mean recall@k against exact search
    p50_ms: float
    p99_ms: float


def measure(
    table: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    k: int = 10,
    id_column: str = "id",
    nprobes: int | None = None,
    refine_factor: int | None = None,
    ef: int | None = None,
    exact: bool = False,
) -> CurvePoint:
    """Recall@k of ``table``'s search (ids in ``id_column`` are rows of ``truth``) and its latency, query by query."""
    hits, lat = [], []
    for q, want in zip(queries, truth, strict=True):
        start = time.perf_counter()
        query = table.search(q, vector_column_name=VECTOR).distance_type(DISTANCE).limit(k)
        if exact:
            query = query.bypass_vector_index()
        else:
            if nprobes is not None:
                query = query.nprobes(nprobes)
            if refine_factor is not None:
                query = query.refine_factor(refine_factor)
            if ef is not None:
                query = query.ef(ef)
        got = query.select([id_column, "_distance"]).to_arrow()[id_column].to_numpy()
        lat.append(time.perf_counter() - start)
        hits.append(len(set(got.tolist()) & set(want[:k].tolist())) / k)
    ms = np.asarray(lat) * 1e3
    return CurvePoint(
        nprobes or 0,
        refine_factor,
        ef,
        float(np.mean(hits)),
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
    )


def curve(
    table: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    settings: Iterable[dict[str, int | None]],
    *,
    k: int = 10,
    id_column: str = "id",
) -> list[CurvePoint]:
    """``measure`` at each setting (``{"nprobes": .., "refine_factor": .., "ef": ..}``)."""
    return [measure(table, queries, truth, k=k, id_column=id_column, **s) for s in settings]  # type: ignore[arg-type]
