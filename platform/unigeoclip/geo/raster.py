"""Sample north-up lat/lon rasters on a local metric grid around a point.

Global rasters shipped in packages (Blue Marble, GLOBE, pvlib's altitude grid) are plate
carrée: equal steps in degrees. A patch cut as a degree box would be squashed east-west
at high latitude and torn at the dateline, so patches are laid out in kilometres east
and north of their centre (azimuthal equidistant) and each pixel centre is looked up in
the raster. Any source with a plate-carrée raster can reuse this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .distance import EARTH_RADIUS_KM

KM_PER_DEG = math.pi / 180.0 * EARTH_RADIUS_KM


@dataclass(frozen=True)
class LatLonGrid:
    """Where a north-up plate-carrée raster lies on Earth.

    ``lat_top`` / ``lon_left`` are the outer edges of row 0 / column 0 (not pixel
    centres). ``wraps`` says the columns go all the way round (longitude wraps).
    """

    lat_top: float
    lon_left: float
    deg_per_px: float
    rows: int
    cols: int
    wraps: bool = False

    @property
    def px_km(self) -> float:
        """North-south size of one pixel, km: the finest detail the raster holds."""
        return self.deg_per_px * KM_PER_DEG


def local_grid(lat_deg: float, lon_deg: float, side_km: float, px: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lat, lon)`` in degrees of the pixel centres of a north-up square, each ``(px, px)``.

    The square is ``side_km`` across, centred on the point, row 0 north. Offsets east/north
    are walked along great circles from the centre (azimuthal equidistant), so the patch
    keeps its shape at any latitude; longitudes come back in [-180, 180), so a patch
    over the dateline simply has pixels on both sides of it, and one over a pole crosses it.
    """
    lat, lon = local_grids(np.array([lat_deg]), np.array([lon_deg]), side_km, px)
    return lat[0], lon[0]


def local_grids(lat_deg: np.ndarray, lon_deg: np.ndarray, side_km: float, px: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_grid` of ``N`` centres at once: ``(N, px, px)`` each, the same values as one at a time.

    The offsets' trigonometry is shared by every centre; each centre's own sines and cosines are taken
    with :mod:`math`, as one at a time, so a batch changes no bit of any patch.
    """
    offsets = (np.arange(px, dtype=np.float64) + 0.5) * (side_km / px) - side_km / 2.0
    east, north = np.meshgrid(offsets, -offsets)  # (px, px); row 0 = north
    dist = np.hypot(east, north) / EARTH_RADIUS_KM  # angular distance, radians
    bearing = np.arctan2(east, north)
    cos_d, sin_d, cos_b, sin_b = np.cos(dist), np.sin(dist), np.cos(bearing), np.sin(bearing)
    phi0 = [math.radians(float(v)) for v in np.ravel(lat_deg)]
    sin_phi0 = np.array([math.sin(p) for p in phi0])[:, None, None]  # (N, 1, 1)
    cos_phi0 = np.array([math.cos(p) for p in phi0])[:, None, None]
    lmb0 = np.array([math.radians(float(v)) for v in np.ravel(lon_deg)])[:, None, None]
    sin_lat = sin_phi0 * cos_d + cos_phi0 * sin_d * cos_b  # (N, px, px)
    lat = np.arcsin(np.clip(sin_lat, -1.0, 1.0))
    dlon = np.arctan2(sin_b * sin_d * cos_phi0, cos_d - sin_phi0 * sin_lat)
    lon = np.degrees(lmb0 + dlon)
    return np.degrees(lat), wrap(lon + 180.0, 360.0) - 180.0


def wrap(x: np.ndarray, period: float) -> np.ndarray:
    """``x % period`` (numpy's floor remainder), the same float bits, with the division taken only where needed.

    A value strictly between 0 and ``period`` is its own remainder, exactly; the others (negative, zero, past
    the period, NaN) go through ``np.remainder``. Coordinates mostly lie inside one turn, so most are copied.
    """
    out = np.array(x, dtype=np.result_type(x, period))  # the dtype x % period has (float32 stays float32)
    away = ~((out > 0.0) & (out < period))
    if away.any():
        out[away] = np.remainder(out[away], period)
    return out


def sample_bilinear(
    raster: np.ndarray, grid: LatLonGrid, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear values of ``raster`` (rows, cols[, bands]) at the points, and which points it covers.

    Returns ``(values, inside)``: float32 of shape ``lat.shape + raster.shape[2:]`` and a
    bool mask. Outside a non-wrapping raster the values are edge-clamped and ``inside`` is
    False: the caller decides what to put there (another raster, NaN).

    Each value is ``(v00 (1 - fc) + v01 fc) (1 - fr) + (v10 (1 - fc) + v11 fc) fr`` in float64, rounded
    once to float32. The four corners are gathered from the flattened raster (``take``) and each band is
    weighted on its own contiguous plane: the same arithmetic, bit for bit, as indexing ``raster[r, c]`` and
    broadcasting the weights over a short last axis of bands, numpy's slow case (notes/issue25.md).
    """
    lat, lon = np.asarray(lat), np.asarray(lon)
    row = (grid.lat_top - lat) / grid.deg_per_px - 0.5
    col = wrap(lon - grid.lon_left, 360.0) / grid.deg_per_px - 0.5  # mod 360: tiles may straddle the dateline
    inside = (row >= -0.5) & (row <= grid.rows - 0.5)
    if grid.wraps:
        col = wrap(col, grid.cols)
        col = np.where(col == grid.cols, 0.0, col)  # a hair west of column 0 rounds up to one full turn: column 0
    else:
        inside &= col <= grid.cols - 0.5
        col = np.clip(col, 0.0, grid.cols - 1.0)
    row = np.clip(row, 0.0, grid.rows - 1.0)
    r0 = np.floor(row).astype(np.int64)
    c0 = np.floor(col).astype(np.int64)
    r1 = np.minimum(r0 + 1, grid.rows - 1)
    c1 = np.where(c0 + 1 == grid.cols, 0 if grid.wraps else grid.cols - 1, c0 + 1)
    fr, fc = row - r0, col - c0
    gr, gc = 1.0 - fr, 1.0 - fc
    r0 *= grid.cols
    r1 *= grid.cols
    at = [r + c for r, c in ((r0, c0), (r0, c1), (r1, c0), (r1, c1))]  # the four corners' flat pixel indices
    if raster.ndim == 2:
        corners = [[raster.reshape(-1).take(i)] for i in at]
    else:  # (pixels, bands) rows gathered at once, then one contiguous plane per band
        gathered = [raster.reshape(grid.rows * grid.cols, -1).take(i, axis=0) for i in at]
        corners = [[np.ascontiguousarray(g[..., band]) for band in range(g.shape[-1])] for g in gathered]
    out = np.empty(lat.shape + raster.shape[2:], dtype=np.float32)
    planes = out[..., None] if raster.ndim == 2 else out
    for band, (v00, v01, v10, v11) in enumerate(zip(*corners, strict=True)):
        top = v00 * gc
        top += v01 * fc
        bottom = v10 * gc
        bottom += v11 * fc
        top *= gr
        bottom *= fr
        top += bottom
        planes[..., band] = top
    return out, inside


def supersample_factor(out_px_km: float, src_px_km: float, max_factor: int = 8) -> int:
    """How many samples per output pixel side so that no source pixel is skipped (area-like averaging)."""
    return max(1, min(max_factor, math.ceil(out_px_km / src_px_km - 1e-9)))


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the first two axes: (H*f, W*f, ...) -> (H, W, ...)."""
    if factor == 1:
        return values
    h, w = values.shape[0] // factor, values.shape[1] // factor
    blocks = values.reshape(h, factor, w, factor, *values.shape[2:])
    return np.asarray(blocks.mean(axis=(1, 3)), dtype=values.dtype)
