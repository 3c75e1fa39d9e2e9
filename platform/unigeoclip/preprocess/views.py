"""Per-modality views: a decoded image, panorama or height grid -> the array a tower takes.

The canonical view (no augmentation: north up, looking along the view's heading, level, at
:meth:`PreprocessSpec.canonical_fov_deg`) is what the embedding job, the evaluation and the service
feed a model, so an item's own inputs sent to the service reproduce its stored vector bit for bit.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .augment import perspective_view, resize
from .spec import PreprocessSpec


def centre_square(rgb: np.ndarray) -> np.ndarray:
    """The largest centred square of an ``(H, W, 3)`` image (stored tiles are square already)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def aerial_view(rgb: np.ndarray, size: int, quarter_turns: int = 0, flip: bool = False) -> np.ndarray:
    """Rotate/flip, then area-resize to ``(size, size, 3)`` float32 in 0..255 (PIL's C code, BOX filter)."""
    img = Image.fromarray(rgb)
    for _ in range(quarter_turns):  # np.rot90 turns counter-clockwise, as ROTATE_90 does
        img = img.transpose(Image.Transpose.ROTATE_90)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32)


def canonical_street_view(
    rgb: np.ndarray, spec: PreprocessSpec, *, projection: str, heading_deg: float, fov_deg: float
) -> np.ndarray:
    """The canonical ``(S, S, 3)`` view of a street image: along its heading, level, canonical field of view."""
    return perspective_view(
        rgb,
        projection=projection,
        source_heading_deg=heading_deg,
        source_fov_deg=fov_deg,
        yaw_deg=heading_deg,
        pitch_deg=0.0,
        fov_deg=spec.canonical_fov_deg(projection, fov_deg),
        size=spec.street_size,
    )


def dsm_view(heights: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` heights in metres -> ``(size, size)`` float32 (NaN-aware area resize)."""
    return resize(heights, size)


def chw(view: np.ndarray) -> np.ndarray:
    """``(S, S, 3)`` in 0..255 -> ``(3, S, S)`` float32 in 0..1, the towers' layout."""
    return np.asarray(view, dtype=np.float32).transpose(2, 0, 1) / 255.0
