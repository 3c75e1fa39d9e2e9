"""Geometric views and augmentations: perspective crops of street images, flips and rotations from above."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..geo.distance import from_local_metres


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-to-world rotation: yaw clockwise from north, then pitch up (world axes: east, north, up)."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    forward = np.array([math.sin(y) * math.cos(p), math.cos(y) * math.cos(p), math.sin(p)])
    right = np.array([math.cos(y), -math.sin(y), 0.0])
    up = np.cross(right, forward)
    return np.stack([right, up, forward], axis=1)  # columns: camera x (right), y (up), z (forward)


def perspective_view(
    image: np.ndarray,
    *,
    projection: str,
    source_heading_deg: float,
    source_fov_deg: float,
    yaw_deg: float,
    pitch_deg: float,
    fov_deg: float,
    size: int,
) -> np.ndarray:
    """A ``(size, size, 3)`` pinhole view looking at compass ``yaw_deg``, ``pitch_deg`` up, ``fov_deg`` wide.

    ``image`` is an equirectangular 360 x 180 panorama whose centre column faces
    ``source_heading_deg``, or a perspective photo facing it with ``source_fov_deg``.
    Pixels outside a photo's field of view are black. Bilinear sampling.
    """
    h, w = image.shape[:2]
    if projection == "equirectangular":
        # The sampling grid depends only on the view relative to the panorama: cached, so canonical views
        # (embedding, evaluation, serving, un-augmented training) cost four gathers, not the trigonometry.
        taps = _panorama_taps(round(yaw_deg - source_heading_deg, 6), pitch_deg, fov_deg, size, h, w)
        return taps.sample(image)
    f = 0.5 / math.tan(math.radians(fov_deg) / 2)
    if image.dtype == np.uint8:
        fast = _photo_view_homography(image, source_heading_deg, source_fov_deg, yaw_deg, pitch_deg, f, size)
        if fast is not None:
            return fast
    rays = _camera_rays(yaw_deg, pitch_deg, fov_deg, size)
    cam = rays @ _rotation(source_heading_deg, 0.0)  # world -> source camera frame
    fs = 0.5 / math.tan(math.radians(source_fov_deg) / 2)
    z = np.where(cam[..., 2] > 1e-6, cam[..., 2], np.nan)
    col = (cam[..., 0] / z * fs + 0.5) * w - 0.5
    row = (0.5 - cam[..., 1] / z * fs * w / h) * h - 0.5
    return bilinear(image, row, col, wrap_cols=False)


def _camera_rays(yaw_deg: float, pitch_deg: float, fov_deg: float, size: int) -> np.ndarray:
    """``(S, S, 3)`` world directions (east, north, up) of a pinhole camera's pixel centres."""
    f = 0.5 / math.tan(math.radians(fov_deg) / 2)
    grid = (np.arange(size) + 0.5) / size - 0.5  # (S,)
    u, v = np.meshgrid(grid, -grid)  # image plane, v up
    return np.stack([u, v, np.full_like(u, f)], axis=-1) @ _rotation(yaw_deg, pitch_deg).T


@dataclass(frozen=True)
class BilinearTaps:
    """Precomputed bilinear sampling: the four neighbours' flat indices and weights of every output pixel."""

    index: np.ndarray  # (4, S, S) int64 into the source's (H * W) pixels
    weight: np.ndarray  # (4, S, S, 1) float32

    def sample(self, image: np.ndarray) -> np.ndarray:
        """The ``(S, S, C)`` view of an ``(H, W, C)`` image through these taps, in the image's dtype."""
        flat = image.reshape(-1, image.shape[2])
        out = np.asarray(sum(flat[i].astype(np.float32) * w for i, w in zip(self.index, self.weight, strict=True)))
        # float32 weights sum to 1 within an ulp: round, or a white pixel truncates to 254
        return (np.rint(out) if np.issubdtype(image.dtype, np.integer) else out).astype(image.dtype)


@lru_cache(maxsize=64)
def _panorama_taps(rel_yaw_deg: float, pitch_deg: float, fov_deg: float, size: int, h: int, w: int) -> BilinearTaps:
    """Taps of a pinhole view ``rel_yaw_deg`` clockwise of an equirectangular panorama's centre column."""
    rays = _camera_rays(rel_yaw_deg, pitch_deg, fov_deg, size)
    azimuth = np.degrees(np.arctan2(rays[..., 0], rays[..., 1]))  # -180..180 from the centre column
    elevation = np.degrees(np.arcsin(rays[..., 2] / np.linalg.norm(rays, axis=-1)))
    col = ((azimuth + 180.0) % 360.0) / 360.0 * w - 0.5
    row = np.clip((90.0 - elevation) / 180.0 * h - 0.5, 0, h - 1)
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = (row - r0).astype(np.float32), (col - c0).astype(np.float32)
    r1 = np.minimum(r0 + 1, h - 1)
    index = np.stack([r0 * w + c0 % w, r0 * w + (c0 + 1) % w, r1 * w + c0 % w, r1 * w + (c0 + 1) % w])
    weight = np.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])[..., None]
    return BilinearTaps(index, weight)


def _photo_view_homography(
    image: np.ndarray, source_heading_deg: float, source_fov_deg: float, yaw_deg: float, pitch_deg: float,
    f: float, size: int,
) -> np.ndarray | None:  # fmt: skip
    """A photo re-viewed from the same point is a homography: one C call (PIL) instead of numpy sampling.

    Same mapping as the general path (bilinear, black outside the photo); ``None`` when part
    of the view looks behind the photo's camera, where a homography would mirror it.
    """
    from PIL import Image

    h, w = image.shape[:2]
    fs = 0.5 / math.tan(math.radians(source_fov_deg) / 2)
    # output pixel coordinates (PIL: centres at +0.5) -> image plane (u, v, f) -> world ray -> source camera
    plane = np.array([[1.0 / size, 0.0, -0.5], [0.0, -1.0 / size, 0.5], [0.0, 0.0, f]])
    to_cam = _rotation(source_heading_deg, 0.0).T @ _rotation(yaw_deg, pitch_deg) @ plane
    corners = to_cam @ np.array([[0.0, size, 0.0, size], [0.0, 0.0, size, size], [1.0, 1.0, 1.0, 1.0]])
    if corners[2].min() <= 1e-6:  # cam z is linear in the view: positive at the corners = positive everywhere
        return None
    intrinsics = np.array([[fs * w, 0.0, 0.5 * w], [0.0, -fs * w, 0.5 * h], [0.0, 0.0, 1.0]])
    hom = intrinsics @ to_cam
    coeffs = (hom / hom[2, 2]).reshape(-1)[:8]
    view = Image.fromarray(np.ascontiguousarray(image)).transform(
        (size, size), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )
    return np.asarray(view)


def bilinear(image: np.ndarray, row: np.ndarray, col: np.ndarray, *, wrap_cols: bool) -> np.ndarray:
    """Sample ``image`` (H, W, C) at fractional pixel centres; outside (or NaN) -> 0."""
    h, w = image.shape[:2]
    valid = np.isfinite(row) & np.isfinite(col)
    row, col = np.nan_to_num(row), np.nan_to_num(col)
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = (row - r0)[..., None], (col - c0)[..., None]
    if not wrap_cols:
        valid &= (col >= -0.5) & (col <= w - 0.5) & (row >= -0.5) & (row <= h - 0.5)
    img = image.astype(np.float32)

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        c = c % w if wrap_cols else np.clip(c, 0, w - 1)
        return img[np.clip(r, 0, h - 1), c]

    out = (at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc) * (1 - fr) + (
        at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
    ) * fr
    return np.where(valid[..., None], out, 0.0).astype(image.dtype)


def flip_rotate(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    """The same dihedral transform (``k`` quarter turns, then a left-right flip) of co-registered (H, W, ...) arrays."""
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W[, C]) -> (size, size[, C]) by area averaging when shrinking, bilinear when growing (float32)."""
    h, w = image.shape[:2]
    arr = image.astype(np.float32)
    if h == size and w == size:
        return arr
    if h % size == 0 and w % size == 0:  # exact shrink: block mean
        fh, fw = h // size, w // size
        return arr.reshape(size, fh, size, fw, *arr.shape[2:]).mean(axis=(1, 3))
    grid_r = (np.arange(size) + 0.5) * h / size - 0.5
    grid_c = (np.arange(size) + 0.5) * w / size - 0.5
    rr, cc = np.meshgrid(grid_r, grid_c, indexing="ij")
    if arr.ndim == 2:
        return bilinear(arr[..., None], rr, cc, wrap_cols=False)[..., 0]
    return bilinear(arr, rr, cc, wrap_cols=False)


def photometric_jitter(
    images: np.ndarray, present: np.ndarray, rng: np.random.Generator, *, max_gain: float, max_shift: float
) -> np.ndarray:
    """``(n, C, H, W)`` images in [0, 1] with each channel scaled by ``1 +- max_gain`` and shifted by ``+- max_shift``.

    One draw per sample: the whole image changes as another year's flight or camera would
    change it (white balance, exposure), which the two or three training years of a place
    cannot show a model. Absent rows (``present`` false) stay zero.
    """
    n, channels = images.shape[:2]
    gain = 1.0 + rng.uniform(-max_gain, max_gain, (n, channels, 1, 1))
    shift = rng.uniform(-max_shift, max_shift, (n, 1, 1, 1))
    out = np.clip(images * gain + shift, 0.0, 1.0).astype(np.float32)
    out[~present] = 0.0
    return out


def jitter_coords(latlon: np.ndarray, rng: np.random.Generator, *, max_km: float) -> np.ndarray:
    """``(n, 2)`` lat/lon degrees, each moved to a uniform point of the disc of radius ``max_km`` around it.

    A tile or a text is as true of a point a few km off as of its centre: without the
    jitter the location encoder can learn each training place as an isolated point
    (sharp where places are, arbitrary between them). Local flat-Earth offsets (exact
    enough for tens of km); latitudes are clamped at the poles, longitudes wrapped.
    """
    n = len(latlon)
    radius_m = 1000.0 * max_km * np.sqrt(rng.uniform(0.0, 1.0, n))  # sqrt: uniform over the disc's area
    bearing = rng.uniform(0.0, 2.0 * np.pi, n)
    lat0 = np.clip(latlon[:, 0].astype(np.float64), -89.9, 89.9)
    lat, lon = from_local_metres(radius_m * np.sin(bearing), radius_m * np.cos(bearing), lat0, latlon[:, 1])
    lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    return np.stack([np.clip(lat, -90.0, 90.0), lon], axis=1).astype(latlon.dtype)
