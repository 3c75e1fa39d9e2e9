"""Stored content by sample id: what a search hit points at.

``GET /v1/items/{sample_id}/{modality}``: the aerial tile as stored (PNG or JPEG), a street view as stored, the
DSM rendered as a hillshade PNG, the text and the coordinates as JSON. ``GET /v1/items/{sample_id}``: the
sample's place, year, text and the modalities it holds (what a page shows beside a hit without asking for
what is absent). Rows are found by their ``sample_id`` only (checked against the id's alphabet before it
reaches a filter); a client never names a path.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import InputError, NotFoundError
from ..modality import Modality
from ..preprocess.imaging import encode_png
from ..samples.store import SampleStore

SAMPLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")  # "<cell>-<year>-<hash>"; no quote reaches the filter
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}
LIGHT_AZIMUTH_DEG, LIGHT_ALTITUDE_DEG = 315.0, 45.0  # the cartographers' light: from the north-west, 45 degrees up
COLUMNS = {
    Modality.AERIAL: ["aerial"],
    Modality.STREET: ["street"],
    Modality.DSM: ["dsm", "dsm_px"],
    Modality.TEXT: ["text"],
    Modality.COORDS: ["lat_deg", "lon_deg", "year", "cell_token"],
}


def media_type(data: bytes) -> str:
    """The image type of stored bytes, from their signature (``application/octet-stream`` if unknown)."""
    return next((t for sig, t in IMAGE_TYPES.items() if data.startswith(sig)), "application/octet-stream")


def hillshade_png(heights: np.ndarray) -> bytes:
    """A DSM (metres, NaN = no data) as a shaded-relief PNG: elevation tint times a north-west hillshade.

    The store keeps no ground spacing, so relief is scaled to the tile: the 95th percentile of the height
    steps is drawn as a 45-degree slope. No-data pixels are mid grey.
    """
    z = np.asarray(heights, dtype=np.float64)
    valid = np.isfinite(z)
    if not valid.any():
        return encode_png(np.full((*z.shape, 3), 128, np.uint8))
    filled = np.where(valid, z, np.nanmean(z))
    dz_dy, dz_dx = np.gradient(filled)
    step = float(np.percentile(np.hypot(dz_dx, dz_dy), 95)) or 1.0
    slope = np.arctan(np.hypot(dz_dx, dz_dy) / step)
    aspect = np.arctan2(-dz_dx, dz_dy)  # row 0 is north
    sun_az, sun_alt = np.radians(360.0 - LIGHT_AZIMUTH_DEG + 90.0), np.radians(LIGHT_ALTITUDE_DEG)
    shade = np.sin(sun_alt) * np.cos(slope) + np.cos(sun_alt) * np.sin(slope) * np.cos(sun_az - aspect)
    lo, hi = float(filled.min()), float(filled.max())
    t = (filled - lo) / (hi - lo) if hi > lo else np.zeros_like(filled)
    low, high = np.array([70.0, 130.0, 70.0]), np.array([235.0, 220.0, 200.0])  # green lowlands to pale heights
    rgb = (low + t[..., None] * (high - low)) * (0.35 + 0.65 * np.clip(shade, 0.0, 1.0))[..., None]
    rgb[~valid] = 128.0
    return encode_png(np.clip(rgb, 0, 255).astype(np.uint8))


class ItemReader:
    """Reads one sample's stored content of one modality from a sample store, by id."""

    def __init__(self, root: str) -> None:
        """``root``: the sample store the service's embeddings were made from."""
        self.store = SampleStore(root)

    def _row(self, sample_id: str, columns: list[str]) -> dict[str, Any]:
        if not SAMPLE_ID.fullmatch(sample_id):
            raise InputError(f"{sample_id[:40]!r} is not a sample id: use the sample_id of a search hit")
        if not self.store.has_samples():
            raise NotFoundError(f"sample {sample_id} is not in this service's sample store (it holds no samples)")
        rows = self.store.samples().to_table(columns=columns, filter=f"sample_id = '{sample_id}'", limit=1)
        if rows.num_rows == 0:
            raise NotFoundError(f"sample {sample_id} is not in this service's sample store")
        row: dict[str, Any] = rows.to_pylist()[0]
        return row

    def summary(self, sample_id: str) -> dict[str, Any]:
        """The sample's place, year, text (None when it has none) and the modalities it holds."""
        present = [f"{m.value}_present" for m in Modality]
        row = self._row(sample_id, [*COLUMNS[Modality.COORDS], "text", *present])
        held = [m.value for m in Modality if row.pop(f"{m.value}_present")]
        return {"sample_id": sample_id, **row, "modalities": held}

    def read(self, sample_id: str, modality: str, *, view: int = 0) -> tuple[bytes | dict[str, Any], str]:
        """``(body, media type)``: image bytes, or a dict for text and coordinates.

        Raises :class:`InputError` for a malformed id, an unknown modality or a bad view, and
        :class:`NotFoundError` for an id the store does not hold, or a sample without that modality.
        """
        if not SAMPLE_ID.fullmatch(sample_id):
            raise InputError(f"{sample_id[:40]!r} is not a sample id: use the sample_id of a search hit")
        try:
            wanted = Modality(modality)
        except ValueError:
            raise InputError(
                f"unknown modality {modality!r}: use one of {', '.join(m.value for m in Modality)}"
            ) from None
        if not self.store.has_samples():
            raise NotFoundError(f"sample {sample_id} is not in this service's sample store (it holds no samples)")
        rows = self.store.samples().to_table(columns=COLUMNS[wanted], filter=f"sample_id = '{sample_id}'", limit=1)
        if rows.num_rows == 0:
            raise NotFoundError(f"sample {sample_id} is not in this service's sample store")
        row = rows.to_pylist()[0]
        absent = NotFoundError(f"sample {sample_id} has no {wanted.value}")
        if wanted is Modality.AERIAL:
            if row["aerial"] is None:
                raise absent
            return row["aerial"], media_type(row["aerial"])
        if wanted is Modality.STREET:
            views = row["street"] or []
            if not views:
                raise absent
            if not 0 <= view < len(views):
                raise InputError(f"view {view} is out of range: sample {sample_id} has views 0..{len(views) - 1}")
            return views[view]["image"], media_type(views[view]["image"])
        if wanted is Modality.DSM:
            if row["dsm"] is None:
                raise absent
            px = int(row["dsm_px"])
            heights = np.array([np.nan if h is None else h for h in row["dsm"]], np.float32).reshape(px, px)
            return hillshade_png(heights), "image/png"
        if wanted is Modality.TEXT:
            if row["text"] is None:
                raise absent
            return {"sample_id": sample_id, "text": row["text"]}, "application/json"
        return {"sample_id": sample_id, **row}, "application/json"
