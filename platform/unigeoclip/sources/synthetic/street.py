"""Street-level panoramas rendered by marching rays over the layout's height field.

For every panorama column (a compass azimuth) the elevation angle of each object
along the ray is compared with the pixel rows' angles: the first object whose angle
reaches a row is what that pixel sees (a facade with windows, a tree, the road, or the
sky beyond). This is the classic height-field ("voxel space") renderer: cheap, and
faithful to the same heights the DSM shows.
"""

from __future__ import annotations

import math

import numpy as np

from .hashing import rng
from .raster import BUILDING, Layers, Window
from .render import Look

EYE_M = 2.5
VIEW_RADIUS_M = 110.0
STEPS = 160
_DIST = np.geomspace(0.8, VIEW_RADIUS_M, STEPS)  # finer near the camera


def panorama(layers: Layers, win: Window, x: float, y: float, heading_deg: float, size: tuple[int, int], lk: Look,
             noise_key: tuple[object, ...]) -> np.ndarray:  # fmt: skip
    """``(H, W, 3)`` uint8 equirectangular 360 x 180 view from (x, y); the centre column looks along ``heading_deg``."""
    width, height = size
    az = np.radians(heading_deg - 180.0 + (np.arange(width) + 0.5) * 360.0 / width)  # (W,)
    px = x + _DIST[None, :] * np.sin(az)[:, None]  # (W, K) world x along each ray
    py = y + _DIST[None, :] * np.cos(az)[:, None]
    cols = np.floor((px - (win.cx - win.size_m / 2)) / win.res).astype(np.int64)
    rows = np.floor(((win.cy + win.size_m / 2) - py) / win.res).astype(np.int64)
    inside = (cols >= 0) & (cols < win.px) & (rows >= 0) & (rows < win.px)
    cols, rows = np.clip(cols, 0, win.px - 1), np.clip(rows, 0, win.px - 1)
    obj_h = np.where(inside, layers.height[rows, cols], 0.0)  # (W, K)
    angle = np.arctan2(obj_h - EYE_M, _DIST[None, :])
    reach = np.maximum.accumulate(angle, axis=1)  # non-decreasing along each ray
    elev = np.radians(90.0 - (np.arange(height) + 0.5) * 180.0 / height)  # (H,) top row looks up
    hit = np.stack([np.searchsorted(reach[c], elev) for c in range(width)], axis=1)  # (H, W) step index, K = none
    sky = hit >= STEPS
    k = np.minimum(hit, STEPS - 1)
    ray = np.broadcast_to(np.arange(width), hit.shape)
    r_idx, c_idx = rows[ray, k], cols[ray, k]
    dist = _DIST[k]
    seen_h = obj_h[ray, k]
    is_object = seen_h > 0.3
    rgb = np.where(is_object[..., None], layers.side_rgb[r_idx, c_idx], layers.top_rgb[r_idx, c_idx])
    # windows: a storey every 3.2 m, window bands on facades, in a rhythm along the street
    hit_h = EYE_M + dist * np.tan(elev)[:, None]
    along = (px[ray, k] + py[ray, k]) % 3.6
    window = (layers.kind[r_idx, c_idx] == BUILDING) & (hit_h % 3.2 > 1.0) & (hit_h % 3.2 < 2.3) & (along < 2.2)
    window &= hit_h < seen_h - 0.4
    rgb = np.where(window[..., None], rgb * 0.35 + np.array([0.05, 0.08, 0.12]), rgb)
    facing = 0.78 + 0.22 * np.cos(az - math.radians(lk.sun_azimuth_deg))[None, :, None]
    rgb = np.where(is_object[..., None], rgb * facing, rgb)
    haze = 1.0 - np.exp(-dist / 260.0)[..., None]
    sky_rgb = _sky(elev, lk)[:, None, :]
    rgb = rgb * (1 - haze) + sky_rgb * 0.85 * haze
    rgb = np.where(sky[..., None], sky_rgb, rgb)
    rgb = rgb + rng(*noise_key).normal(0.0, 0.02, rgb.shape)
    return (np.clip(rgb * np.array(lk.gain), 0, 1) * 255 + 0.5).astype(np.uint8)


def _sky(elev: np.ndarray, lk: Look) -> np.ndarray:
    """``(H, 3)`` sky colour by elevation: pale at the horizon, deeper blue (or grey, on overcast years) above."""
    t = np.clip(elev / (math.pi / 2), 0, 1)[:, None]
    horizon = np.array([0.86, 0.89, 0.92])
    zenith = np.array([0.32, 0.50, 0.80]) * (1 - lk.sky_tint) + np.array([0.62, 0.64, 0.68]) * lk.sky_tint
    return horizon * (1 - t) + zenith * t
