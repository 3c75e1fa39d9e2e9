"""Cross-modal retrieval metrics over one gallery: every directed modality pair, and ensembles of query modalities.

For a directed pair (m -> n), each sample with ``m`` present queries the gallery of all
samples with ``n`` present; it is a hit at ``k`` when its own sample is among the ``k``
most similar. Chance at 1 is ``1 / gallery size``. When the samples' locations are
given, the top hit also geolocates the query: the great-circle distance between the
query's location and the top hit's gives Acc@km and the median error (the paper's
protocol). An ensemble query (several modalities of one sample) scores the gallery by
the mean of its modalities' cosine similarities (the paper's "multimodal ensembling").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..geo.distance import haversine_km
from ..modality import Modality

DEFAULT_KS = (1, 5, 10)
# Acc@100 m, 1 km, 25 km as in the paper; 200 / 750 / 2500 km (the im2gps scales) for km-scale data.
DEFAULT_THRESHOLDS_KM = (0.1, 1.0, 25.0, 200.0, 750.0, 2500.0)


@dataclass(frozen=True)
class GeoAccuracy:
    """Geolocation by the top hit: share of queries within each threshold, and the median error."""

    acc: dict[float, float]  # threshold km -> share of queries located within it
    median_km: float
    mean_km: float


@dataclass(frozen=True)
class PairRecall:
    """Recall@k of one directed modality pair (query -> target) over a split."""

    query: Modality
    target: Modality
    recall: dict[int, float]  # k -> recall@k
    queries: int
    gallery: int
    geo: GeoAccuracy | None = None
    query_set: tuple[Modality, ...] = field(default=())  # ensembles: every query modality (else just ``query``)

    @property
    def chance_at_1(self) -> float:
        """Recall@1 of a random ranking: ``1 / gallery``."""
        return 1.0 / max(self.gallery, 1)

    def chance(self, k: int) -> float:
        """Recall@k of a random ranking: ``k / gallery``, at most 1."""
        return min(1.0, k / max(self.gallery, 1))

    @property
    def queries_from(self) -> tuple[Modality, ...]:
        """The query modalities: the ensemble's ``query_set``, else just ``query``."""
        return self.query_set or (self.query,)

    @property
    def key(self) -> str:
        """The pair's name, e.g. ``aerial->coords``, or ``aerial+text->coords`` for an ensemble."""
        return f"{'+'.join(m.value for m in self.queries_from)}->{self.target.value}"


def ranks_of_own_sample(queries: np.ndarray, gallery: np.ndarray, own: np.ndarray) -> np.ndarray:
    """``(Q, D)`` queries, ``(G, D)`` gallery, ``own[i]`` = gallery row of query i's sample -> 0-based ranks ``(Q,)``.

    Ties count against the query (a gallery item scoring equal to its own sample ranks first).
    """
    return ranks_from_scores(queries @ gallery.T, own)


def ranks_from_scores(sims: np.ndarray, own: np.ndarray) -> np.ndarray:
    """``(Q, G)`` similarities and each query's own gallery row -> 0-based ranks (ties count against the query)."""
    own_score = sims[np.arange(len(own)), own][:, None]
    return np.asarray((sims >= own_score).sum(axis=1) - 1)


def geo_accuracy(
    pred_lat: np.ndarray,
    pred_lon: np.ndarray,
    true_lat: np.ndarray,
    true_lon: np.ndarray,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
) -> GeoAccuracy:
    """Acc@threshold and median/mean great-circle error of predicted locations."""
    err = haversine_km(true_lat, true_lon, pred_lat, pred_lon)
    if err.size == 0:
        return GeoAccuracy({t: float("nan") for t in thresholds_km}, float("nan"), float("nan"))
    return GeoAccuracy({t: float((err <= t).mean()) for t in thresholds_km}, float(np.median(err)), float(err.mean()))


def score_retrieval(
    sims: np.ndarray,
    own: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    query_latlon: np.ndarray | None = None,
    gallery_latlon: np.ndarray | None = None,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
) -> tuple[dict[int, float], GeoAccuracy | None]:
    """Recall@k from ``(Q, G)`` similarities, and the top hit's geolocation accuracy when locations are given.

    ``query_latlon`` ``(Q, 2)`` and ``gallery_latlon`` ``(G, 2)`` are ``lat_deg, lon_deg``.
    """
    ranks = ranks_from_scores(sims, own)
    recall = {k: float((ranks < k).mean()) for k in ks}
    if query_latlon is None or gallery_latlon is None:
        return recall, None
    top = np.argmax(sims, axis=1)  # (Q,)
    pred = gallery_latlon[top]
    return recall, geo_accuracy(pred[:, 0], pred[:, 1], query_latlon[:, 0], query_latlon[:, 1], thresholds_km)


def recall_matrix(
    embeddings: Mapping[Modality, np.ndarray],
    present: Mapping[Modality, np.ndarray],
    ks: Sequence[int] = (1,),
    *,
    latlon: np.ndarray | None = None,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
) -> list[PairRecall]:
    """Recall@k of every directed pair among the modalities in ``embeddings`` (``(N, D)`` unit rows each).

    ``latlon`` ``(N, 2)``: the samples' locations, to add the top hit's geolocation accuracy.
    """
    mods = [m for m in Modality if m in embeddings]
    out = []
    for m in mods:
        for n in mods:
            if m != n:
                result = ensemble_retrieval(
                    embeddings, present, (m,), n, ks=ks, latlon=latlon, thresholds_km=thresholds_km
                )
                if result is not None:
                    out.append(result)
    return out


def ensemble_retrieval(
    embeddings: Mapping[Modality, np.ndarray],
    present: Mapping[Modality, np.ndarray],
    query: Sequence[Modality],
    target: Modality,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    latlon: np.ndarray | None = None,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
) -> PairRecall | None:
    """Samples with every ``query`` modality present score the ``target`` gallery by their mean cosine similarity.

    One query modality is a plain directed pair. ``None`` when no sample has the query
    modalities and the target together.
    """
    query = tuple(query)
    if not query or target in query:
        raise InputError(f"an ensemble needs query modalities other than its target, got {query} -> {target}")
    both = np.logical_and.reduce([present[m] for m in query]) & present[target]
    if not both.any():
        return None
    gallery_rows = np.flatnonzero(present[target])
    position = np.full(len(present[target]), -1)
    position[gallery_rows] = np.arange(len(gallery_rows))
    query_rows = np.flatnonzero(both)
    gallery = embeddings[target][gallery_rows]  # (G, D)
    sims = np.mean([embeddings[m][query_rows] @ gallery.T for m in query], axis=0)  # (Q, G)
    recall, geo = score_retrieval(
        sims,
        position[query_rows],
        ks=ks,
        query_latlon=None if latlon is None else latlon[query_rows],
        gallery_latlon=None if latlon is None else latlon[gallery_rows],
        thresholds_km=thresholds_km,
    )
    return PairRecall(
        query[0], target, recall, len(query_rows), len(gallery_rows), geo, query if len(query) > 1 else ()
    )


def format_matrix(results: Sequence[PairRecall], k: int = 1) -> str:
    """A query x target table of recall@k, with the mean over pairs."""
    results = [r for r in results if not r.query_set]
    mods = [m for m in Modality if any(r.query is m or r.target is m for r in results)]
    cell = {(r.query, r.target): r.recall[k] for r in results}
    head = "query \\ target".ljust(14) + "".join(f"{n.value:>9}" for n in mods)
    lines = [head]
    for m in mods:
        row = "".join(f"{cell[(m, n)]:9.3f}" if (m, n) in cell else f"{'-':>9}" for n in mods)
        lines.append(f"{m.value:<14}{row}")
    mean = float(np.mean([r.recall[k] for r in results])) if results else float("nan")
    lines.append(f"mean recall@{k} over {len(results)} directed pairs: {mean:.3f}")
    return "\n".join(lines)
