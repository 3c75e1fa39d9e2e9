"""Aerial tiles and DSMs of a synthetic city window, with the year's sun and colour."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .hashing import rng, uniform
from .layout import City
from .raster import Layers, Window, rasterise

SHADOW_MARGIN_M = 30.0


@dataclass(frozen=True)
class Look:
    """How a city looks in a year's imagery: flights differ in sun, season and camera."""

    sun_azimuth_deg: float
    sun_elevation_deg: float
    gain: tuple[float, float, float]
    brightness: float
    sky_tint: float


def look(city: City, year: int) -> Look:
    """Sun, colour gain, brightness and sky tint of the city's imagery in ``year`` (the same for every tile)."""
    key = (city.seed, city.index, year, "look")
    return Look(
        sun_azimuth_deg=uniform(120.0, 240.0, *key, "az"),
        sun_elevation_deg=uniform(30.0, 60.0, *key, "el"),
        gain=(uniform(0.9, 1.1, *key, "r"), uniform(0.92, 1.08, *key, "g"), uniform(0.9, 1.1, *key, "b")),
        brightness=uniform(-0.05, 0.05, *key, "bright"),
        sky_tint=uniform(0.0, 1.0, *key, "sky"),
    )


def _with_margin(cx: float, cy: float, tile_m: float, px: int, margin_m: float) -> tuple[Window, int]:
    res = tile_m / px
    pad = math.ceil(margin_m / res)
    return Window(cx, cy, res * (px + 2 * pad), px + 2 * pad), pad


def _shadows(layers: Layers, res: float, lk: Look) -> np.ndarray:
    """``(H, W)`` bool: pixels in a cast shadow (an obstacle toward the sun rises above the sun's ray)."""
    elevation = layers.terrain + layers.height
    az = math.radians(lk.sun_azimuth_deg)
    dx, dy = math.sin(az), math.cos(az)  # towards the sun: east, north
    tan_el = math.tan(math.radians(lk.sun_elevation_deg))
    shadow = np.zeros(elevation.shape, bool)
    h, w = elevation.shape
    for k in range(1, math.ceil(SHADOW_MARGIN_M / res) + 1):
        sc, sr = round(k * dx), -round(k * dy)  # pixel offset of the obstacle (rows grow southwards)
        if abs(sc) >= w or abs(sr) >= h:
            break
        obstacle = np.full(elevation.shape, -np.inf, np.float32)
        rs, rd = (slice(sr, h), slice(0, h - sr)) if sr >= 0 else (slice(0, h + sr), slice(-sr, h))
        cs, cd = (slice(sc, w), slice(0, w - sc)) if sc >= 0 else (slice(0, w + sc), slice(-sc, w))
        obstacle[rd, cd] = elevation[rs, cs]
        shadow |= obstacle - elevation > math.hypot(sc, sr) * res * tan_el
    return shadow


def aerial_tile(
    city: City, year: int, years: tuple[int, ...], cx: float, cy: float, tile_m: float, px: int
) -> np.ndarray:
    """``(px, px, 3)`` uint8 north-up orthophoto of the square of side ``tile_m`` centred on (cx, cy)."""
    win, pad = _with_margin(cx, cy, tile_m, px, SHADOW_MARGIN_M)
    layers = rasterise(city, year, years, win)
    lk = look(city, year)
    rgb = layers.top_rgb * np.where(_shadows(layers, win.res, lk), 0.55, 1.0)[..., None]
    noise = rng(city.seed, city.index, round(cx), round(cy), year, "aerial-noise").normal(0.0, 0.025, rgb.shape)
    rgb = (rgb + noise) * np.array(lk.gain, np.float32) + lk.brightness
    crop = rgb[pad : pad + px, pad : pad + px]
    return (np.clip(crop, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def dsm_tile(city: City, year: int, years: tuple[int, ...], cx: float, cy: float, tile_m: float, px: int) -> np.ndarray:
    """``(px, px)`` float32 surface heights, metres (terrain + buildings + canopy); the aerial tile's footprint."""
    layers = rasterise(city, year, years, Window(cx, cy, tile_m, px))
    return (layers.terrain + layers.height).astype(np.float32)
