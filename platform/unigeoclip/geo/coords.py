"""The one check of a latitude/longitude pair: WGS84 degrees, latitude first, finite and in range.

Every layer that takes coordinates (ingest rows, plan items, S2 keys, the model's coordinate
tower, search boxes) asks :func:`valid_latlon` and raises its own error with :data:`LATLON_RANGE`
in the message, so the rule and its wording live here once.
"""

from __future__ import annotations

from typing import Any

LATLON_RANGE = "lat_deg in [-90, 90] and lon_deg in [-180, 180] (WGS84 degrees, latitude first)"


def valid_latlon(lat: Any, lon: Any) -> Any:
    """Whether each point is finite and in range: a bool for floats, an elementwise mask for numpy arrays and
    torch tensors (NaN and infinities compare false, so no separate finiteness test is needed)."""
    return (abs(lat) <= 90.0) & (abs(lon) <= 180.0)
