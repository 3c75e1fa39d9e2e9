"""The evaluated split as aligned embedding matrices: encoded from the sample store, or read from LanceDB.

Both paths give the same thing: one row per current sample of the split, every modality
of the model as an ``(N, D)`` matrix (zero rows where absent) with its presence mask, and
the samples' locations. Encoding decodes rows canonically with the training reader's
decoder (no augmentation) and tokenizes text with the model's own saved tokenizer, as the
embedding job does, so both paths agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from ..modality import Modality, present_key
from ..models import UniGeoCLIP
from ..preprocess.batch import ROW_COLUMNS, DecodeBatch, bool_column
from ..preprocess.spec import PreprocessSpec
from ..samples.positions import split_positions
from ..samples.store import SampleStore

if TYPE_CHECKING:
    from ..vectors import EmbeddingStore


@dataclass(frozen=True)
class SplitEmbeddings:
    """Embeddings of one split, row-aligned across modalities."""

    split: str
    sample_ids: np.ndarray  # (N,) str
    latlon: np.ndarray  # (N, 2) float64, lat_deg, lon_deg
    embeddings: dict[Modality, np.ndarray]  # (N, D) float32 unit rows; zero where absent
    present: dict[Modality, np.ndarray]  # (N,) bool

    def __len__(self) -> int:
        return len(self.sample_ids)

    def subset(self, rows: np.ndarray) -> SplitEmbeddings:
        """The same split restricted to ``rows`` (indices or a boolean mask), every array sliced alike."""
        return SplitEmbeddings(
            self.split,
            self.sample_ids[rows],
            self.latlon[rows],
            {m: z[rows] for m, z in self.embeddings.items()},
            {m: p[rows] for m, p in self.present.items()},
        )


@torch.no_grad()
def encode_split(
    model: UniGeoCLIP,
    store: SampleStore | str,
    split: str,
    *,
    batch_size: int = 64,
    max_samples: int | None = None,
) -> SplitEmbeddings:
    """Decode and encode the current samples of ``split`` (store order; the first ``max_samples`` when capped)."""
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    dataset = store.samples()
    _, positions = split_positions(store, split)
    if max_samples is not None:
        positions = positions[:max_samples]
    if len(positions) == 0:
        raise InputError(f"split {split!r} of {store.root} has no current samples: choose another with --split")
    mods = model.modalities
    pixels = tuple(m for m in mods if m is not Modality.TEXT)
    decoder = DecodeBatch(PreprocessSpec.of(model.config, modalities=pixels), augment=False)
    columns = list(dict.fromkeys([*ROW_COLUMNS, *(f"{m.value}_present" for m in mods)]))
    ids, lat, lon = [], [], []
    embs: dict[Modality, list[np.ndarray]] = {m: [] for m in mods}
    present: dict[Modality, list[np.ndarray]] = {m: [] for m in mods}
    for start in range(0, len(positions), batch_size):
        table = dataset.take(positions[start : start + batch_size].tolist(), columns=columns)
        batch = decoder(table)
        if Modality.TEXT in mods:  # tokenized by the model itself (its saved tokenizer), as the embedding job does
            mask = bool_column(table, present_key(Modality.TEXT))
            texts = [t if p else "" for t, p in zip(table.column("text").to_pylist(), mask, strict=True)]
            batch |= {k: v.numpy() for k, v in model.tokenize(texts).items()} | {present_key(Modality.TEXT): mask}
        ids.extend(table.column("sample_id").to_pylist())
        lat.append(table.column("lat_deg").to_numpy())
        lon.append(table.column("lon_deg").to_numpy())
        z, p = model.encode_batches([batch])
        for m in mods:
            embs[m].append(z[m])
            present[m].append(p[m])
    return SplitEmbeddings(
        split,
        np.asarray(ids, dtype=object),
        np.stack([np.concatenate(lat), np.concatenate(lon)], axis=1).astype(np.float64),
        {m: np.concatenate(v) for m, v in embs.items()},
        {m: np.concatenate(v) for m, v in present.items()},
    )


def _stored_version(db: str | Path, model_dir: str | Path, model_version: str | None) -> EmbeddingStore:
    """The embeddings of ``model_dir``'s version (or ``model_version``) in ``db``; an ``InputError`` saying how to
    make them when there are none."""
    from ..vectors import EmbeddingStore
    from ..vectors.db import EmbeddingDB
    from ..vectors.versions import model_version_id

    version = model_version or model_version_id(model_dir)
    edb = EmbeddingDB(db)
    if edb.version_info(version) is None:
        have = ", ".join(v["model_version"] for v in edb.versions()) or "none"
        raise InputError(
            f"{db} holds no embeddings of model version {version!r} (it has: {have}): run `unigeoclip embed "
            f"--model {model_dir} --db {db}` first, or pass --model-version"
        )
    return EmbeddingStore.open(edb, model_version=version)


def read_locations_from_db(
    db: str | Path, *, model_dir: str | Path, model_version: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every stored coordinate embedding of the model version: ``(N, 2)`` lat, lon degrees and ``(N, D)`` vectors."""
    store = _stored_version(db, model_dir, model_version)
    table = store.scan(columns=["lat_deg", "lon_deg", "vector"], modality=Modality.COORDS)
    latlon = np.stack([table.column("lat_deg").to_numpy(), table.column("lon_deg").to_numpy()], axis=1)
    vectors = np.asarray(table.column("vector").combine_chunks().values.to_numpy(), np.float32)
    return latlon.astype(np.float64), vectors.reshape(table.num_rows, store.embed_dim)


def read_split_from_db(
    db: str | Path,
    split: str,
    *,
    model_dir: str | Path,
    model_version: str | None = None,
    modalities: Sequence[Modality] | None = None,
) -> SplitEmbeddings:
    """The split's vectors as the embedding job wrote them (the model version of ``model_dir`` unless named)."""
    store = _stored_version(db, model_dir, model_version)
    version = store.model_version
    table = store.scan(columns=["sample_id", "modality", "lat_deg", "lon_deg", "vector"], split=split)
    if table.num_rows == 0:
        raise InputError(f"model version {version!r} in {db} has no rows of split {split!r}")
    items = np.asarray(table.column("sample_id").to_pylist(), dtype=object)
    ids, first = np.unique(items, return_index=True)
    row_of = {item: i for i, item in enumerate(ids)}
    latlon = np.stack([table.column("lat_deg").to_numpy()[first], table.column("lon_deg").to_numpy()[first]], axis=1)
    vectors = np.asarray(table.column("vector").combine_chunks().values.to_numpy(), np.float32).reshape(
        table.num_rows, store.embed_dim
    )
    names = np.asarray(table.column("modality").to_pylist(), dtype=object)
    mods = [m for m in Modality if (modalities is None or m in modalities)]
    embs, present = {}, {}
    for m in mods:
        sel = np.flatnonzero(names == m.value)
        z = np.zeros((len(ids), store.embed_dim), np.float32)
        mask = np.zeros(len(ids), bool)
        rows = np.array([row_of[i] for i in items[sel]], dtype=np.int64)
        z[rows] = vectors[sel]
        mask[rows] = True
        embs[m], present[m] = z, mask
    return SplitEmbeddings(split, ids, latlon.astype(np.float64), embs, present)
