"""GeoTIFF mosaics read with rasterio: the cells a raster covers, and its tile around one cell.

Kept apart from :mod:`.files` because rasterio is optional (imported lazily, with a
:class:`ConfigError` saying how to install it) and GDAL handles need care: they are
opened once per process and thread, never pickled, and only the window around a
cell is read, never the whole mosaic.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError
from ..geo.bbox import BBox
from ..geo.s2 import cover_bbox
from ..preprocess.imaging import encode_png

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

MIN_COVERAGE = 0.5  # share of a tile's pixels that must hold data for the aerial/dsm modality to exist


class RasterReadError(Exception):
    """A window of a raster that opened fine could not be read (corrupt block)."""


class UnusableRasterError(Exception):
    """A whole raster cannot be used (unreadable, no CRS, wrong bands): a reject with this reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _rasterio() -> Any:
    try:
        import rasterio
        import rasterio.crs
        import rasterio.enums
        import rasterio.errors
        import rasterio.warp
        import rasterio.windows
    except ImportError:
        raise ConfigError("reading aerial_tif/dsm_tif needs rasterio: pip install 'unigeoclip[files]'") from None
    return rasterio


def covered_cells(modality: str, path: Path, level: int) -> list[str]:
    """Cells covering a raster's footprint, or :class:`UnusableRasterError` saying why the raster cannot be used."""
    if not path.is_file():
        raise ConfigError(f"data.sources.files.{modality}_tif: {str(path)!r} does not exist or is not a file")
    rasterio = _rasterio()
    try:
        with rasterio.open(path) as ds:
            crs, bounds, count, dtypes = ds.crs, ds.bounds, ds.count, ds.dtypes
    except rasterio.errors.RasterioIOError as exc:
        detail = f"{modality} raster {str(path)!r} cannot be opened ({exc}): check it is a GeoTIFF"
        raise UnusableRasterError("unreadable_raster", detail) from None
    if crs is None:
        detail = (
            f"{modality} raster {str(path)!r} has no CRS, so its pixels cannot be placed on Earth: "
            "assign one, e.g. gdal_edit.py -a_srs EPSG:32631 FILE"
        )
        raise UnusableRasterError("raster_without_crs", detail)
    if modality == "aerial" and (count not in (3, 4) or dtypes[0] != "uint8"):
        detail = (
            f"aerial raster {str(path)!r} has {count} band(s) of {dtypes[0]}; expected 3 or 4 bands of uint8 "
            "(RGB[A]): convert it, e.g. gdal_translate -ot Byte -scale -b 1 -b 2 -b 3 IN OUT"
        )
        raise UnusableRasterError("bad_raster_bands", detail)
    if modality == "dsm" and count != 1:
        detail = (
            f"dsm raster {str(path)!r} has {count} bands; expected 1 band of heights: keep one, gdal_translate -b 1"
        )
        raise UnusableRasterError("bad_raster_bands", detail)
    lon_min, lat_min, lon_max, lat_max = rasterio.warp.transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    lat_min, lat_max = max(lat_min, -90.0), min(lat_max, 90.0)
    cells: list[str] = []
    for lo, hi in BBox(lat_min, lon_min, lat_max, lon_max).lon_spans():
        cells += cover_bbox(lat_min, lo, lat_max, hi, level=level)
    return cells


_LOCAL = threading.local()


def _open_raster(path: str) -> DatasetReader:
    """A raster opened once per process and thread (GDAL handles are neither fork- nor thread-safe)."""
    rasterio = _rasterio()
    if getattr(_LOCAL, "pid", None) != os.getpid():
        _LOCAL.pid, _LOCAL.datasets = os.getpid(), {}
    datasets: dict[str, DatasetReader] = _LOCAL.datasets
    ds = datasets.get(path)
    if ds is None or ds.closed:
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(
                f"raster {path!r} was planned on the driver but cannot be opened on this worker ({exc}): "
                "put it on storage every Ray node can read under the same path"
            ) from None
        datasets[path] = ds
    return ds


def _local_grid(lat: float, lon: float, tile_m: float, px: int) -> tuple[Any, Any]:
    """CRS and affine transform of a north-up ``tile_m`` square of ``px`` pixels centred on a point."""
    rasterio = _rasterio()
    from affine import Affine

    crs = rasterio.crs.CRS.from_proj4(f"+proj=aeqd +lat_0={lat!r} +lon_0={lon!r} +x_0=0 +y_0=0 +datum=WGS84 +units=m")
    res = tile_m / px
    return crs, Affine(res, 0.0, -tile_m / 2, 0.0, -res, tile_m / 2)


def _source_window(ds: DatasetReader, dst_crs: Any, tile_m: float, pad: int = 2) -> Any | None:
    """The integer pixel window of ``ds`` holding the tile (plus ``pad`` pixels for bilinear), or None if outside."""
    rasterio = _rasterio()
    edge = np.linspace(-tile_m / 2, tile_m / 2, 21)
    xs = np.concatenate([edge, edge, np.full(21, -tile_m / 2), np.full(21, tile_m / 2)])
    ys = np.concatenate([np.full(21, -tile_m / 2), np.full(21, tile_m / 2), edge, edge])
    sx, sy = rasterio.warp.transform(dst_crs, ds.crs, xs.tolist(), ys.tolist())
    inv, x, y = ~ds.transform, np.asarray(sx), np.asarray(sy)
    cols, rows = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f  # pixel coordinates
    if not (np.all(np.isfinite(cols)) and np.all(np.isfinite(rows))):
        return None
    c0, c1 = max(math.floor(cols.min()) - pad, 0), min(math.ceil(cols.max()) + pad, ds.width)
    r0, r1 = max(math.floor(rows.min()) - pad, 0), min(math.ceil(rows.max()) + pad, ds.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)


def _window_transform(transform: Any, win: Any) -> Any:
    """The affine transform of a window (composed by hand: works with every ``affine`` version, no warnings)."""
    t, col, row = transform, win.col_off, win.row_off
    return type(t)(t.a, t.b, t.c + t.a * col + t.b * row, t.d, t.e, t.f + t.d * col + t.e * row)


def aerial_tile(path: str, lat: float, lon: float, tile_m: float, px: int) -> bytes | None:
    """RGB PNG of the tile around a point, or None when less than MIN_COVERAGE of it has data."""
    dst = np.zeros((4, px, px), dtype=np.uint8)
    if _warp_window(path, lat, lon, tile_m, dst, _read_rgba, src_alpha=4, dst_alpha=4) is None:
        return None
    valid = dst[3] >= 128  # (px, px)
    if valid.mean() < MIN_COVERAGE:
        return None
    return encode_png(np.where(valid[None], dst[:3], 0).transpose(1, 2, 0))  # (px, px, 3)


def dsm_tile(path: str, lat: float, lon: float, tile_m: float, px: int) -> np.ndarray | None:
    """(px, px) float32 heights in metres (NaN = no data) around a point, or None when mostly empty."""
    dst = np.full((px, px), np.nan, dtype=np.float32)
    if _warp_window(path, lat, lon, tile_m, dst, _read_heights, src_nodata=np.nan, dst_nodata=np.nan) is None:
        return None
    if np.isfinite(dst).mean() < MIN_COVERAGE:
        return None
    return dst


def _read_rgba(ds: DatasetReader, win: Any) -> np.ndarray:
    """(4, h, w) uint8: RGB and, as band 4, the validity mask (0 = no data: alpha, nodata or internal mask)."""
    rgb = ds.read((1, 2, 3), window=win)  # (3, h, w) uint8
    mask = ds.read_masks(1, window=win)  # (h, w)
    return np.concatenate([rgb, mask[None]], axis=0)


def _read_heights(ds: DatasetReader, win: Any) -> np.ndarray:
    """(h, w) float32 heights, NaN where the raster has no data."""
    band = ds.read(1, window=win, masked=True)  # (h, w), nodata masked
    return np.ma.filled(band.astype(np.float32), np.nan)


def _warp_window(
    path: str,
    lat: float,
    lon: float,
    tile_m: float,
    dst: np.ndarray,
    read: Callable[[DatasetReader, Any], np.ndarray],
    **nodata: Any,
) -> np.ndarray | None:
    """Fill ``dst`` (its last two axes are the tile's pixels) from the raster window around a point, bilinear.

    The steps every tile shares: the window is read with ``read`` and reprojected onto the
    local grid; ``nodata`` says how missing pixels travel (alpha band or NaN). None when the
    tile lies outside the raster; :class:`RasterReadError` when the window cannot be read.
    """
    rasterio = _rasterio()
    ds = _open_raster(path)
    dst_crs, dst_transform = _local_grid(lat, lon, tile_m, dst.shape[-1])
    win = _source_window(ds, dst_crs, tile_m)
    if win is None:
        return None
    try:
        src = read(ds, win)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(str(exc)) from None
    rasterio.warp.reproject(
        src,
        dst,
        src_transform=_window_transform(ds.transform, win),
        src_crs=ds.crs,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        resampling=rasterio.enums.Resampling.bilinear,
        **nodata,
    )
    return dst
