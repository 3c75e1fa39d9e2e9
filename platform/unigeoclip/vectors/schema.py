"""The embedding tables' Arrow schemas: one row per (item, modality, model version), and the small side tables."""

from __future__ import annotations

import re

import pyarrow as pa

# The upsert key: a rerun replaces, never duplicates.
KEY = ("item_id", "modality", "model_version")
VECTOR = "vector"

_TS = pa.timestamp("us", tz="UTC")


def embedding_schema(dim: int) -> pa.Schema:
    """Rows of one model version's table; ``vector`` is a fixed-size list of ``dim`` float32 (unit norm)."""
    return pa.schema(
        [
            ("item_id", pa.string()),  # the sample store's sample_id: "<cell>-<year>-<content hash prefix>"
            ("modality", pa.string()),
            ("model_version", pa.string()),
            ("content_hash", pa.string()),  # the modality's content hash in the sample store
            ("cell_token", pa.string()),
            ("cell_id", pa.uint64()),  # the S2 cell id: a parent cell is a contiguous id range (cell-prefix filters)
            ("lat_deg", pa.float64()),
            ("lon_deg", pa.float64()),
            ("year", pa.int16()),
            ("split", pa.string()),
            (VECTOR, pa.list_(pa.float32(), dim)),
            ("embed_run", pa.string()),
            ("written_at", _TS),
        ]
    )


# One row per model version ever embedded into this database (what reembed needs to find its model again).
VERSIONS_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("fingerprint", pa.string()),  # SHA-256 of the model directory's files (a version never changes weights)
        ("table_name", pa.string()),
        ("model_dir", pa.string()),
        ("embed_dim", pa.int32()),
        ("modalities", pa.string()),  # comma-separated, canonical order
        ("created_at", _TS),
        ("completed_at", _TS),  # null until every present modality of every current sample has a row
        ("rows", pa.int64()),
    ]
)

# Named pointers to (table, pinned table version): searches read "serving" and nothing else.
ALIASES_SCHEMA = pa.schema(
    [
        ("alias", pa.string()),
        ("model_version", pa.string()),
        ("table_name", pa.string()),
        ("table_version", pa.int64()),
        ("rows", pa.int64()),
        ("published_at", _TS),
    ]
)

# Rows a run could not embed, with the reason (never dropped silently; a rerun retries them).
FAILURES_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("modality", pa.string()),
        ("model_version", pa.string()),
        ("reason", pa.string()),
        ("embed_run", pa.string()),
        ("failed_at", _TS),
    ]
)

VERSIONS, ALIASES, FAILURES = "model_versions", "aliases", "embed_failures"
SERVING = "serving"
_TABLE_PREFIX = "embeddings__"


def table_name(model_version: str) -> str:
    """The LanceDB table holding one model version (names allow letters, digits, ``_``, ``-`` and ``.``)."""
    return _TABLE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", model_version)
