"""Request inputs -> arrays, in two steps: ``prepare`` (the gateway) and ``model_input`` (the encoder).

``prepare`` decodes and checks what a client sent (base64 images, DSM arrays or GeoTIFF bytes,
text, coordinates) into plain arrays that do not depend on any model, so a bad input is refused
before it reaches a batch. ``model_input`` shapes them for one model exactly as the embedding job
shapes stored samples (the canonical, unaugmented view), so an item's own inputs reproduce its
stored vector. Nothing here opens a path: GeoTIFFs are read from memory with only the GTiff driver.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..modality import Modality
from ..preprocess.imaging import open_rgb
from ..preprocess.spec import PreprocessSpec
from ..preprocess.views import aerial_view, canonical_street_view, centre_square, chw, dsm_view
from ..samples.validate import DSM_RANGE_M, MIN_DSM_VALID
from .config import Limits
from .schemas import DSMInput, ImageInput, Query, StreetInput

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what the API documents; no other decoder sees request bytes
DSM_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
MAX_BLOCK_PIXELS = 1024 * 1024  # one GeoTIFF block (tile or strip) is read whole: bound it


@dataclass(frozen=True)
class StreetImage:
    """A decoded street-level image with how it was taken (projection, field of view)."""

    rgb: np.ndarray  # (H, W, 3) uint8
    projection: str
    fov_deg: float


Prepared = np.ndarray | str | StreetImage


def b64_bytes(text: str, what: str) -> bytes:
    """Strict base64 (line breaks tolerated, as ``base64`` tools wrap lines) -> bytes."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not valid base64") from None


def image_array(data: bytes, limits: Limits, what: str) -> np.ndarray:
    """PNG/JPEG bytes -> ``(H, W, 3)`` uint8; the pixel limit is checked from the header, before decoding."""
    try:
        return np.asarray(open_rgb(data, max_pixels=limits.max_image_pixels, formats=IMAGE_FORMATS))
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None


def dsm_from_heights(heights: list[list[float | None]], limits: Limits) -> np.ndarray:
    """A DSM sent as rows of heights -> ``(H, W)`` float32 (null -> NaN); refused if ragged, empty or too large."""
    rows = len(heights)
    cols = len(heights[0]) if rows else 0
    if rows == 0 or cols == 0 or any(len(r) != cols for r in heights):
        raise InputError("dsm.heights must be a non-empty rectangular 2-D array (rows of equal length)")
    if rows * cols > limits.max_dsm_pixels:
        raise InputError(f"dsm.heights has {rows}x{cols} values, over the limit of {limits.max_dsm_pixels}")
    return np.array(heights, dtype=np.float32)  # None -> NaN (no data)


def dsm_from_geotiff(data: bytes, limits: Limits) -> np.ndarray:
    """Band 1 of an in-memory GeoTIFF in metres; its nodata value and mask become NaN."""
    if not data.startswith(TIFF_MAGIC):
        raise InputError("dsm.geotiff_b64 is not a TIFF file (it must start with a TIFF header)")
    try:
        from rasterio.errors import RasterioError
        from rasterio.io import MemoryFile
    except ImportError:  # the 'files' extra: without it a GeoTIFF is refused, never a 500
        raise InputError(
            "this server cannot read dsm.geotiff_b64 (rasterio, the 'files' extra, is not installed): send "
            "dsm.heights instead, or install it on the server: pip install 'unigeoclip[files]'"
        ) from None

    try:
        with MemoryFile(data) as mem, mem.open(driver="GTiff") as ds:
            if ds.width * ds.height > limits.max_dsm_pixels:
                raise InputError(
                    f"dsm GeoTIFF is {ds.width}x{ds.height} pixels, over the limit of {limits.max_dsm_pixels}"
                )
            _check_dsm_layout(ds.count, ds.dtypes[0], ds.block_shapes[0])
            band = ds.read(1, masked=True)
    except InputError:
        raise
    except (RasterioError, OSError, ValueError, MemoryError) as exc:
        raise InputError(f"dsm.geotiff_b64 is not a readable GeoTIFF ({type(exc).__name__}: {exc})") from None
    return np.ma.filled(band.astype(np.float32), np.nan)


def _check_dsm_layout(bands: int, dtype: str, block: tuple[int, int]) -> None:
    """A DSM GeoTIFF is one band of real heights, in blocks small enough to read (checked before any pixel)."""
    if bands != 1:
        raise InputError(f"dsm GeoTIFF has {bands} bands; send one band of heights in metres")
    if dtype not in DSM_DTYPES:
        raise InputError(f"dsm GeoTIFF holds {dtype} values; heights must be one of {', '.join(DSM_DTYPES)}")
    if block[0] * block[1] > MAX_BLOCK_PIXELS:
        raise InputError(f"dsm GeoTIFF blocks of {block[0]}x{block[1]} pixels are over {MAX_BLOCK_PIXELS}: "
                         "tile it (gdal_translate -co TILED=YES)")  # fmt: skip


def check_dsm(dsm: np.ndarray) -> np.ndarray:
    """``dsm`` itself, once it has no infinite height, enough finite pixels and heights within ``DSM_RANGE_M``."""
    if np.isinf(dsm).any():
        raise InputError("dsm has infinite heights: use null (or NaN) for no data")
    valid = np.isfinite(dsm)
    if valid.mean() < MIN_DSM_VALID:
        raise InputError(f"dsm holds heights in {valid.mean():.0%} of its pixels; at least {MIN_DSM_VALID:.0%} needed")
    lo, hi = float(np.nanmin(dsm)), float(np.nanmax(dsm))
    if lo < DSM_RANGE_M[0] or hi > DSM_RANGE_M[1]:
        raise InputError(f"dsm heights span {lo:.0f}..{hi:.0f} m, outside {DSM_RANGE_M} m: wrong units or nodata?")
    return dsm


def prepare_one(modality: Modality, value: Any, limits: Limits) -> Prepared:
    """One modality's request input -> a model-independent array (or the text), checked against ``limits``."""
    if modality is Modality.TEXT:
        text = str(value)
        if len(text) > limits.max_text_chars:
            raise InputError(f"text has {len(text)} characters, over the limit of {limits.max_text_chars}")
        if not text.strip():
            raise InputError("text is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("text is not valid Unicode (it holds an unpaired surrogate)") from None
        return text
    if modality is Modality.COORDS:
        return np.array([value.lat_deg, value.lon_deg], dtype=np.float32)
    if modality is Modality.DSM:
        assert isinstance(value, DSMInput)
        if value.heights is not None:
            return check_dsm(dsm_from_heights(value.heights, limits))
        assert value.geotiff_b64 is not None
        return check_dsm(dsm_from_geotiff(b64_bytes(value.geotiff_b64, "dsm.geotiff_b64"), limits))
    assert isinstance(value, ImageInput)
    rgb = image_array(b64_bytes(value.image_b64, f"{modality.value}.image_b64"), limits, modality.value)
    if isinstance(value, StreetInput):
        if value.projection == "perspective" and value.fov_deg >= 179:
            raise InputError(f"street.fov_deg {value.fov_deg} is too wide for a perspective photo: "
                             "send a panorama as projection 'equirectangular'")  # fmt: skip
        return StreetImage(rgb, value.projection, value.fov_deg)
    return rgb


def prepare(query: Query, limits: Limits) -> dict[Modality, Prepared]:
    """Every modality of a query, prepared; the first bad one raises :class:`InputError` naming it."""
    return {m: prepare_one(m, getattr(query, m.value), limits) for m in query.modalities()}


# -- model side ------------------------------------------------------------------------------------


def model_input(modality: Modality, item: Prepared, spec: PreprocessSpec) -> Any:
    """A prepared input -> one row of the model's batch for ``modality`` (the text stays a string).

    The canonical view of :mod:`unigeoclip.preprocess.views`, as the embedding job takes it of stored
    samples; a client's image need not be square (its centre square is used) and has no heading.
    """
    if modality is Modality.AERIAL:
        assert isinstance(item, np.ndarray)
        return chw(aerial_view(centre_square(item), spec.aerial_size))
    if modality is Modality.STREET:
        assert isinstance(item, StreetImage)
        return chw(canonical_street_view(item.rgb, spec, projection=item.projection, heading_deg=0.0,
                                         fov_deg=item.fov_deg))  # fmt: skip
    if modality is Modality.DSM:
        assert isinstance(item, np.ndarray)
        return dsm_view(item, spec.dsm_size)[None]  # (1, S, S)
    return item
