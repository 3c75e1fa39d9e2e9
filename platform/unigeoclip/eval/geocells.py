"""The geocell protocol: geolocate a query against a gallery of S2 cell centroids encoded by the coordinate encoder.

Unlike retrieval, the gallery does not hold the query's own sample: it is every S2 cell
of one level over an area (by default the box around the store's samples, at the
finest level with at most ``max_cells`` cells), so a query is placed at the centroid of
its best cell and the error is at least the cell's size. This is how a trained model
geolocates a new image with no reference imagery at all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..geo.bbox import BBox
from ..geo.distance import EARTH_RADIUS_KM
from ..geo.s2 import cover_bbox, token_center
from ..modality import Modality
from ..models import UniGeoCLIP
from .embeddings import SplitEmbeddings
from .peers import coords_features
from .retrieval import DEFAULT_THRESHOLDS_KM, GeoAccuracy, geo_accuracy


@dataclass(frozen=True)
class CellGallery:
    """Every S2 cell of one level over a box, its centroid embedded by the coordinate encoder."""

    level: int
    bbox: BBox
    tokens: list[str]
    latlon: np.ndarray  # (G, 2) centroids
    embeddings: np.ndarray  # (G, D)

    @property
    def cell_km(self) -> float:
        """Typical side of a cell of this level."""
        return math.sqrt(4 * math.pi * EARTH_RADIUS_KM**2 / (6 * 4**self.level))


@dataclass(frozen=True)
class GeocellResult:
    """Geolocation of a split by nearest cell of the gallery, for one set of query modalities."""

    query: tuple[Modality, ...]
    queries: int
    geo: GeoAccuracy

    @property
    def key(self) -> str:
        """The result's name: the query modalities joined by ``+``, then ``->cells`` (e.g. ``aerial+text->cells``)."""
        return "+".join(m.value for m in self.query) + "->cells"


def padded_bbox(latlon: np.ndarray, pad: float = 0.05, min_deg: float = 0.01) -> BBox:
    """The box around points, widened by ``pad`` of its size (at least ``min_deg``) on every side."""
    lat_min, lon_min = latlon.min(axis=0)
    lat_max, lon_max = latlon.max(axis=0)
    dlat = max((lat_max - lat_min) * pad, min_deg)
    dlon = max((lon_max - lon_min) * pad, min_deg)
    return BBox(
        float(max(lat_min - dlat, -90.0)),
        float(max(lon_min - dlon, -180.0)),
        float(min(lat_max + dlat, 90.0)),
        float(min(lon_max + dlon, 180.0)),
    )


def level_for(bbox: BBox, max_cells: int) -> int:
    """The finest S2 level whose cells over ``bbox`` number at most ``max_cells`` (by area, with a margin)."""
    lat_min, lon_min, lat_max, lon_max = bbox
    area = (
        EARTH_RADIUS_KM**2
        * math.radians(lon_max - lon_min)
        * abs(math.sin(math.radians(lat_max)) - math.sin(math.radians(lat_min)))
    )
    level = 0
    while level < 24 and 1.5 * area / (4 * math.pi * EARTH_RADIUS_KM**2 / (6 * 4 ** (level + 1))) <= max_cells:
        level += 1
    return level


def cover_in_slices(bbox: BBox, level: int, *, max_cells: int, slice_deg: float = 90.0) -> list[str]:
    """The cells covering ``bbox``, covered in longitude slices: s2sphere's coverer returns far too few
    cells for a box wider than 180 degrees (a world box at level 5 gave 223 cells of about 5,000)."""
    lat_min, lon_min, lat_max, lon_max = bbox
    edges = np.linspace(lon_min, lon_max, max(1, math.ceil((lon_max - lon_min) / slice_deg)) + 1)
    tokens: dict[str, None] = {}
    for lo, hi in itertools.pairwise(edges.tolist()):
        tokens.update(dict.fromkeys(cover_bbox(lat_min, lo, lat_max, hi, level=level, max_cells=max_cells)))
    return list(tokens)


def cell_gallery(model: UniGeoCLIP, bbox: BBox, *, max_cells: int = 20_000, level: int | None = None) -> CellGallery:
    """Every level-``level`` S2 cell over ``bbox``, its centroid encoded by ``model``'s coordinate encoder."""
    level = level_for(bbox, max_cells) if level is None else level
    tokens = cover_in_slices(bbox, level, max_cells=max(4 * max_cells, 8))
    latlon = np.array([token_center(t) for t in tokens], dtype=np.float64)
    return CellGallery(level, bbox, tokens, latlon, coords_features(model)(latlon))


def geolocate(
    split: SplitEmbeddings,
    gallery: CellGallery,
    query: Sequence[Modality],
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
) -> GeocellResult | None:
    """Place each sample having every ``query`` modality at its best cell (mean similarity over the modalities)."""
    query = tuple(query)
    rows = np.flatnonzero(np.logical_and.reduce([split.present[m] for m in query]))
    if len(rows) == 0:
        return None
    sims = np.mean([split.embeddings[m][rows] @ gallery.embeddings.T for m in query], axis=0)  # (Q, G)
    pred = gallery.latlon[np.argmax(sims, axis=1)]
    truth = split.latlon[rows]
    return GeocellResult(
        query, len(rows), geo_accuracy(pred[:, 0], pred[:, 1], truth[:, 0], truth[:, 1], thresholds_km)
    )
