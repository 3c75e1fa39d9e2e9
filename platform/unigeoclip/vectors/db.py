"""One LanceDB database of embeddings: a table per model version, the version registry and the aliases.

Searches never read a model version's table directly: they read the ``serving`` alias,
a row naming (model version, table, table version). Publishing rewrites that one row in
a single Lance commit, so a reader sees either the old pinned snapshot or the new one,
never a table that is still being filled. The pinned table version is also tagged, so
compaction's clean-up never deletes the files a published snapshot reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

from ..errors import ConfigError, NotFoundError
from .schema import (
    ALIASES,
    ALIASES_SCHEMA,
    FAILURES,
    FAILURES_SCHEMA,
    SERVING,
    VERSIONS,
    VERSIONS_SCHEMA,
    embedding_schema,
    table_name,
    upgrade_id_column,
    with_current_id,
)
from .sql import quote

PUBLISHED_TAG = "published"


def is_storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` says the store's files could not be read (missing, unreadable), not that a call was wrong.

    Lance reports IO failures as ``RuntimeError("lance error: ...")``; the rest come as ``OSError``.
    """
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and str(exc).startswith("lance error:"))


class EmbeddingDB:
    """``DB_URI`` is a local directory or an object-store URI LanceDB understands (``s3://``, ``gs://``, ``az://``).

    Object-store credentials come from the environment, as LanceDB reads them.
    """

    def __init__(self, uri: str | Path) -> None:
        self.uri = str(uri).rstrip("/")
        if "://" not in self.uri:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        self.conn = lancedb.connect(self.uri)

    def __repr__(self) -> str:
        return f"EmbeddingDB({self.uri!r})"

    # -- tables ---------------------------------------------------------------------------------

    def has_table(self, name: str) -> bool:
        """Whether the database holds a table called ``name``."""
        return name in self.conn.list_tables().tables

    def _table(self, name: str, schema: pa.Schema) -> Any:
        """Open ``name``, creating it empty with ``schema`` on first use (two creators may race: both win)."""
        if self.has_table(name):
            table = self.conn.open_table(name)
            upgrade_id_column(table)  # a database from before the id rename: writers open their tables here
            return table
        return self.conn.create_table(name, schema=schema, exist_ok=True)

    # -- model versions -------------------------------------------------------------------------

    def register_version(
        self, model_version: str, *, fingerprint: str, model_dir: str, embed_dim: int, modalities: list[str]
    ) -> Any:
        """Record a model version (idempotent) and return its embeddings table, created on first use.

        A version name stays bound to the model it was first embedded with: the same name
        with other weights is refused, so one table never mixes two models' vectors.
        """
        info = self.version_info(model_version)
        if info is not None and info["fingerprint"] != fingerprint:
            raise ConfigError(
                f"model version {model_version!r} was embedded with another model (fingerprint "
                f"{info['fingerprint'][:12]}, from {info['model_dir']}); {model_dir} holds {fingerprint[:12]}: "
                "give this model its own --model-version, or leave --model-version out to derive one"
            )
        table = self._table(table_name(model_version), embedding_schema(embed_dim))
        if info is None:
            row = {
                "model_version": model_version,
                "fingerprint": fingerprint,
                "table_name": table_name(model_version),
                "model_dir": str(model_dir),
                "embed_dim": embed_dim,
                "modalities": ",".join(modalities),
                "created_at": datetime.now(UTC),
                "completed_at": None,
                "rows": 0,
            }
            self._upsert_small(VERSIONS, VERSIONS_SCHEMA, "model_version", row)
        elif info["model_dir"] != str(model_dir):
            self._upsert_small(VERSIONS, VERSIONS_SCHEMA, "model_version", info | {"model_dir": str(model_dir)})
        return table

    def versions(self) -> list[dict[str, Any]]:
        """Every registered model version's row, oldest first (empty before the first registration)."""
        if not self.has_table(VERSIONS):
            return []
        rows: list[dict[str, Any]] = self.conn.open_table(VERSIONS).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["created_at"])

    def version_info(self, model_version: str) -> dict[str, Any] | None:
        """The registry row of ``model_version``, or None when it was never registered."""
        return next((r for r in self.versions() if r["model_version"] == model_version), None)

    def embeddings(self, model_version: str) -> Any:
        """The (latest, writable) embeddings table of a registered version."""
        name = table_name(model_version)
        if not self.has_table(name):
            known = ", ".join(r["model_version"] for r in self.versions()) or "none"
            raise NotFoundError(
                f"no embeddings for model version {model_version!r} in {self.uri} (known versions: {known}); "
                "run `unigeoclip embed --model MODEL_DIR` first"
            )
        return self.conn.open_table(name)

    def mark_complete(self, model_version: str, rows: int) -> None:
        """Record ``model_version``'s table as complete with ``rows`` rows (a rerun keeps the first completion time)."""
        info = self.version_info(model_version)
        assert info is not None, model_version
        done = info["completed_at"] or datetime.now(UTC)
        self._upsert_small(VERSIONS, VERSIONS_SCHEMA, "model_version", info | {"completed_at": done, "rows": rows})

    # -- aliases --------------------------------------------------------------------------------

    def alias(self, name: str = SERVING) -> dict[str, Any] | None:
        """The alias row (``model_version``, ``table_name``, ``table_version``, ...) or None."""
        if not self.has_table(ALIASES):
            return None
        rows = self.conn.open_table(ALIASES).search().where(f"alias = {quote(name)}").to_arrow().to_pylist()
        return rows[0] if rows else None

    def publish(self, model_version: str, *, alias: str = SERVING) -> dict[str, Any]:
        """Point ``alias`` at the current version of ``model_version``'s table: one atomic commit."""
        table = self.embeddings(model_version)
        version = int(table.version)
        tags = table.tags.list()
        if PUBLISHED_TAG in tags:
            if tags[PUBLISHED_TAG]["version"] != version:
                table.tags.update(PUBLISHED_TAG, version)
        else:
            table.tags.create(PUBLISHED_TAG, version)
        row = {
            "alias": alias,
            "model_version": model_version,
            "table_name": table_name(model_version),
            "table_version": version,
            "rows": int(table.count_rows()),
            "published_at": datetime.now(UTC),
        }
        self._upsert_small(ALIASES, ALIASES_SCHEMA, "alias", row)
        return row

    # -- failures -------------------------------------------------------------------------------

    def record_failures(self, rows: list[dict[str, Any]]) -> None:
        """Append rows that could not be embedded to the failures table (nothing is written for an empty list)."""
        if rows:
            self._table(FAILURES, FAILURES_SCHEMA).add(pa.Table.from_pylist(rows, schema=FAILURES_SCHEMA))

    def failures(self, model_version: str | None = None) -> pa.Table:
        """The recorded embedding failures, of one model version or all, with the id column under its current name."""
        if not self.has_table(FAILURES):
            return FAILURES_SCHEMA.empty_table()
        query = self.conn.open_table(FAILURES).search()
        if model_version is not None:
            query = query.where(f"model_version = {quote(model_version)}")
        return with_current_id(query.to_arrow())

    # -- helpers --------------------------------------------------------------------------------

    def _upsert_small(self, name: str, schema: pa.Schema, key: str, row: dict[str, Any]) -> None:
        table = self._table(name, schema)
        data = pa.Table.from_pylist([row], schema=schema)
        table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data)
