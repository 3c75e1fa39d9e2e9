"""The one bounding box: ``lat_min, lon_min, lat_max, lon_max`` in degrees, inclusive.

``lon_min > lon_max`` means the box crosses the antimeridian (170 E to 170 W is ``lon_min=170,
lon_max=-170``). The same box renders as SQL over ``lat_deg``/``lon_deg`` columns (the
embedding table), as a numpy mask (the in-memory snapshot, the earth source's place list) and
as longitude spans split at the antimeridian (S2 coverings), so the three always agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..errors import InputError, UniGeoCLIPError


class BBox(NamedTuple):
    """Degrees, inclusive; ``lon_min > lon_max`` crosses the antimeridian."""

    lat_min: float
    lon_min: float
    lat_max: float
    lon_max: float

    @classmethod
    def parse(cls, values: Sequence[float], *, what: str = "bbox", error: type[UniGeoCLIPError] = InputError) -> BBox:
        """Four numbers -> a checked box; ``error`` (named ``what`` in its message) says which of them is wrong."""
        if len(values) != 4:
            raise error(f"{what} must be (lat_min, lon_min, lat_max, lon_max), got {len(values)} numbers")
        box = cls(*(float(v) for v in values))
        if not all(math.isfinite(v) for v in box):
            raise error(f"{what} has a non-finite number: {tuple(values)}")
        if not (-90 <= box.lat_min <= box.lat_max <= 90):
            raise error(
                f"{what} latitudes must satisfy -90 <= lat_min <= lat_max <= 90, got {box.lat_min}, {box.lat_max}; "
                "the order is lat_min, lon_min, lat_max, lon_max"
            )
        if not (-180 <= box.lon_min <= 180 and -180 <= box.lon_max <= 180):
            raise error(f"{what} longitudes must lie in [-180, 180], got {box.lon_min}, {box.lon_max}")
        return box

    @property
    def crosses_antimeridian(self) -> bool:
        """Whether the box crosses the antimeridian (``lon_min > lon_max``)."""
        return self.lon_min > self.lon_max

    def lon_spans(self) -> list[tuple[float, float]]:
        """``(lon_min, lon_max)`` pieces that do not cross the antimeridian: one, or two meeting at 180/-180."""
        if not self.crosses_antimeridian:
            return [(self.lon_min, self.lon_max)]
        return [(self.lon_min, 180.0), (-180.0, self.lon_max)]

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Elementwise: which points lie in the box (edges included)."""
        in_lat = (lat >= self.lat_min) & (lat <= self.lat_max)
        if self.crosses_antimeridian:
            return np.asarray(in_lat & ((lon >= self.lon_min) | (lon <= self.lon_max)))
        return np.asarray(in_lat & (lon >= self.lon_min) & (lon <= self.lon_max))

    def to_sql(self, lat: str = "lat_deg", lon: str = "lon_deg") -> str:
        """The same test as :meth:`contains`, as a SQL predicate over two float columns."""
        lat_sql = f"{lat} >= {self.lat_min!r} AND {lat} <= {self.lat_max!r}"
        if self.crosses_antimeridian:
            return f"{lat_sql} AND ({lon} >= {self.lon_min!r} OR {lon} <= {self.lon_max!r})"
        return f"{lat_sql} AND {lon} >= {self.lon_min!r} AND {lon} <= {self.lon_max!r}"
