"""A tiny user dataset written on the fly: rasters in two CRSs (neither WGS84), street images, texts.

Shared by the ``files`` source's unit tests and the end-to-end ingest tests.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from affine import Affine
from PIL import Image
from unigeoclip.config import DataConfig
from unigeoclip.geo.s2 import cell_token, token_center

from .helpers import requires_extra

rasterio = requires_extra("files", "rasterio")  # the world is GeoTIFFs

PARIS = (48.8566, 2.3522)
YEAR = 2021
DATA = DataConfig(cell_level=16, tile_m=160.0, aerial_px=64, dsm_px=32, street_views_per_sample=2)
BUILDING_OFFSET_M = (20.0, -15.0)  # east, north of the building cell's centre
BUILDING_HALF_M = 15.0


def aeqd(lat: float, lon: float) -> pyproj.Transformer:
    """WGS84 lon/lat -> metres east/north of a point."""
    return pyproj.Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84", always_xy=True
    )


def near(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """``(lat, lon)`` of the point ``east_m``, ``north_m`` metres from (lat, lon)."""
    lon2, lat2 = aeqd(lat, lon).transform(east_m, north_m, direction="INVERSE")
    return float(lat2), float(lon2)


@dataclass
class World:
    root: Path
    aerial: Path
    dsm: Path
    dsm_nocrs: Path
    street_index: Path
    text: Path
    building_cell: str
    other_cell: str


def write_tif(path: Path, data: np.ndarray, crs: str | None, transform: Any, nodata: float | None = None) -> None:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=data.dtype, crs=crs, transform=transform, nodata=nodata,
    ) as ds:  # fmt: skip
        ds.write(data)


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def build_world(root: Path) -> World:
    """~600 m around central Paris: aerial in UTM 31N, DSM in Web Mercator, one bright 30 m tall building."""
    root.mkdir(parents=True, exist_ok=True)
    building_cell = cell_token(*PARIS, DATA.cell_level)
    c_lat, c_lon = token_center(building_cell)
    b_lat, b_lon = near(c_lat, c_lon, *BUILDING_OFFSET_M)
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    bx, by = to_utm.transform(b_lon, b_lat)  # building centre, UTM metres
    px, py = to_utm.transform(PARIS[1], PARIS[0])
    rng = np.random.default_rng(0)

    # Aerial: RGBA uint8, 2 m pixels, 600 m square; alpha 0 on a 40 m strip along the west edge.
    res, n = 2.0, 300
    west, north = px - 300.0, py + 300.0
    xs = west + (np.arange(n) + 0.5) * res
    ys = north - (np.arange(n) + 0.5) * res
    ex, ny = np.meshgrid(xs, ys)
    inside = (np.abs(ex - bx) <= BUILDING_HALF_M) & (np.abs(ny - by) <= BUILDING_HALF_M)
    rgb = rng.integers(40, 110, size=(3, n, n)).astype(np.uint8)
    rgb[:, inside] = 250
    alpha = np.full((1, n, n), 255, np.uint8)
    alpha[:, :, :20] = 0
    aerial = root / "aerial.tif"
    write_tif(aerial, np.concatenate([rgb, alpha]), "EPSG:32631", Affine(res, 0.0, west, 0.0, -res, north))

    # DSM: float32 metres on its own grid, EPSG:3857 (about 2.6 m on the ground), nodata in one corner.
    to_merc = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    mx, my = to_merc.transform(PARIS[1], PARIS[0])
    mres, mn = 4.0, 228
    mwest, mnorth = mx - mres * mn / 2, my + mres * mn / 2
    gx, gy = np.meshgrid(mwest + (np.arange(mn) + 0.5) * mres, mnorth - (np.arange(mn) + 0.5) * mres)
    ux, uy = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:32631", always_xy=True).transform(gx, gy)
    heights = rng.uniform(0.0, 2.0, size=(mn, mn)).astype(np.float32)
    heights[(np.abs(ux - bx) <= BUILDING_HALF_M) & (np.abs(uy - by) <= BUILDING_HALF_M)] = 30.0
    heights[:40, -40:] = -9999.0
    dsm, dsm_nocrs = root / "dsm.tif", root / "dsm_nocrs.tif"
    write_tif(dsm, heights[None], "EPSG:3857", Affine(mres, 0.0, mwest, 0.0, -mres, mnorth), nodata=-9999.0)
    write_tif(dsm_nocrs, heights[None], None, Affine(mres, 0.0, mwest, 0.0, -mres, mnorth), nodata=-9999.0)

    # Street images: three in the building cell (two near-duplicates), one there in 2023, one broken,
    # one missing (in another cell), one at latitude 95.
    (root / "street").mkdir()
    for name, color in (("a.png", (200, 0, 0)), ("b.png", (0, 200, 0)), ("c.png", (0, 0, 200))):
        (root / "street" / name).write_bytes(png(color))
    (root / "street" / "d.jpg").write_bytes(png((90, 90, 90), fmt="JPEG"))
    (root / "street" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    other = near(*PARIS, 250.0, 0.0)
    rows = [
        ("a", "street/a.png", *near(c_lat, c_lon, -10.0, 10.0), 0.0, "2021-05-04"),
        ("b", "street/b.png", *near(c_lat, c_lon, 10.0, -20.0), 180.0, "2021-05-04"),
        ("c", "street/c.png", *near(c_lat, c_lon, -9.0, 10.0), 5.0, "2021-05-04T10:30:00"),
        ("d", "street/d.jpg", *near(c_lat, c_lon, 0.0, 0.0), 90.0, "2023-01-10"),
        ("broken", "street/broken.jpg", *near(c_lat, c_lon, 5.0, 5.0), 270.0, "2021-05-04"),
        ("missing", "street/missing.jpg", *other, 0.0, "2021-05-04"),
        ("lat95", "street/a.png", 95.0, 2.35, 0.0, "2021-05-04"),
    ]
    index = root / "street_index.csv"
    index.write_text(
        "id,path,lat_deg,lon_deg,heading_deg,capture_date\n" + "".join(f"{','.join(map(str, r))}\n" for r in rows)
    )

    text = root / "texts.jsonl"
    lines = [
        {"id": "t1", "lat_deg": b_lat, "lon_deg": b_lon, "text": "A tall  white tower\nby the river."},
        {"id": "t2", "lat_deg": b_lat, "lon_deg": b_lon, "text": "   "},
    ]
    text.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return World(root, aerial, dsm, dsm_nocrs, index, text, building_cell, cell_token(*other, DATA.cell_level))
