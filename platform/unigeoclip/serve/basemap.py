"""The explorer's offline base map: Web Mercator tiles cut from the Blue Marble image the ``earth`` source reads.

``GET /tiles/{z}/{x}/{y}.png`` (the XYZ scheme Leaflet and every web map use). Blue Marble holds 5,400 pixels
around the equator (~7 km each), about zoom 4 (4,096); tiles go to zoom 5, and the page enlarges those
beyond it rather than ask for tiles that would add no detail.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import InputError
from ..geo.raster import sample_bilinear
from ..geodata.rasters import BMNG_GRID, blue_marble
from ..preprocess.imaging import encode_png

TILE_PX = 256
MAX_ZOOM = 5
MAX_LAT_DEG = 85.0511287798066  # Web Mercator's edge: the square world


def tile_lat_lon(z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes of the tile's pixel rows and longitudes of its columns (pixel centres), degrees."""
    n = TILE_PX * 2**z
    along = np.arange(TILE_PX, dtype=np.float64) + 0.5
    lon = (x * TILE_PX + along) / n * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(math.pi * (1.0 - 2.0 * (y * TILE_PX + along) / n))))
    return lat, lon


@functools.lru_cache(maxsize=512)
def tile_png(z: int, x: int, y: int) -> bytes:
    """The PNG of tile ``z/x/y`` (0 <= x, y < 2**z, z <= :data:`MAX_ZOOM`); an :class:`InputError` outside that."""
    if not 0 <= z <= MAX_ZOOM:
        raise InputError(f"zoom {z} is outside 0..{MAX_ZOOM}: the base map holds no finer tiles")
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise InputError(f"tile {z}/{x}/{y} does not exist: x and y lie in 0..{2**z - 1} at zoom {z}")
    lat, lon = tile_lat_lon(z, x, y)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    rgb, _ = sample_bilinear(blue_marble(), BMNG_GRID, grid_lat, grid_lon)  # a global raster: it covers every point
    return encode_png(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
