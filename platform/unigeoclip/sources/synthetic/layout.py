"""The latent layout of a synthetic city: roads, districts, blocks, buildings, trees, and their changes.

Everything is a pure function of (world seed, city, grid indices, year), so any window
of any city can be laid out on its own: that is what lets the world scale from a few
cells to millions, rendered in parallel with no shared state.

Frame: a city has a local metric frame (x east, y north, metres) around its anchor.
Roads are a jittered grid: north-south roads at ``x = road_position("x", i)`` and
east-west roads at ``y = road_position("y", j)``; block ``(i, j)`` lies between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from . import names
from .hashing import choice, uniform, unit

RGB = tuple[int, int, int]

SIDEWALK_M = 2.5
DISTRICT_BLOCKS = 5  # a district spans about 5 x 5 blocks

ROOFS: dict[str, tuple[RGB, ...]] = {
    "historic": ((172, 84, 62), (150, 72, 56), (86, 88, 98), (128, 64, 50)),
    "residential": ((122, 122, 128), (164, 94, 72), (92, 92, 98), (200, 196, 186)),
    "commercial": ((186, 186, 192), (140, 150, 162), (72, 76, 82), (222, 222, 216)),
    "industrial": ((160, 166, 172), (118, 130, 124), (192, 192, 198), (140, 120, 100)),
    "suburban": ((168, 88, 66), (96, 96, 104), (150, 140, 120), (120, 60, 50)),
}
FACADES: tuple[RGB, ...] = (
    (152, 76, 56), (226, 212, 176), (202, 152, 82), (236, 236, 230), (150, 150, 156),
    (100, 132, 162), (222, 172, 172), (142, 172, 142), (180, 110, 80), (90, 96, 110),
)  # fmt: skip

# district profile -> (land-use weights, lot width range m, setback range m, height range m, perimeter blocks)
PROFILES: dict[str, tuple[dict[str, float], tuple[float, float], tuple[float, float], tuple[float, float], bool]] = {
    "historic": (
        {"commercial": 0.42, "residential": 0.36, "plaza": 0.08, "park": 0.08, "water": 0.06},
        (12, 18), (0, 1), (10, 22), True,
    ),
    "residential": (
        {"residential": 0.68, "park": 0.16, "commercial": 0.1, "plaza": 0.06}, (16, 26), (2, 5), (9, 24), False
    ),
    "commercial": (
        {"commercial": 0.66, "residential": 0.18, "plaza": 0.1, "park": 0.06}, (24, 40), (1, 3), (14, 48), False
    ),
    "industrial": (
        {"industrial": 0.7, "water": 0.14, "residential": 0.1, "park": 0.06}, (40, 70), (3, 6), (6, 14), False
    ),
    "suburban": ({"residential": 0.76, "park": 0.19, "commercial": 0.05}, (14, 20), (3, 6), (5, 9), False),
}  # fmt: skip

# what a block of a given use turns into when it changes
CHANGES: dict[str, tuple[str, str]] = {
    "park": ("residential", "new housing was built on part of the former park"),
    "residential": ("tower", "a new residential tower was completed"),
    "commercial": ("construction", "an office block was demolished and the site is under construction"),
    "industrial": ("residential", "the old warehouses were converted into apartments"),
    "plaza": ("commercial", "a market hall now stands on the former square"),
}


@dataclass(frozen=True)
class City:
    """One procedural city: its name, where it lies (an anchor of a real metro area), its block size and its hills."""

    seed: int
    index: int
    name: str
    lat0: float
    lon0: float
    block_m: float
    hill_amp_m: float
    hill_wavelength_m: float
    hill_phase: float


def make_city(seed: int, index: int) -> City:
    """City ``index`` of world ``seed``, at a real metro anchor (shifted half a degree per lap beyond the list)."""
    anchor = names.METRO_ANCHORS[index % len(names.METRO_ANCHORS)]
    lap = index // len(names.METRO_ANCHORS)  # beyond the anchor list, shift further cities by half a degree
    syllables = [choice(names.CITY_SYLLABLES, seed, index, "name", k) for k in range(2)]
    name = (syllables[0] + syllables[1].lower() + choice(names.CITY_SUFFIXES, seed, index, "suffix")).title()
    return City(
        seed=seed,
        index=index,
        name=name,
        lat0=anchor[0] + 0.5 * lap,
        lon0=anchor[1] + 0.5 * lap,
        block_m=uniform(85.0, 125.0, seed, index, "block"),
        hill_amp_m=uniform(0.0, 18.0, seed, index, "hill"),
        hill_wavelength_m=uniform(900.0, 2500.0, seed, index, "wave"),
        hill_phase=uniform(0.0, 2 * math.pi, seed, index, "phase"),
    )


@dataclass(frozen=True)
class Road:
    """A straight road of the city grid, north-south or east-west."""

    axis: str  # "x": runs north-south at x = position; "y": runs east-west at y = position
    index: int
    position: float
    width: float
    name: str
    tree_lined: bool


@lru_cache(maxsize=65536)
def road(city: City, axis: str, i: int) -> Road:
    """Road ``i`` of ``axis`` (``x``: north-south, ``y``: east-west): jittered position, width, name, trees; cached."""
    jitter = (unit(city.seed, city.index, axis, i, "jitter") - 0.5) * 0.3 * city.block_m
    avenue = unit(city.seed, city.index, axis, i, "avenue") < 0.2
    kinds = names.STREET_KINDS_NS if axis == "x" else names.STREET_KINDS_EW
    kind = "Avenue" if avenue and axis == "x" else choice(kinds, city.seed, city.index, axis, i, "kind")
    return Road(
        axis=axis,
        index=i,
        position=i * city.block_m + jitter,
        width=18.0 if avenue else uniform(9.0, 12.0, city.seed, city.index, axis, i, "width"),
        name=f"{choice(names.STREET_NAMES, city.seed, city.index, axis, i, 'name')} {kind}",
        tree_lined=avenue or unit(city.seed, city.index, axis, i, "trees") < 0.3,
    )


def road_range(city: City, lo: float, hi: float) -> range:
    """Indices of the roads of one axis whose positions may fall in [lo, hi] (with a block of margin)."""
    return range(math.floor(lo / city.block_m) - 1, math.ceil(hi / city.block_m) + 2)


@dataclass(frozen=True)
class District:
    """A named area whose profile (historic, residential, commercial, industrial, suburban) sets its land use."""

    name: str
    profile: str


@lru_cache(maxsize=4096)
def district(city: City, di: int, dj: int) -> District:
    """The district at block-grid position (``di``, ``dj``): its name and land-use profile."""
    return District(
        name=choice(names.DISTRICT_NAMES, city.seed, city.index, di, dj, "district"),
        profile=choice(tuple(PROFILES), city.seed, city.index, di, dj, "profile"),
    )


@dataclass(frozen=True)
class Building:
    """An axis-aligned building: footprint, height, roof and facade colours, kind and an optional name."""

    x0: float
    y0: float
    x1: float
    y1: float
    height: float
    roof: RGB
    facade: RGB
    kind: str  # house, apartments, shop, tower, warehouse, landmark, hall
    name: str | None = None


@dataclass(frozen=True)
class Tree:
    """A tree: a crown of some radius and height at a point."""

    x: float
    y: float
    radius: float
    height: float


@dataclass(frozen=True)
class Block:
    """One block between roads: its use, district, buildings and trees, and what changed there by this year."""

    i: int
    j: int
    x0: float
    y0: float
    x1: float
    y1: float
    use: str  # residential, commercial, industrial, park, water, plaza, construction, tower
    district: District
    buildings: tuple[Building, ...]
    trees: tuple[Tree, ...]
    name: str | None  # park, canal or square name
    change: str | None  # what changed here by this year (for the text)


def _weighted(weights: dict[str, float], *keys: object) -> str:
    u, acc = unit(*keys), 0.0
    for option, w in weights.items():
        acc += w
        if u < acc:
            return option
    return next(iter(weights))


def block(city: City, i: int, j: int, year: int, years: tuple[int, ...]) -> Block:
    """Block ``(i, j)`` as it stands in ``year``."""
    return _block(city, i, j, year, years)


@lru_cache(maxsize=16384)
def _block(city: City, i: int, j: int, year: int, years: tuple[int, ...]) -> Block:
    west, east = road(city, "x", i), road(city, "x", i + 1)
    south, north = road(city, "y", j), road(city, "y", j + 1)
    x0, x1 = west.position + west.width / 2 + SIDEWALK_M, east.position - east.width / 2 - SIDEWALK_M
    y0, y1 = south.position + south.width / 2 + SIDEWALK_M, north.position - north.width / 2 - SIDEWALK_M
    dist = district(city, math.floor(i / DISTRICT_BLOCKS), math.floor(j / DISTRICT_BLOCKS))
    weights = PROFILES[dist.profile][0]
    use = _weighted(weights, city.seed, city.index, i, j, "use")
    key: tuple[object, ...] = (city.seed, city.index, i, j)
    change = None
    change_year = _change_year(key, years)
    if change_year is not None and year >= change_year and use in CHANGES:
        use, change = CHANGES[use]
        key = (*key, "after")
    buildings, trees = _contents(city, key, use, dist, (x0, y0, x1, y1), (west, east, south, north))
    return Block(i, j, x0, y0, x1, y1, use, dist, buildings, trees, _block_name(key, use), change)


def _change_year(key: tuple[object, ...], years: tuple[int, ...]) -> int | None:
    """About 15% of blocks change once, in one of the later years of the world."""
    if len(years) < 2 or unit(*key, "changes") >= 0.15:
        return None
    return sorted(years)[1 + int(unit(*key, "change-year") * (len(years) - 1))]


def _block_name(key: tuple[object, ...], use: str) -> str | None:
    if use == "park":
        return f"{choice(names.PARK_NAMES, *key, 'park')} {choice(('Park', 'Gardens', 'Green'), *key, 'park-kind')}"
    if use == "water":
        return choice(names.CANAL_NAMES, *key, "canal")
    if use == "plaza":
        return f"{choice(names.SURNAMES, *key, 'square')} {choice(('Square', 'Place', 'Plaza'), *key, 'sq-kind')}"
    return None


def _contents(
    city: City,
    key: tuple[object, ...],
    use: str,
    dist: District,
    extent: tuple[float, float, float, float],
    roads: tuple[Road, Road, Road, Road],
) -> tuple[tuple[Building, ...], tuple[Tree, ...]]:
    x0, y0, x1, y1 = extent
    if use in ("park", "plaza"):
        return _landmark(key, dist, extent) if use == "plaza" else (), _scatter_trees(
            key, extent, 0.5 if use == "park" else 0.08
        )
    if use in ("water", "construction") or x1 - x0 < 8 or y1 - y0 < 8:
        return (), ()
    _, lot_w, setback, heights, perimeter = PROFILES[dist.profile]
    if use == "industrial":
        lot_w, setback, heights, perimeter = (40, 70), (3, 6), (6, 14), False
    width = uniform(*lot_w, *key, "lot")
    nx = max(1, round((x1 - x0) / width))
    ny = max(1, round((y1 - y0) / (1.3 * width)))
    roofs = ROOFS[dist.profile if use != "industrial" else "industrial"]
    tower_lot = int(unit(*key, "tower-lot") * nx * ny) if use == "tower" else -1
    buildings: list[Building] = []
    trees: list[Tree] = []
    for a in range(nx):
        for b in range(ny):
            lot = (
                x0 + (x1 - x0) * a / nx,
                y0 + (y1 - y0) * b / ny,
                x0 + (x1 - x0) * (a + 1) / nx,
                y0 + (y1 - y0) * (b + 1) / ny,
            )
            edge = a in (0, nx - 1) or b in (0, ny - 1)
            lot_key = (*key, a, b)
            if (perimeter and not edge) or unit(*lot_key, "empty") < 0.08:
                trees.extend(_scatter_trees(lot_key, lot, 0.35))  # courtyard or garden
                continue
            s = uniform(*setback, *lot_key, "setback")
            kind, height = _kind_and_height(lot_key, use, heights, a * ny + b == tower_lot)
            buildings.append(
                Building(
                    lot[0] + s, lot[1] + s, lot[2] - s, lot[3] - s, height,
                    roof=choice(roofs, *lot_key, "roof"),
                    facade=choice(FACADES, *lot_key, "facade"),
                    kind=kind,
                    name=_building_name(lot_key, kind, edge),
                )
            )  # fmt: skip
    return _with_landmark(key, dist, buildings), tuple(trees)


def _with_landmark(key: tuple[object, ...], dist: District, buildings: list[Building]) -> tuple[Building, ...]:
    """About one block in ten has a named landmark: one of its low or mid-rise buildings."""
    candidates = [k for k, bd in enumerate(buildings) if bd.kind != "tower"]
    if not candidates or unit(*key, "landmark") >= 0.1:
        return tuple(buildings)
    k = candidates[int(unit(*key, "landmark-lot") * len(candidates))]
    name = choice(names.LANDMARKS, *key, dist.name, "landmark-name")
    buildings[k] = replace(buildings[k], kind="landmark", name=name)
    return tuple(buildings)


def _kind_and_height(
    lot_key: tuple[object, ...], use: str, heights: tuple[float, float], tower: bool
) -> tuple[str, float]:
    if tower or (use == "commercial" and unit(*lot_key, "tall") < 0.05):
        return "tower", uniform(60.0, 110.0, *lot_key, "tower-h")
    kind = {"commercial": "shop", "industrial": "warehouse", "tower": "apartments"}.get(use, "apartments")
    if use == "residential" and heights[1] < 10:
        kind = "house"
    if use == "commercial" and unit(*lot_key, "hall") < 0.1:
        kind = "hall"
    return kind, uniform(*heights, *lot_key, "height")


def _building_name(lot_key: tuple[object, ...], kind: str, edge: bool) -> str | None:
    if kind == "shop" and edge and unit(*lot_key, "shop") < 0.6:
        return f"{choice(names.SHOP_TYPES, *lot_key, 'shop-type')} {choice(names.SURNAMES, *lot_key, 'owner')}"
    if kind == "tower":
        return f"{choice(names.SURNAMES, *lot_key, 'tower-name')} Tower"
    return None


def _landmark(
    key: tuple[object, ...], dist: District, extent: tuple[float, float, float, float]
) -> tuple[Building, ...]:
    """A square sometimes has a fountain pavilion or monument in its middle."""
    if unit(*key, "monument") > 0.5:
        return ()
    cx, cy = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
    return (Building(cx - 4, cy - 4, cx + 4, cy + 4, 9.0, (200, 200, 190), (210, 205, 190), "monument", None),)


def _scatter_trees(
    key: tuple[object, ...], extent: tuple[float, float, float, float], density: float
) -> tuple[Tree, ...]:
    x0, y0, x1, y1 = extent
    step = 9.0
    trees = []
    for a in range(max(0, int((x1 - x0) // step))):
        for b in range(max(0, int((y1 - y0) // step))):
            if unit(*key, a, b, "tree") < density:
                trees.append(
                    Tree(
                        x0 + (a + uniform(0.2, 0.8, *key, a, b, "tx")) * step,
                        y0 + (b + uniform(0.2, 0.8, *key, a, b, "ty")) * step,
                        radius=uniform(2.5, 4.5, *key, a, b, "tr"),
                        height=uniform(7.0, 14.0, *key, a, b, "th"),
                    )
                )
    return tuple(trees)


def street_trees(city: City, r: Road, lo: float, hi: float) -> list[Tree]:
    """Trees along both kerbs of a tree-lined road, every 11 m, between ``lo`` and ``hi`` along it."""
    if not r.tree_lined:
        return []
    out = []
    for k in range(math.floor(lo / 11.0), math.ceil(hi / 11.0) + 1):
        along = k * 11.0 + 5.5
        for side in (-1, 1):
            if unit(city.seed, city.index, r.axis, r.index, k, side, "street-tree") < 0.15:
                continue  # a gap in the row
            across = r.position + side * (r.width / 2 + 1.2)
            x, y = (across, along) if r.axis == "x" else (along, across)
            out.append(Tree(x, y, radius=2.6, height=uniform(8.0, 12.0, city.seed, city.index, r.index, k, side)))
    return out


def terrain_m(city: City, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gentle hills: a few metres of relief over a kilometre or two."""
    w = 2 * math.pi / city.hill_wavelength_m
    return np.asarray(
        city.hill_amp_m
        * (np.sin(w * x + city.hill_phase) * np.cos(0.7 * w * y) + 0.5 * np.sin(0.5 * w * (x + y) + 1.3))
    )
