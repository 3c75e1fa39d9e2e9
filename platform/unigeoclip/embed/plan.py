"""What a run must embed: the (sample, modality) pairs whose content hash has no row for the model version.

The plan compares the sample store's current rows with the version's table by key
strings (``item | modality | content hash``) in Arrow, without Python sets over millions
of rows. It also lists items the table holds that are no longer current in the store
(superseded by newer content): a run retires them so searches stop returning stale imagery.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..modality import Modality
from ..samples.store import SampleStore

_SEP = "\x1f"  # a unit separator: never inside a sample id, a modality name or a hex hash


@dataclass
class EmbedPlan:
    """The rows an embedding run must write, read from one pinned version of the sample store."""

    samples_uri: str
    samples_version: int  # the store version every actor reads (a concurrent ingest does not move it)
    modalities: tuple[Modality, ...]
    chunks: list[dict[str, Any]]  # {"rows": [positions], "want": [bitmask over modalities]}
    todo: Counter[str] = field(default_factory=Counter)  # modality -> rows to embed
    skipped: Counter[str] = field(default_factory=Counter)  # modality -> rows embedded already
    retired: list[str] = field(default_factory=list)  # item ids to delete from the table
    expected_rows: int = 0  # rows the table holds once every planned row is written and retired rows are gone

    @property
    def rows_to_embed(self) -> int:
        """The (sample, modality) rows the run must embed, over every modality."""
        return sum(self.todo.values())

    @property
    def samples_to_read(self) -> int:
        """The samples the run must read: those with at least one modality to embed."""
        return sum(len(c["rows"]) for c in self.chunks)


def _keys(ids: pa.ChunkedArray, modality: pa.ChunkedArray | str, hashes: pa.ChunkedArray) -> pa.ChunkedArray:
    mod = pa.scalar(modality, pa.string()) if isinstance(modality, str) else modality
    return pc.binary_join_element_wise(ids, mod, hashes.fill_null(""), _SEP)


def plan_embedding(store: SampleStore, table: Any, modalities: tuple[Modality, ...], *, batch_size: int) -> EmbedPlan:
    """Diff the store's current samples against ``table`` (one model version's embeddings)."""
    dataset = store.samples()
    columns = ["sample_id", "current"] + [c for m in modalities for c in (f"{m.value}_present", f"{m.value}_hash")]
    samples = dataset.to_table(columns=columns)
    current = samples["current"].fill_null(False)
    stored = table.to_lance().to_table(columns=["sample_id", "modality", "content_hash"])
    stored_keys = _keys(stored["sample_id"], stored["modality"], stored["content_hash"]).combine_chunks()

    plan = EmbedPlan(store.samples_uri, int(dataset.version), modalities, [])
    bits = np.zeros(samples.num_rows, np.int64)
    for i, m in enumerate(modalities):
        present = pc.and_(current, samples[f"{m.value}_present"].fill_null(False))
        done = pc.is_in(_keys(samples["sample_id"], m.value, samples[f"{m.value}_hash"]), value_set=stored_keys)
        need = np.asarray(pc.and_(present, pc.invert(done)).to_numpy(zero_copy_only=False), dtype=bool)
        n_present = int(pc.sum(present).as_py() or 0)
        plan.todo[m.value] = int(need.sum())
        plan.skipped[m.value] = n_present - plan.todo[m.value]
        plan.expected_rows += n_present
        bits |= need.astype(np.int64) << i

    positions = np.flatnonzero(bits)
    plan.chunks = [
        {"rows": positions[s : s + batch_size].tolist(), "want": bits[positions[s : s + batch_size]].tolist()}
        for s in range(0, len(positions), batch_size)
    ]
    current_ids = pc.filter(samples["sample_id"], current).combine_chunks()
    held = pc.unique(stored["sample_id"])
    plan.retired = pc.filter(held, pc.invert(pc.is_in(held, value_set=current_ids))).to_pylist()
    return plan
