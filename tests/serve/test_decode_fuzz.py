"""A format fuzz of what the gateway decodes: mutated images of seven formats, truncated PNGs behind large headers,
GeoTIFFs of every layout GDAL writes (compressions, BigTIFF, many bands, several IFDs), mutated too.

``prepare`` is the gateway's decoding step: it must either return model inputs or raise ``InputError``
(a 422 that says what was wrong). Anything else would be a 500. The live service runs the same function
(``tests/serve/test_serve.py`` sends a sample of these bodies over HTTP).
"""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from unigeoclip.errors import InputError
from unigeoclip.serve import Limits
from unigeoclip.serve.decode import prepare
from unigeoclip.serve.schemas import Query

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning", "ignore::UserWarning")

LIMITS = Limits(max_image_pixels=128 * 128, max_dsm_pixels=64 * 64)
FUZZ = settings(max_examples=1_500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP", "ICO")


def _image_seed(fmt: str, side: int = 24) -> bytes:
    rgb = np.random.default_rng(len(fmt)).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _image_seed(fmt) for fmt in IMAGE_FORMATS}


def _geotiff(bands: int, dtype: str, **profile: object) -> bytes:
    from rasterio.io import MemoryFile

    heights = np.random.default_rng(bands).uniform(0, 900, (bands, 32, 32)).astype(dtype)
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=32, height=32, count=bands, dtype=dtype, **profile) as ds:
            ds.write(heights)
            if profile.get("overviews"):
                ds.build_overviews([2, 4])  # more IFDs in the same file
        return bytes(mem.read())


TIFF_SEEDS = {
    "plain": _geotiff(1, "float32"),
    "deflate": _geotiff(1, "float32", compress="deflate"),
    "lzw-predictor": _geotiff(1, "float32", compress="lzw", predictor=3),
    "packbits-int16": _geotiff(1, "int16", compress="packbits"),
    "zstd-tiled": _geotiff(1, "float32", compress="zstd", tiled=True, blockxsize=16, blockysize=16),
    "bigtiff": _geotiff(1, "float32", BIGTIFF="YES"),
    "many-bands": _geotiff(40, "uint8"),
    "overviews": _geotiff(1, "float32", overviews=True),
}


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips, overwrites, cuts and splices of ``seed``: the shapes corruption and crafted files take."""
    n = len(seed)
    flip = st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
        lambda p: seed[: p[0]] + bytes([seed[p[0]] ^ p[1]]) + seed[p[0] + 1 :]
    )
    overwrite = st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=16)).map(
        lambda p: seed[: p[0]] + p[1] + seed[p[0] + len(p[1]) :]
    )
    cut = st.integers(0, n - 1).map(lambda i: seed[:i])
    splice = st.tuples(st.integers(0, n), st.binary(max_size=64)).map(lambda p: seed[: p[0]] + p[1] + seed[p[0] :])
    one = st.one_of(flip, overwrite, cut, splice)
    return st.one_of(one, st.tuples(one, st.integers(0, 3)).map(lambda p: p[0]))


def _decodes_or_refuses(query: dict[str, object]) -> None:
    # InputError or ValidationError is a 422 that says what was wrong; any other exception fails (it would be a 500)
    with contextlib.suppress(InputError, ValidationError):
        prepare(Query.model_validate(query), LIMITS)


@FUZZ
@given(data=st.sampled_from(IMAGE_FORMATS).flatmap(lambda fmt: _mutations(SEEDS[fmt])), modality=st.sampled_from(
    ["aerial", "street"]))  # fmt: skip
def test_mutated_images_of_seven_formats_decode_or_are_refused(data: bytes, modality: str) -> None:
    _decodes_or_refuses({modality: {"image_b64": base64.b64encode(data).decode()}})


def _png_header(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@FUZZ
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1), rows=st.integers(0, 8))
def test_a_png_with_truncated_data_behind_a_large_header_is_refused_from_the_header(
    width: int, height: int, rows: int
) -> None:
    """A header declaring up to 2^31 x 2^31 pixels over a few rows of data: past the pixel limit it is refused from
    the header, before any buffer of the declared size exists; within it, it decodes or is refused."""
    assume(rows < height)  # fewer rows of data than the header declares
    idat = zlib.compress((b"\x00" + b"\x80" * 3 * min(width, 64)) * rows)
    query = {"aerial": {"image_b64": base64.b64encode(_png_header(width, height, idat)).decode()}}
    if width * height > LIMITS.max_image_pixels:
        with pytest.raises(InputError, match="the limit of 16384 pixels"):
            prepare(Query.model_validate(query), LIMITS)
    else:
        _decodes_or_refuses(query)


@FUZZ
@given(data=st.sampled_from(sorted(TIFF_SEEDS)).flatmap(lambda name: _mutations(TIFF_SEEDS[name])))
def test_mutated_geotiffs_of_every_layout_decode_or_are_refused(data: bytes) -> None:
    _decodes_or_refuses({"dsm": {"geotiff_b64": base64.b64encode(data).decode()}})


@pytest.mark.parametrize("name", sorted(TIFF_SEEDS))
def test_every_geotiff_layout_seed_is_read_or_refused_by_its_layout(name: str) -> None:
    """The unmutated seeds: one-band files decode to their 32 x 32 heights; the 40-band file is refused by name."""
    query = Query.model_validate({"dsm": {"geotiff_b64": base64.b64encode(TIFF_SEEDS[name]).decode()}})
    if name == "many-bands":
        with pytest.raises(InputError, match="has 40 bands"):
            prepare(query, LIMITS)
    else:
        (heights,) = prepare(query, LIMITS).values()
        assert np.shape(heights) == (32, 32)
