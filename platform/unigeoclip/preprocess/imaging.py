"""Encoding and decoding of image bytes, in one place for every source, the reader and the server."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

MAX_PIXELS = 64_000_000  # refuse decompression bombs before decoding


def encode_png(rgb: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 -> PNG bytes (lossless, so content hashes are stable across runs)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def open_rgb(data: bytes, *, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] | None = None) -> Image.Image:
    """Encoded PNG/JPEG/... -> a decoded RGB PIL image, or :class:`InputError` saying why it is unreadable.

    The pixel count is checked from the header, before anything is decoded. ``formats`` (Pillow's names,
    e.g. ``("PNG", "JPEG")``) restricts which decoders may even look at the bytes.
    """
    try:
        with Image.open(io.BytesIO(data), formats=list(formats) if formats else None) as img:
            if img.width * img.height > max_pixels:
                raise InputError(f"image of {img.width}x{img.height} pixels exceeds the limit of {max_pixels} pixels")
            return img.convert("RGB")
    except Image.DecompressionBombError:  # Pillow's own guard, before ours, for headers past ~179 Mpx
        raise InputError(f"image's header declares more pixels than the limit of {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, InputError):
            raise
        if formats and isinstance(exc, UnidentifiedImageError):
            raise InputError(f"not a {', '.join(formats[:-1])} or {formats[-1]} image") from None
        raise InputError(f"not a readable image ({type(exc).__name__}: {exc})") from None


def decode_rgb(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded PNG/JPEG/... -> ``(H, W, 3)`` uint8, or :class:`InputError` saying why it is unreadable."""
    return np.asarray(open_rgb(data, max_pixels=max_pixels))
