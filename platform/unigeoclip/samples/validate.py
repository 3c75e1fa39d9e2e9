"""Turn a source's raw sample into a store row, or into rejects that say what was wrong.

Every source goes through here, so every store obeys the same rules: coordinates in
range, images that decode, DSMs of the configured size with plausible heights, texts
that say something. A bad modality is rejected on its own and the rest of the sample
is kept; a sample left with nothing but its coordinates is rejected whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import InputError
from ..geo.coords import LATLON_RANGE, valid_latlon
from ..geo.s2 import cell_token
from ..modality import ALL_MODALITIES, Modality
from ..preprocess.imaging import decode_rgb
from ..sources.base import RawSample, Reject, StreetView
from ..sources.street_select import farthest_point_views
from .splits import assign_split

MAX_TEXT_CHARS = 4000
DSM_RANGE_M = (-500.0, 9000.0)  # below the Dead Sea shore / above Everest's summit: a unit or nodata error
MIN_DSM_VALID = 0.5  # at least half the pixels must hold a height


@dataclass
class Checked:
    """The outcome for one raw sample: a row to store (or None) and the rejects found on the way."""

    row: dict[str, Any] | None
    rejects: list[Reject]


def digest(data: bytes) -> str:
    """The 32-hex-digit BLAKE2b digest of ``data``, of which content hashes and sample ids are built."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_sample(sample: RawSample, data: DataConfig, run_id: str) -> Checked:
    """Validate ``sample`` and build its row (schema: :data:`unigeoclip.samples.schema.SAMPLE_SCHEMA`)."""
    rejects: list[Reject] = []

    def reject(reason: str, detail: str, modality: str = "", token: str = "") -> None:
        rejects.append(Reject(sample.source, sample.source_id, reason, detail, modality, sample.year, token))

    lat, lon = sample.lat_deg, sample.lon_deg
    if not valid_latlon(lat, lon):
        reject("coords_out_of_range", f"({lat}, {lon}) is not a valid position: give {LATLON_RANGE}")
        return Checked(None, rejects)
    if not 1800 <= sample.year <= 2200:
        reject("bad_year", f"year {sample.year} is not a plausible acquisition year")
        return Checked(None, rejects)
    token = cell_token(lat, lon, data.cell_level)

    aerial = sample.aerial
    if aerial is not None:
        try:
            decode_rgb(aerial)
        except InputError as exc:
            reject("unreadable_image", f"aerial image: {exc}", "aerial", token)
            aerial = None

    views: list[StreetView] = []
    for view in sample.street:
        try:
            decode_rgb(view.image)
            if not valid_latlon(view.lat_deg, view.lon_deg):
                raise InputError(f"view position ({view.lat_deg}, {view.lon_deg}) is out of range: give {LATLON_RANGE}")
            views.append(view)
        except InputError as exc:
            reject("unreadable_image", f"street view {view.source_id or '?'}: {exc}", "street", token)
    views = farthest_point_views(views, data.street_views_per_sample)

    dsm = _check_dsm(sample.dsm, data.dsm_px, lambda r, d: reject(r, d, "dsm", token))

    text = sample.text.strip() if sample.text is not None else None
    if text is not None and not text:
        reject("empty_text", "the text is empty or only whitespace", "text", token)
        text = None
    elif text is not None and len(text) > MAX_TEXT_CHARS:
        reject("text_too_long", f"{len(text)} characters; at most {MAX_TEXT_CHARS} are stored", "text", token)
        text = None

    hashes = {
        Modality.AERIAL: digest(aerial) if aerial is not None else None,
        Modality.STREET: _street_hash(views) if views else None,
        Modality.DSM: digest(dsm.tobytes()) if dsm is not None else None,
        Modality.TEXT: digest(text.encode()) if text is not None else None,
        Modality.COORDS: digest(f"{lat:.7f},{lon:.7f}".encode()),
    }
    if all(h is None for m, h in hashes.items() if m is not Modality.COORDS):
        reject("no_modalities", "nothing but coordinates is left to learn from", "", token)
        return Checked(None, rejects)
    content = digest("|".join(h or "-" for h in hashes.values()).encode())
    row: dict[str, Any] = {
        "sample_id": f"{token}-{sample.year}-{content[:12]}",
        "cell_token": token,
        "cell_level": data.cell_level,
        "lat_deg": float(lat),
        "lon_deg": float(lon),
        "year": int(sample.year),
        "split": assign_split(token, sample.year, data.splits),
        "current": True,
        "aerial": aerial,
        "street": [_view_row(v) for v in views],
        "dsm": dsm.ravel() if dsm is not None else None,
        "dsm_px": data.dsm_px if dsm is not None else 0,
        "text": text,
        **{f"{m.value}_present": hashes[m] is not None for m in ALL_MODALITIES},
        **{f"{m.value}_hash": hashes[m] for m in ALL_MODALITIES},
        "content_hash": content,
        "source": sample.source,
        "source_id": sample.source_id,
        "source_ids": json.dumps(sample.source_ids, sort_keys=True),
        "ingest_run": run_id,
        "ingested_at": datetime.now(UTC),
    }
    return Checked(row, rejects)


def _check_dsm(dsm: np.ndarray | None, px: int, reject: Any) -> np.ndarray | None:
    if dsm is None:
        return None
    arr = np.asarray(dsm, dtype=np.float32)
    if arr.shape != (px, px):
        reject("bad_dsm_shape", f"DSM patch is {arr.shape}, expected ({px}, {px}) (data.dsm_px)")
        return None
    valid = np.isfinite(arr)
    if valid.mean() < MIN_DSM_VALID:
        reject("empty_dsm", f"only {valid.mean():.0%} of the DSM pixels hold a height")
        return None
    lo, hi = float(arr[valid].min()), float(arr[valid].max())
    if lo < DSM_RANGE_M[0] or hi > DSM_RANGE_M[1]:
        reject("dsm_out_of_range", f"heights span {lo:.0f}..{hi:.0f} m, outside {DSM_RANGE_M}: wrong units or nodata?")
        return None
    return arr.astype(np.float16)


def _street_hash(views: list[StreetView]) -> str:
    parts = [f"{digest(v.image)}:{v.lat_deg:.7f}:{v.lon_deg:.7f}:{v.heading_deg:.1f}" for v in views]
    return digest("|".join(parts).encode())


def _view_row(v: StreetView) -> dict[str, Any]:
    return {
        "image": v.image,
        "lat_deg": float(v.lat_deg),
        "lon_deg": float(v.lon_deg),
        "heading_deg": float(v.heading_deg),
        "projection": v.projection,
        "fov_deg": float(v.fov_deg),
        "capture_date": v.capture_date,
        "source_id": v.source_id,
    }


def reject_row(r: Reject, run_id: str) -> dict[str, Any]:
    """A ``Reject`` as a row of the rejects table, stamped with ``run_id`` and the time now (UTC)."""
    return {
        "source": r.source,
        "source_id": r.source_id,
        "reason": r.reason,
        "detail": r.detail,
        "modality": r.modality,
        "cell_token": r.cell_token,
        "year": r.year,
        "ingest_run": run_id,
        "rejected_at": datetime.now(UTC),
    }
