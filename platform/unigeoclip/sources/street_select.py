"""Choose N spread-out street views of a place: greedy farthest-point sampling on position and heading.

Street images come in bursts (a car shooting every few metres, a tourist taking five
photos of the same facade). Keeping the N views that are farthest apart, rather than
the first N, gives a sample the widest look at its cell for the same storage.

Distance between two views, in metres::

    d = ground_metres + heading_weight_m_per_deg * heading_difference_deg

``heading_difference_deg`` is the smallest angle between the two compass headings
(0..180). The default weight, 0.5 m/deg, makes two photos taken at the same spot but
looking in opposite directions count as 90 m apart (about half a level-16 cell), and a
90-degree turn as 45 m. When either view is a 360-degree panorama (``equirectangular``)
its heading only rotates the same content, so the heading term is dropped for that pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np

from ..geo.distance import haversine_km, unit_vectors

HEADING_WEIGHT_M_PER_DEG = 0.5


class PosedView(Protocol):
    """Anything with a position and a heading (a :class:`StreetView`, an index row)."""

    @property
    def lat_deg(self) -> float:
        """Latitude in degrees."""
        ...

    @property
    def lon_deg(self) -> float:
        """Longitude in degrees."""
        ...

    @property
    def heading_deg(self) -> float:
        """Compass heading in degrees (0 = north, 90 = east)."""
        ...

    @property
    def projection(self) -> str:
        """``equirectangular`` for a 360-degree panorama, else ``perspective``."""
        ...


V = TypeVar("V", bound=PosedView)


def view_distances(
    views: Sequence[PosedView], heading_weight_m_per_deg: float = HEADING_WEIGHT_M_PER_DEG
) -> np.ndarray:
    """(N, N) pairwise distances in metres, as defined in the module docstring."""
    lat = np.array([v.lat_deg for v in views], dtype=np.float64)
    lon = np.array([v.lon_deg for v in views], dtype=np.float64)
    head = np.array([v.heading_deg for v in views], dtype=np.float64)
    pano = np.array([v.projection == "equirectangular" for v in views])
    ground_m = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :]) * 1000.0  # (N, N)
    diff = np.abs(head[:, None] - head[None, :]) % 360.0
    diff = np.minimum(diff, 360.0 - diff)  # (N, N), 0..180
    diff[pano[:, None] | pano[None, :]] = 0.0
    return np.asarray(ground_m + heading_weight_m_per_deg * diff)


def farthest_point_indices(
    views: Sequence[PosedView], n: int, *, heading_weight_m_per_deg: float = HEADING_WEIGHT_M_PER_DEG
) -> list[int]:
    """Indices of ``n`` views in selection order (all of them, in that order, when ``n >= len(views)``).

    Deterministic: the first pick is the view closest to the centroid of the positions
    (a representative view, not an outlier); each next pick is the view whose distance
    to the nearest already-picked view is largest. Ties go to the lower index. The
    order is a prefix order: the first ``k`` of ``n`` picks are the picks for ``k``.
    """
    if n <= 0 or not views:
        return []
    # Centroid as a mean unit vector: correct across the antimeridian and near the poles.
    xyz = unit_vectors(np.array([v.lat_deg for v in views]), np.array([v.lon_deg for v in views]))  # (N, 3)
    # Largest cosine to the mean vector = closest to the centroid (a zero mean, views all round the globe, gives 0).
    first = int(np.argmax(xyz @ xyz.mean(axis=0)))
    dist = view_distances(views, heading_weight_m_per_deg)
    chosen = [first]
    nearest = dist[first].copy()  # (N,) distance to the closest chosen view
    nearest[first] = -np.inf
    for _ in range(min(n, len(views)) - 1):
        nxt = int(np.argmax(nearest))  # first maximum = lowest index on ties
        chosen.append(nxt)
        nearest = np.minimum(nearest, dist[nxt])
        nearest[chosen] = -np.inf
    return chosen


def farthest_point_views(
    views: Sequence[V], n: int, *, heading_weight_m_per_deg: float = HEADING_WEIGHT_M_PER_DEG
) -> list[V]:
    """The ``n`` most spread-out views, in selection order (see :func:`farthest_point_indices`)."""
    idx = farthest_point_indices(views, n, heading_weight_m_per_deg=heading_weight_m_per_deg)
    return [views[i] for i in idx]
