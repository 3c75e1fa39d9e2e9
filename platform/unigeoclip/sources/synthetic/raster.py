"""Rasterise the latent layout over any north-up window: the one source of every rendered modality.

The aerial tile, the DSM and the street-level renderer all read these layers, so
roofs, heights and facades are co-registered by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import Block, City, Road, Tree, block, road, road_range, street_trees, terrain_m

# surface kinds
GROUND, ROAD, SIDEWALK, WATER, BUILDING, TREE, PLAZA, CONSTRUCTION, MARKING = range(9)

GROUND_RGB = {
    "grass": (96, 140, 70),
    "yard": (120, 136, 92),
    "pavement": (168, 166, 160),
    "road": (72, 74, 78),
    "marking": (220, 220, 210),
    "water": (48, 92, 128),
    "construction": (150, 120, 86),
    "plaza": (190, 180, 160),
}
USE_GROUND = {
    "park": ("grass", GROUND),
    "water": ("water", WATER),
    "plaza": ("plaza", PLAZA),
    "construction": ("construction", CONSTRUCTION),
    "residential": ("yard", GROUND),
    "tower": ("yard", GROUND),
    "commercial": ("pavement", SIDEWALK),
    "industrial": ("pavement", SIDEWALK),
}


@dataclass
class Window:
    """A north-up window of a city's frame: centre (x, y) metres, side ``size_m``, ``px`` pixels."""

    cx: float
    cy: float
    size_m: float
    px: int

    @property
    def res(self) -> float:
        """Metres per pixel."""
        return self.size_m / self.px

    def pixel_slice(self, xa: float, ya: float, xb: float, yb: float) -> tuple[slice, slice] | None:
        """Rows/columns whose pixel centres fall inside the box [xa, xb] x [ya, yb] (row 0 = north)."""
        x0, y1 = self.cx - self.size_m / 2, self.cy + self.size_m / 2
        c0 = max(0, math.ceil((xa - x0) / self.res - 0.5))
        c1 = min(self.px, math.floor((xb - x0) / self.res - 0.5) + 1)
        r0 = max(0, math.ceil((y1 - yb) / self.res - 0.5))
        r1 = min(self.px, math.floor((y1 - ya) / self.res - 0.5) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def bounds(self) -> tuple[float, float, float, float]:
        """x_min, x_max, y_min, y_max."""
        half = self.size_m / 2
        return self.cx - half, self.cx + half, self.cy - half, self.cy + half

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """``(px, px)`` world x and y of pixel centres."""
        offs = (np.arange(self.px) + 0.5) * self.res - self.size_m / 2
        return np.meshgrid(self.cx + offs, self.cy - offs)


def window_blocks(city: City, year: int, years: tuple[int, ...], win: Window) -> list[Block]:
    """The blocks (as of ``year``) that overlap the window."""
    x_lo, x_hi, y_lo, y_hi = win.bounds()
    found = (block(city, i, j, year, years) for i in road_range(city, x_lo, x_hi) for j in road_range(city, y_lo, y_hi))
    return [b for b in found if b.x1 > x_lo and b.x0 < x_hi and b.y1 > y_lo and b.y0 < y_hi]


def window_roads(city: City, win: Window) -> list[Road]:
    """The roads whose carriageway crosses the window."""
    x_lo, x_hi, y_lo, y_hi = win.bounds()
    out = []
    for axis, lo, hi in (("x", x_lo, x_hi), ("y", y_lo, y_hi)):
        for i in road_range(city, lo, hi):
            r = road(city, axis, i)
            if r.position + r.width / 2 > lo and r.position - r.width / 2 < hi:
                out.append(r)
    return out


@dataclass
class Layers:
    """The rendered world as co-registered rasters (top colour, side colour, height), the source of every modality."""

    top_rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]: what is seen from above
    side_rgb: np.ndarray  # (H, W, 3) float32: colour of vertical surfaces (facades, foliage)
    height: np.ndarray  # (H, W) float32 metres above the ground (negative = a pit)
    kind: np.ndarray  # (H, W) uint8 surface kind
    terrain: np.ndarray  # (H, W) float32 ground elevation, metres
    blocks: list[Block]


def rasterise(city: City, year: int, years: tuple[int, ...], win: Window) -> Layers:
    """The city in ``year`` over the window: ground, roads, buildings and trees as co-registered layers."""
    h = win.px
    top = np.empty((h, h, 3), np.float32)
    top[:] = np.array(GROUND_RGB["pavement"], np.float32) / 255
    side = top.copy()
    height = np.zeros((h, h), np.float32)
    kind = np.full((h, h), SIDEWALK, np.uint8)
    x_lo, x_hi, y_lo, y_hi = win.bounds()
    xs, ys = road_range(city, x_lo, x_hi), road_range(city, y_lo, y_hi)

    def paint(box: tuple[float, float, float, float], rgb: tuple[int, int, int], k: int) -> None:
        sl = win.pixel_slice(*box)
        if sl is not None:
            top[sl] = np.array(rgb, np.float32) / 255
            side[sl] = top[sl]
            kind[sl] = k

    blocks = window_blocks(city, year, years, win)
    trees: list[Tree] = []
    for b in blocks:
        ground, k = USE_GROUND[b.use]
        paint((b.x0, b.y0, b.x1, b.y1), GROUND_RGB[ground], k)
        if b.use == "construction":
            sl = win.pixel_slice(b.x0 + 4, b.y0 + 4, b.x1 - 4, b.y1 - 4)
            if sl is not None:
                height[sl] = -4.0  # an excavation pit
        trees.extend(b.trees)
    for axis, idx in (("x", xs), ("y", ys)):
        for i in idx:
            r = road(city, axis, i)
            lo, hi = (y_lo, y_hi) if axis == "x" else (x_lo, x_hi)
            a, c = r.position - r.width / 2, r.position + r.width / 2
            paint((a, lo, c, hi) if axis == "x" else (lo, a, hi, c), GROUND_RGB["road"], ROAD)
            m0, m1 = r.position - 0.2, r.position + 0.2  # the centre line
            paint((m0, lo, m1, hi) if axis == "x" else (lo, m0, hi, m1), GROUND_RGB["marking"], MARKING)
            trees.extend(street_trees(city, r, lo, hi))
    for b in blocks:
        for bd in b.buildings:
            sl = win.pixel_slice(bd.x0, bd.y0, bd.x1, bd.y1)
            if sl is None:
                continue
            top[sl] = np.array(bd.roof, np.float32) / 255
            side[sl] = np.array(bd.facade, np.float32) / 255
            height[sl] = bd.height
            kind[sl] = BUILDING
    _paint_trees(win, trees, top, side, height, kind)
    xc, yc = win.centres()
    return Layers(top, side, height, kind, terrain_m(city, xc, yc).astype(np.float32), blocks)


def _paint_trees(
    win: Window, trees: list[Tree], top: np.ndarray, side: np.ndarray, height: np.ndarray, kind: np.ndarray
) -> None:
    """Dome-shaped canopies; a canopy over a low roof hides it, a tall roof stays above."""
    for t in trees:
        sl = win.pixel_slice(t.x - t.radius, t.y - t.radius, t.x + t.radius, t.y + t.radius)
        if sl is None:
            continue
        rows = win.cy + win.size_m / 2 - (np.arange(sl[0].start, sl[0].stop) + 0.5) * win.res
        cols = win.cx - win.size_m / 2 + (np.arange(sl[1].start, sl[1].stop) + 0.5) * win.res
        d2 = (cols[None, :] - t.x) ** 2 + (rows[:, None] - t.y) ** 2
        dome = t.height * np.sqrt(np.clip(1 - d2 / t.radius**2, 0, None)) * (d2 <= t.radius**2)
        above = dome > height[sl]
        shade = (0.16 + 0.10 * np.sqrt(np.clip(1 - d2 / t.radius**2, 0, None)))[..., None]
        green = np.concatenate([shade * 0.8, shade * 2.1 + 0.1, shade * 0.7], axis=-1)
        top[sl] = np.where(above[..., None], green, top[sl])
        side[sl] = np.where(above[..., None], green, side[sl])
        height[sl] = np.where(above, dome, height[sl])
        kind[sl] = np.where(above, TREE, kind[sl])
