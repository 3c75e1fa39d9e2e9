"""The read side of the embedding store: the serving snapshot, searched by vector with filters, or read by item.

This is what the retrieval service and the evaluation build on::

    store = EmbeddingStore.open("data/embeddings")          # the serving model version, pinned
    hits = store.search(z, k=10, modality="aerial", bbox=(52.3, 4.8, 52.4, 5.0), year=2022)
    rows = store.get(["89c25a31-2022-3f9c0a1b2c4d"], modality="text")
    if store.refresh(): ...                                   # a new version or new rows were published

A store reads one pinned version of one table (the ``serving`` alias, or a version
asked for by name), so a search never sees rows of a run that has not finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, NotFoundError
from ..modality import Modality
from .db import EmbeddingDB
from .filters import build_filter
from .index import DEFAULT_POLICY, DISTANCE, IndexPolicy, vector_index
from .schema import ID, SERVING, VECTOR, id_column, table_name, with_current_id
from .sql import in_list

RESULT_COLUMNS = [
    ID, "modality", "cell_token", "lat_deg", "lon_deg", "year", "split", "content_hash", "model_version",
]  # fmt: skip


class EmbeddingStore:
    """A pinned, read-only view of one model version's embeddings. Cheap to open; safe to keep open."""

    def __init__(self, db: EmbeddingDB, pointer: dict[str, Any], *, alias: str | None, policy: IndexPolicy) -> None:
        self.db, self.alias, self.policy = db, alias, policy
        self._pin(pointer)

    @classmethod
    def open(
        cls,
        db: str | Path | EmbeddingDB,
        *,
        model_version: str | None = None,
        alias: str = SERVING,
        policy: IndexPolicy = DEFAULT_POLICY,
    ) -> EmbeddingStore:
        """The ``alias`` (default: the serving version), or the latest rows of ``model_version`` when given.

        Opening a version by name is for evaluating a candidate before it serves: check
        :attr:`complete` first, its table may still be filling.
        """
        db = db if isinstance(db, EmbeddingDB) else EmbeddingDB(db)
        if model_version is not None:
            table = db.embeddings(model_version)
            named = {"model_version": model_version, "table_name": table_name(model_version),
                     "table_version": int(table.version)}  # fmt: skip
            return cls(db, named, alias=None, policy=policy)
        pointer = db.alias(alias)
        if pointer is None:
            raise NotFoundError(
                f"no {alias!r} model version in {db.uri} yet: run `unigeoclip embed --model MODEL_DIR --store STORE "
                f"--db {db.uri}` (a version serves once it is completely embedded)"
            )
        return cls(db, pointer, alias=alias, policy=policy)

    def _pin(self, pointer: dict[str, Any]) -> None:
        self.pointer = dict(pointer)
        self.model_version: str = pointer["model_version"]
        table = self.db.conn.open_table(pointer["table_name"])
        table.checkout(int(pointer["table_version"]))  # read-only, time-travelled to the published snapshot
        self.table = table
        self.table_version = int(pointer["table_version"])
        info = self.db.version_info(self.model_version) or {}
        self.model_dir: str | None = info.get("model_dir")
        self.embed_dim: int = int(table.schema.field(VECTOR).type.list_size)
        self.complete: bool = info.get("completed_at") is not None
        self._indexed = vector_index(table) is not None
        self._id = id_column(table.schema)  # "item_id" in a snapshot published before the id rename

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.db.uri!r}, model_version={self.model_version!r}, version={self.table_version})"

    def __len__(self) -> int:
        return int(self.table.count_rows())

    @property
    def indexed(self) -> bool:
        """Whether searches go through an ANN index (else they are exact scans)."""
        return self._indexed

    def refresh(self) -> bool:
        """Re-read the alias; re-pin when it moved (a new model version, or new rows published). True if it did."""
        if self.alias is None:
            return False
        pointer = self.db.alias(self.alias)
        if pointer is None or (pointer["table_name"], pointer["table_version"]) == (
            self.pointer["table_name"],
            self.pointer["table_version"],
        ):
            return False
        self._pin(pointer)
        return True

    # -- search ---------------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray | Sequence[float] | Sequence[Sequence[float]],
        *,
        k: int = 10,
        modality: Modality | str | Sequence[Modality | str] | None = None,
        bbox: Sequence[float] | None = None,
        cell_prefix: str | None = None,
        year: int | Sequence[int] | None = None,
        split: str | Sequence[str] | None = None,
        exact: bool | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        with_vectors: bool = False,
    ) -> pa.Table:
        """The ``k`` most similar rows per query, best first, with ``score`` (cosine similarity) and ``query_index``.

        ``query``: one ``(D,)`` vector or a ``(Q, D)`` batch. Filters: ``modality`` (one or
        several), ``bbox`` ``(lat_min, lon_min, lat_max, lon_max)`` (lon_min > lon_max crosses
        the antimeridian), ``cell_prefix`` (an S2 cell token: items inside that cell),
        ``year`` and ``split`` (one or several). ``exact`` forces a flat scan (True) or the
        index (False); by default the index is used when the table has one. A narrow filter
        widens the probe set until ``k`` rows are found, so filters never silently starve results.
        """
        queries = self._check_queries(query)
        if not 1 <= k <= 10_000:
            raise InputError(f"k must be between 1 and 10000, got {k}")
        where = build_filter(modality=modality, bbox=bbox, cell_prefix=cell_prefix, year=year, split=split)
        use_index = self._indexed if exact is None else not exact
        if use_index and not self._indexed:
            raise InputError(f"exact=False, but {self.model_version!r} has no ANN index yet ({len(self)} rows)")
        q: Any = self.table.search(list(queries) if len(queries) > 1 else queries[0], vector_column_name=VECTOR)
        q = q.distance_type(DISTANCE).limit(k)
        if where:
            q = q.where(where, prefilter=True)
        if use_index:
            p = self.policy
            q = q.minimum_nprobes(nprobes or p.nprobes).maximum_nprobes(0)
            q = q.refine_factor(refine_factor or p.refine_factor) if p.index_type == "IVF_PQ" else q.ef(max(p.ef, k))
        else:
            q = q.bypass_vector_index()
        columns = RESULT_COLUMNS + ([VECTOR] if with_vectors else [])
        out = with_current_id(q.select([*self._stored(columns), "_distance"]).to_arrow())
        if "query_index" not in out.column_names:
            out = out.append_column("query_index", pa.array(np.zeros(out.num_rows, np.int32)))
        score = pc.subtract(pa.scalar(1.0, pa.float32()), pc.cast(out["_distance"], pa.float32()))
        out = out.append_column("score", score).drop_columns(["_distance"])
        out = out.sort_by([("query_index", "ascending"), ("score", "descending")])
        return out.select(["query_index", "score", *columns])

    def _check_queries(self, query: Any) -> np.ndarray:
        try:
            arr = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("query must be a vector of numbers or a (Q, D) array of them") from None
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise InputError(f"query must be a (D,) vector or a (Q, D) batch, got shape {arr.shape}")
        if arr.shape[1] != self.embed_dim:
            raise InputError(
                f"query has {arr.shape[1]} dimensions; model version {self.model_version!r} embeds to "
                f"{self.embed_dim}: encode the query with the same model (store.model_dir)"
            )
        if not np.isfinite(arr).all() or (np.linalg.norm(arr, axis=1) == 0).any():
            raise InputError("query vectors must be finite and non-zero")
        return arr

    # -- reads ----------------------------------------------------------------------------------

    def get(
        self,
        sample_ids: str | Sequence[str],
        *,
        modality: Modality | str | Sequence[Modality | str] | None = None,
        with_vectors: bool = True,
    ) -> pa.Table:
        """The rows of the given samples (every modality, or only ``modality``), in no particular order."""
        ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
        columns = RESULT_COLUMNS + ["written_at"] + ([VECTOR] if with_vectors else [])
        parts = [
            self.scan(columns=columns, where=in_list(self._id, ids[start : start + 1000]), modality=modality)
            for start in range(0, max(len(ids), 1), 1000)
        ]
        return pa.concat_tables(parts)

    def scan(self, *, columns: Sequence[str] | None = None, where: str | None = None, **filters: Any) -> pa.Table:
        """Every row matching the filters (the keywords of :meth:`search`, or a raw ``where``): galleries, audits."""
        clauses = [c for c in (where, build_filter(**filters)) if c]
        return with_current_id(
            self.table.to_lance().to_table(
                columns=self._stored(columns) if columns is not None else None,
                filter=" AND ".join(f"({c})" for c in clauses) or None,
            )
        )

    def _stored(self, columns: Sequence[str]) -> list[str]:
        """Column names as this snapshot stores them (the sample id may be the legacy ``item_id``)."""
        return [self._id if c == ID else c for c in columns]

    def count(self, **filters: Any) -> int:
        """Rows matching the filters (the keywords of :meth:`search`)."""
        return int(self.table.count_rows(build_filter(**filters)))
