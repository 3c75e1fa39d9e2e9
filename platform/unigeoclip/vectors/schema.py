"""The embedding tables' Arrow schemas: one row per (item, modality, model version), and the small side tables."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

# The upsert key: a rerun replaces, never duplicates.
ID = "sample_id"  # the sample store's id, the same name in every table and in the API
LEGACY_ID = "item_id"  # what databases written before the rename call it (read as ID; renamed on write)
KEY = (ID, "modality", "model_version")
VECTOR = "vector"

_TS = pa.timestamp("us", tz="UTC")


def embedding_schema(dim: int) -> pa.Schema:
    """Rows of one model version's table; ``vector`` is a fixed-size list of ``dim`` float32 (unit norm)."""
    return pa.schema(
        [
            (ID, pa.string()),  # "<cell>-<year>-<content hash prefix>", as in the sample store
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
        (ID, pa.string()),
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


def id_column(schema: pa.Schema) -> str:
    """The name a table's version stores the sample id under: :data:`ID`, or :data:`LEGACY_ID` in old databases."""
    return LEGACY_ID if LEGACY_ID in schema.names and ID not in schema.names else ID


def with_current_id(table: pa.Table) -> pa.Table:
    """A read result with a legacy ``item_id`` column named :data:`ID` (nothing else changes)."""
    if id_column(table.schema) == ID:
        return table
    return table.rename_columns([ID if name == LEGACY_ID else name for name in table.column_names])


def upgrade_id_column(table: Any) -> bool:
    """Rename a legacy ``item_id`` column of a LanceDB table to :data:`ID` at its latest version; True if it did.

    A metadata-only commit (no vector is rewritten): writers call it before they write, so new rows and
    old ones share one name. Earlier versions keep theirs, and readers pinned to one read it as :data:`ID`.
    """
    if id_column(table.schema) == ID:
        return False
    table.alter_columns({"path": LEGACY_ID, "rename": ID})
    return True
