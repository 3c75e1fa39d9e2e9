"""Multimodal ensembling and geolocation from search hits: the retrieval logic, free of Ray and HTTP.

Ensembling averages cosine similarities over the query modalities (the paper's multimodal
ensembling). With unit vectors that average is one dot product: mean_m <q_m, v> = <q̄, v> with
q̄ the mean query vector. The store ranks by cosine with q̄ (the same order) and reports
cos(q̄, v) = <q̄, v> / |q̄|, so one search and one rescaling by |q̄| give the exact average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..geo.distance import haversine_km

GEOLOCATE_RADIUS_M = 100.0  # the paper's Acc@100m
GEOLOCATE_TEMPERATURE = 0.05  # softmax temperature over candidate scores (cosine units)


def mean_query(vectors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """``(q̄, |q̄|)``: the mean of the query modalities' unit vectors and its norm (the score scale)."""
    if not vectors:
        raise InputError("the query has no modality")
    q = np.mean(np.stack([np.asarray(v, np.float32) for v in vectors.values()]), axis=0)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-6:
        raise InputError("the query modalities' embeddings cancel out (their mean is zero): query them separately")
    return q, norm


def rescale(hits: list[dict[str, Any]], norm: float) -> list[dict[str, Any]]:
    """Store scores (cosine with q̄) -> averages of the per-modality cosine similarities."""
    for h in hits:
        h["score"] = float(h["score"]) * norm
    return hits


def geolocate(
    hits: Sequence[Mapping[str, Any]],
    *,
    radius_m: float = GEOLOCATE_RADIUS_M,
    temperature: float = GEOLOCATE_TEMPERATURE,
) -> dict[str, Any]:
    """The best hit's place, and how much of the candidates' softmax weight lies within ``radius_m`` of it.

    Confidence is 1 when every candidate agrees on the place and falls towards 1/k when
    the candidates are scattered with similar scores.
    """
    if not hits:
        raise InputError("no gallery item matches the filters: widen them or change the targets")
    best = hits[0]
    scores = np.array([h["score"] for h in hits], dtype=np.float64)
    weights = np.exp((scores - scores.max()) / temperature)
    weights /= weights.sum()
    lat = np.array([h["lat_deg"] for h in hits], dtype=np.float64)
    lon = np.array([h["lon_deg"] for h in hits], dtype=np.float64)
    near = haversine_km(lat, lon, np.full_like(lat, best["lat_deg"]), np.full_like(lon, best["lon_deg"])) * 1000
    return {
        "lat_deg": float(best["lat_deg"]),
        "lon_deg": float(best["lon_deg"]),
        "cell_token": str(best["cell_token"]),
        "confidence": float(weights[near <= radius_m].sum()),
        "radius_m": radius_m,
    }
