"""The sample store's Arrow schema: one row per (S2 cell, year, content)."""

from __future__ import annotations

import pyarrow as pa

from ..modality import ALL_MODALITIES

STREET_VIEW = pa.struct(
    [
        ("image", pa.binary()),
        ("lat_deg", pa.float64()),
        ("lon_deg", pa.float64()),
        ("heading_deg", pa.float32()),
        ("projection", pa.string()),
        ("fov_deg", pa.float32()),
        ("capture_date", pa.string()),
        ("source_id", pa.string()),
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),  # "<cell>-<year>-<content hash prefix>"
        ("cell_token", pa.string()),
        ("cell_level", pa.int8()),
        ("lat_deg", pa.float64()),  # the coords modality is (lat_deg, lon_deg)
        ("lon_deg", pa.float64()),
        ("year", pa.int16()),
        ("split", pa.string()),  # train | test_year | test_region
        ("current", pa.bool_()),  # false once a later ingest brought new content for this (cell, year)
        ("aerial", pa.binary()),  # encoded PNG/JPEG, north up; null = absent
        ("street", pa.list_(STREET_VIEW)),  # up to N views; empty = absent
        ("dsm", pa.list_(pa.float16())),  # row-major (dsm_px, dsm_px) metres; null = absent
        ("dsm_px", pa.int16()),
        ("text", pa.string()),
        *[(f"{m.value}_present", pa.bool_()) for m in ALL_MODALITIES],
        *[(f"{m.value}_hash", pa.string()) for m in ALL_MODALITIES],
        ("content_hash", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("source_ids", pa.string()),  # JSON: per-modality provenance
        ("ingest_run", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("modality", pa.string()),  # "" when the whole sample was rejected
        ("cell_token", pa.string()),
        ("year", pa.int16()),
        ("ingest_run", pa.string()),
        ("rejected_at", pa.timestamp("us", tz="UTC")),
    ]
)
