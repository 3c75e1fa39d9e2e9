"""S2 cells: the platform's spatial key (level 16 by default, ~150 m across)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import s2sphere

from ..errors import InputError
from .coords import LATLON_RANGE, valid_latlon

DEFAULT_LEVEL = 16


def cell_id(lat_deg: float, lon_deg: float, level: int = DEFAULT_LEVEL) -> s2sphere.CellId:
    """The level-``level`` S2 cell containing the point; :class:`InputError` for an invalid position."""
    if not valid_latlon(lat_deg, lon_deg):
        raise InputError(f"({lat_deg}, {lon_deg}) is not a valid position: give {LATLON_RANGE}")
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat_deg, lon_deg)).parent(level)


def cell_token(lat_deg: float, lon_deg: float, level: int = DEFAULT_LEVEL) -> str:
    """The S2 token of the level-``level`` cell containing the point."""
    return str(cell_id(lat_deg, lon_deg, level).to_token())


def from_token(token: str) -> s2sphere.CellId:
    """The S2 cell of a token; :class:`InputError` when the token is not a valid cell."""
    cid = s2sphere.CellId.from_token(token)
    if not cid.is_valid():
        raise InputError(f"{token!r} is not a valid S2 cell token")
    return cid


def token_center(token: str) -> tuple[float, float]:
    """``(lat_deg, lon_deg)`` of the centre of a cell."""
    ll = from_token(token).to_lat_lng()
    return float(ll.lat().degrees), float(ll.lng().degrees)


def token_level(token: str) -> int:
    """The S2 level of a cell token (0 = a cube face, 30 = a leaf)."""
    return int(from_token(token).level())


def parent_token(token: str, level: int) -> str:
    """The token of the cell's ancestor at ``level`` (which may not be finer than the cell's own)."""
    cid = from_token(token)
    if level > cid.level():
        raise InputError(f"parent level {level} is finer than the cell's level {cid.level()}")
    return str(cid.parent(level).to_token())


def contains(token: str, lat_deg: float, lon_deg: float) -> bool:
    """Whether the cell of ``token`` contains the point (compared at leaf level)."""
    cid = from_token(token)
    return bool(cid.contains(cell_id(lat_deg, lon_deg, 30)))


def cover_bbox(
    lat_min: float,
    lon_min: float,
    lat_max: float,
    lon_max: float,
    level: int = DEFAULT_LEVEL,
    max_cells: int = 1_000_000,
) -> list[str]:
    """Tokens of the level-``level`` cells covering a lat/lon box, in Hilbert-curve order."""
    if not (lat_min < lat_max and lon_min < lon_max):
        raise InputError(f"empty box: lat {lat_min}..{lat_max}, lon {lon_min}..{lon_max}")
    rect = s2sphere.LatLngRect.from_point_pair(
        s2sphere.LatLng.from_degrees(lat_min, lon_min), s2sphere.LatLng.from_degrees(lat_max, lon_max)
    )
    coverer = s2sphere.RegionCoverer()
    coverer.min_level = coverer.max_level = level
    coverer.max_cells = max_cells
    return [str(c.to_token()) for c in coverer.get_covering(rect)]


def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by ``key``: reproducible assignment without a random row split."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def tokens_by_parent(tokens: Iterable[str], level: int) -> dict[str, list[str]]:
    """``tokens`` grouped by their ancestor at ``level``: parent token -> its tokens, in input order."""
    groups: dict[str, list[str]] = {}
    for t in tokens:
        groups.setdefault(parent_token(t, level), []).append(t)
    return groups
