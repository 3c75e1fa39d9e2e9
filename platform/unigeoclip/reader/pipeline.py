"""The training reader: the sample store as a Ray Data stream of model-ready tensors with presence masks.

``build_dataset(cfg, store, split)`` lists the positions of the split's current rows once,
cuts them into chunks (a fresh permutation per epoch when shuffling), and a pool of
actors takes each chunk from a pinned version of the Lance table (random access is
Lance's strength) and decodes it into the batch contract of :mod:`unigeoclip.modality`,
ready for ``iter_torch_batches`` inside a Ray Train worker. A whole multi-epoch run is
one stream: no pipeline restart per epoch, and every epoch sees the samples in a new
order, so contrastive batches keep meeting new negatives.
Training batches are augmented: aerial tiles and DSMs share one random flip/rotation
(they stay co-registered), street views are perspective crops at a random yaw, pitch
and field of view, aerial and street colours may be jittered, and coordinates moved by
up to a few km. Other splits get the canonical view: north up, looking along the view's
heading, level, at the middle field of view, in the stored colours and positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import ray

from ..config import Config
from ..errors import InputError, NotFoundError
from ..preprocess.batch import ROW_COLUMNS, CachedFeatures, DecodeBatch
from ..preprocess.decode_cache import BoundedLRU, Row, join_rows, row_nbytes, split_rows
from ..preprocess.spec import PreprocessSpec
from ..samples.positions import chunk_positions, split_positions, take_chunk
from ..samples.splits import SPLITS, TRAIN
from ..samples.store import SampleStore
from .feature_cache import CacheRef, FeatureCache


class TakeAndDecode:
    """Ray Data transform: chunks of row positions -> rows taken from a pinned Lance version -> decoded batch."""

    def __init__(
        self, uri: str, version: int, columns: list[str], decode: dict[str, Any], features: Mapping[str, CacheRef]
    ) -> None:
        import lance

        self.dataset = lance.dataset(uri, version=version)
        self.columns = columns
        cached = {m: CachedFeatures(ref.dim, FeatureCache(ref).load()) for m, ref in features.items()}
        self.decode = DecodeBatch(**decode, features=cached)
        # Positions in a pinned version never change content: a decoded row can be reused by position.
        self.rows: BoundedLRU[int, Row] = BoundedLRU(int(decode.get("cache_mb", 0)) * 2**20, row_nbytes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The decoded batch of a chunk's row positions (cached rows reused), with fresh colour and coords jitter."""
        return self.decode.jitter(self._decoded(batch))

    def _decoded(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.rows.max_bytes <= 0:
            return self.decode(take_chunk(self.dataset, batch, self.columns))
        positions = chunk_positions(batch)
        found = {p: row for p in positions if (row := self.rows.get(p)) is not None}
        missing = [p for p in dict.fromkeys(positions) if p not in found]
        if missing:
            table = self.dataset.take(missing, columns=self.columns)
            fixed = self.decode.fixed_rows(table)
            decoded = self.decode(table)
            if missing == positions and not fixed.any():  # random augmentation: nothing to keep or reassemble
                return decoded
            for p, row, keep in zip(missing, split_rows(decoded), fixed, strict=True):
                found[p] = row
                if keep:
                    self.rows.put(p, row)
        return join_rows([found[p] for p in positions])


def epoch_chunks(positions: np.ndarray, *, epochs: int, shuffle: bool, seed: int, chunk: int) -> list[dict[str, Any]]:
    """Work items of ``chunk`` positions each, epoch after epoch (a new permutation per epoch when shuffling)."""
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    for _ in range(max(1, epochs)):
        order = rng.permutation(positions) if shuffle else positions
        items.extend({"rows": order[i : i + chunk].tolist()} for i in range(0, len(order), chunk))
    return items


def batch_rows(batch: Mapping[str, Any]) -> int:
    """Number of samples in a batch dict (every value has them as its first dimension)."""
    return len(next(iter(batch.values())))


def load_batches(
    cfg: Config,
    store: SampleStore | str,
    split: str,
    *,
    batch_size: int = 128,
    max_samples: int | None = None,
    features: Mapping[str, CacheRef] | None = None,
) -> list[dict[str, np.ndarray]]:
    """A whole (small) split decoded once, un-augmented, as numpy batches held in memory (validation sets)."""
    out, seen = [], 0
    dataset = build_dataset(cfg, store, split, augment=False, features=features)
    for batch in dataset.iter_batches(batch_size=batch_size):
        if max_samples is not None and seen + batch_rows(batch) > max_samples:
            batch = {k: v[: max_samples - seen] for k, v in batch.items()}
        out.append(batch)
        seen += batch_rows(batch)
        if max_samples is not None and seen >= max_samples:
            break
    return out


def build_dataset(
    cfg: Config,
    store: SampleStore | str,
    split: str,
    *,
    augment: bool | None = None,
    keep_ids: bool = False,
    batch_size: int = 64,
    decoders: int = 1,
    cpus_per_decoder: float = 1.0,
    seed: int = 0,
    epochs: int = 1,
    cache_mb: int = 0,
    features: Mapping[str, CacheRef] | None = None,
) -> ray.data.Dataset:
    """The current samples of ``split`` as a Ray Data dataset of model-ready numpy batches.

    ``augment`` defaults to ``split == "train"``. ``keep_ids`` adds ``sample_id`` (strings:
    use ``iter_batches``, not ``iter_torch_batches``). ``decoders`` actors, each reserving
    ``cpus_per_decoder`` CPUs, decode in parallel with whatever consumes the stream.
    ``epochs`` > 1 repeats the split in one stream, in a new random order each epoch when
    augmenting (training), in store order otherwise. ``batch_size`` is the chunk one
    decoder call handles. ``cache_mb`` > 0 keeps up to that many MiB of decoded images,
    and as many of decoded rows whose decode draws nothing at random, per decoder (worth
    it when ``epochs`` > 1: later epochs skip the PNG inflate, or the whole take and decode).
    ``features``: the feature caches of locked towers (:func:`unigeoclip.train.frozen.ensure_features`),
    read in place of those modalities' inputs.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    if not store.has_samples():
        raise NotFoundError(f"no sample store at {store.root}: run `unigeoclip ingest --store {store.root}` first")
    augment = split == TRAIN if augment is None else augment
    version, positions = split_positions(store, split)
    items = epoch_chunks(positions, epochs=epochs, shuffle=augment, seed=seed, chunk=batch_size)
    hashes = [f"{m}_hash" for m in features or {}]
    columns = ROW_COLUMNS + [f"{m.value}_present" for m in cfg.model.modalities] + hashes
    decode = {"spec": PreprocessSpec.of(cfg), "augment": augment, "seed": seed, "keep_ids": keep_ids,
              "cache_mb": cache_mb}  # fmt: skip
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        TakeAndDecode,
        fn_constructor_kwargs={
            "uri": store.samples_uri,
            "version": version,
            "columns": columns,
            "decode": decode,
            "features": dict(features or {}),
        },
        batch_format="numpy",
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=decoders),
        num_cpus=cpus_per_decoder,
    )
