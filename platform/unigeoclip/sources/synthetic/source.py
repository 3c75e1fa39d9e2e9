"""The synthetic world as a source: S2 cells of procedural cities, every modality, several years.

``plan()`` covers each city's square extent with S2 cells; ``extract`` renders one cell
for every year of the world: the aerial tile and DSM of the square of side
``data.tile_m`` around the cell centre, up to N street-level panoramas from road points
in the tile (farthest-point sampled), and a text description, all from one latent
layout. It is the only source with street-level views and the default for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ...config import DataConfig
from ...geo import s2
from ...geo.distance import from_local_metres, local_metres
from ...preprocess.imaging import encode_png
from ..base import RawSample, Reject, SourceConfig, StreetView
from ..street_select import farthest_point_views
from .describe import describe
from .hashing import unit
from .layout import City, make_city
from .raster import Layers, Window, rasterise, window_blocks, window_roads
from .render import aerial_tile, dsm_tile, look
from .street import VIEW_RADIUS_M, panorama

STREET_SPACING_M = 12.0


class SyntheticSourceConfig(SourceConfig):
    """The procedural world: every modality, co-registered, any size."""

    NAME: ClassVar[str] = "synthetic"

    seed: int = 0
    n_cities: int = Field(2, ge=1)
    city_extent_m: float = Field(600.0, gt=0, description="side of the square area covered in each city")
    years: tuple[int, ...] = (2021, 2022, 2023)
    max_cells: int | None = Field(None, ge=1, description="cap on cells per city (None = the whole extent)")


@dataclass
class RenderedCell:
    """One cell in one year, with the latent layers the tests check co-registration against."""

    aerial: np.ndarray  # (P, P, 3) uint8
    dsm: np.ndarray  # (Q, Q) float32 metres
    street: list[tuple[StreetView, np.ndarray]]  # posed views and their (H, W, 3) panoramas
    text: str
    tile_layers: Layers  # the layout rasterised on the aerial grid


class SyntheticSource:
    """Procedural cities at real metro locations; deterministic from ``cfg.seed``."""

    name = "synthetic"

    def __init__(self, cfg: SyntheticSourceConfig, data: DataConfig) -> None:
        self.cfg, self.data = cfg, data
        self.years = tuple(sorted(cfg.years))

    def cities(self) -> list[City]:
        """The world's ``n_cities`` procedural cities."""
        return [make_city(self.cfg.seed, k) for k in range(self.cfg.n_cities)]

    def plan(self) -> list[dict[str, Any]]:
        """One item per cell: ``{"city": index, "cell": token}``; cells nearest each city centre first."""
        items: list[dict[str, Any]] = []
        half = self.cfg.city_extent_m / 2
        for city in self.cities():
            lat, lon = from_local_metres(np.array([-half, half]), np.array([-half, half]), city.lat0, city.lon0)
            tokens = s2.cover_bbox(float(lat[0]), float(lon[0]), float(lat[1]), float(lon[1]), self.data.cell_level)
            centres = np.array([s2.token_center(t) for t in tokens])
            x, y = local_metres(centres[:, 0], centres[:, 1], city.lat0, city.lon0)
            inside = (np.abs(x) <= half) & (np.abs(y) <= half)
            order = np.argsort(np.hypot(x, y), kind="stable")
            chosen = [tokens[i] for i in order if inside[i]][: self.cfg.max_cells]
            items.extend({"city": city.index, "cell": t} for t in chosen)
        return items

    def extract(self, item: dict[str, Any]) -> list[RawSample | Reject]:
        """One sample per year of the world for the item's cell, every modality rendered (images as PNG)."""
        city = make_city(self.cfg.seed, int(item["city"]))
        lat, lon = s2.token_center(item["cell"])
        out: list[RawSample | Reject] = []
        for year in self.years:
            cell = self.render(city, item["cell"], year)
            out.append(
                RawSample(
                    lat_deg=lat,
                    lon_deg=lon,
                    year=year,
                    source=self.name,
                    source_id=f"{city.name}/{item['cell']}/{year}",
                    aerial=encode_png(cell.aerial),
                    street=[StreetView(**{**vars(view), "image": encode_png(img)}) for view, img in cell.street],
                    dsm=cell.dsm,
                    text=cell.text,
                    source_ids={"city": city.name, "seed": str(self.cfg.seed)},
                )
            )
        return out

    def render(self, city: City, token: str, year: int) -> RenderedCell:
        """Every modality of cell ``token`` in ``year``, from the one latent layout."""
        lat, lon = s2.token_center(token)
        cx, cy = (float(v) for v in local_metres(np.array(lat), np.array(lon), city.lat0, city.lon0))
        tile = self.data.tile_m
        tile_win = Window(cx, cy, tile, self.data.aerial_px)
        tile_layers = rasterise(city, year, self.years, tile_win)
        aerial = aerial_tile(city, year, self.years, cx, cy, tile, self.data.aerial_px)
        dsm = dsm_tile(city, year, self.years, cx, cy, tile, self.data.dsm_px)
        text = describe(
            city,
            window_blocks(city, year, self.years, tile_win),
            window_roads(city, tile_win),
            cx,
            cy,
            (city, token, year),
        )
        return RenderedCell(aerial, dsm, self._street(city, token, year, cx, cy), text, tile_layers)

    def _street(self, city: City, token: str, year: int, cx: float, cy: float) -> list[tuple[StreetView, np.ndarray]]:
        n = self.data.street_views_per_sample
        candidates = self._street_points(city, token, cx, cy)
        chosen = farthest_point_views(candidates, n) if n else []
        if not chosen:
            return []
        size = self.data.tile_m + 2 * VIEW_RADIUS_M
        win = Window(cx, cy, size, math.ceil(size))  # ~1 m per pixel around the tile
        layers = rasterise(city, year, self.years, win)
        lk = look(city, year)
        views = []
        for v in chosen:
            x, y = (float(t) for t in local_metres(np.array(v.lat_deg), np.array(v.lon_deg), city.lat0, city.lon0))
            img = panorama(layers, win, x, y, v.heading_deg, self.data.pano_px, lk, (city, token, year, v.source_id))
            views.append((v, img))
        return views

    def _street_points(self, city: City, token: str, cx: float, cy: float) -> list[StreetView]:
        """Camera positions on the carriageways crossing the tile, every 12 m, driving either way."""
        half = self.data.tile_m / 2
        win = Window(cx, cy, self.data.tile_m, 1)
        points = []
        for r in window_roads(city, win):
            lo, hi = (cy - half, cy + half) if r.axis == "x" else (cx - half, cx + half)
            for k in range(math.ceil(lo / STREET_SPACING_M), math.floor(hi / STREET_SPACING_M) + 1):
                forward = unit(city.seed, city.index, r.axis, r.index, k, "drive") < 0.5
                lane = r.position + (r.width / 4) * (1 if forward else -1)
                along = k * STREET_SPACING_M
                x, y = (lane, along) if r.axis == "x" else (along, lane)
                if abs(x - cx) > half or abs(y - cy) > half:
                    continue
                heading = (0.0 if forward else 180.0) if r.axis == "x" else (90.0 if forward else 270.0)
                lat, lon = from_local_metres(np.array(x), np.array(y), city.lat0, city.lon0)
                points.append(
                    StreetView(
                        image=b"",
                        lat_deg=float(lat),
                        lon_deg=float(lon),
                        heading_deg=heading,
                        projection="equirectangular",
                        fov_deg=360.0,
                        source_id=f"{r.name}#{k}",
                    )
                )
        return points
