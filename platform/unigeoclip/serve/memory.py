"""An exact in-memory copy of a small serving snapshot: one matrix product per search instead of a LanceDB scan.

Below the store's ANN threshold a LanceDB search is a flat scan whose cost is mostly per-query
overhead; the same exact search over a float32 matrix in memory is one matrix product, an order
of magnitude cheaper for tens of thousands of rows (benchmarks/bench_serve.py). The retriever loads a snapshot here when
it has at most ``ServeConfig.memory_rows`` rows, and searches LanceDB otherwise. Filters are
normalised and validated by the store's own filter functions (same messages) and applied as
masks with the same meaning as its SQL: inclusive bbox (crossing the antimeridian when
lon_min > lon_max), S2 cell id range, years, splits, modalities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..vectors import EmbeddingStore
from ..vectors.filters import Filters
from ..vectors.schema import VECTOR

COLUMNS = ["sample_id", "modality", "cell_token", "cell_id", "lat_deg", "lon_deg", "year", "split"]


class MemorySnapshot:
    """The rows and unit vectors of one pinned snapshot, searched exactly with numpy."""

    def __init__(self, store: EmbeddingStore) -> None:
        table = store.scan(columns=[*COLUMNS, VECTOR])
        self.model_version = store.model_version
        self.vectors = np.asarray(table[VECTOR].combine_chunks().values.to_numpy(), np.float32).reshape(
            table.num_rows, store.embed_dim
        )  # (N, D), unit rows
        cols = {c: table[c].to_numpy(zero_copy_only=False) for c in COLUMNS}
        self.sample_id, self.modality, self.cell_token = cols["sample_id"], cols["modality"], cols["cell_token"]
        self.cell_id = cols["cell_id"].astype(np.uint64)
        self.lat, self.lon = cols["lat_deg"].astype(np.float64), cols["lon_deg"].astype(np.float64)
        self.year, self.split = cols["year"].astype(np.int64), cols["split"]

    def __len__(self) -> int:
        return len(self.vectors)

    def mask(self, **filters: Any) -> np.ndarray:
        """Rows passing the filters (the keywords of the store's search), parsed by the store's own :class:`Filters`."""
        return Filters.parse(**filters).mask(modality=self.modality, lat_deg=self.lat, lon_deg=self.lon,
                                             cell_id=self.cell_id, year=self.year, split=self.split)  # fmt: skip

    def search(self, query: np.ndarray, *, k: int, **filters: Any) -> list[dict[str, Any]]:
        """The ``k`` rows of highest cosine with ``query`` (any norm), best first, as the retriever's hit dicts."""
        q = np.asarray(query, np.float32)
        q = q / np.linalg.norm(q)
        scores = self.vectors @ q  # (N,)
        keep = self.mask(**filters)
        rows = np.flatnonzero(keep)
        if len(rows) > k:
            part = np.argpartition(-scores[rows], k - 1)[:k]
            rows = rows[part]
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        return [
            {"sample_id": str(self.sample_id[i]), "modality": str(self.modality[i]),
             "cell_token": str(self.cell_token[i]), "lat_deg": float(self.lat[i]), "lon_deg": float(self.lon[i]),
             "year": int(self.year[i]),
             "score": float(scores[i])}
            for i in rows
        ]  # fmt: skip
