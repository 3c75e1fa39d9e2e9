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
import pyarrow as pa
import ray
from PIL import Image

from ..config import Config
from ..errors import InputError, NotFoundError
from ..modality import Modality, features_key, present_key
from ..preprocess.augment import flip_rotate, jitter_coords, perspective_view, photometric_jitter, resize
from ..preprocess.imaging import decode_rgb
from ..samples.splits import SPLITS, TRAIN
from ..samples.store import SampleStore
from .decode_cache import BoundedLRU, DecodedImageCache, Row, join_rows, row_nbytes, split_rows
from .feature_cache import CacheRef, FeatureCache, lookup

ROW_COLUMNS = ["sample_id", "lat_deg", "lon_deg", "aerial", "street", "dsm", "dsm_px", "text"]


class DecodeBatch:
    """Ray Data transform: stored rows (pyarrow) -> ``dict[str, np.ndarray]`` in the batch contract."""

    def __init__(
        self,
        cfg: Config,
        *,
        augment: bool,
        seed: int = 0,
        keep_ids: bool = False,
        cache_mb: int = 0,
        modalities: tuple[Modality, ...] | None = None,
        features: Mapping[str, CacheRef] | None = None,
    ) -> None:
        """``modalities``: decode only these (default: the model's). ``features``: modalities of locked towers
        whose cached features (:mod:`.feature_cache`) go into the batch as ``<m>_features`` instead of inputs."""
        self.cfg, self.augment, self.keep_ids = cfg, augment, keep_ids
        self.images = DecodedImageCache(cache_mb * 2**20)
        self.modalities = cfg.model.modalities if modalities is None else modalities  # () decodes none
        self.rng = np.random.default_rng(seed)
        self.features = {m: (ref, FeatureCache(ref).load()) for m, ref in (features or {}).items()}
        self.tokenizer = None
        if Modality.TEXT in self.modalities and Modality.TEXT.value not in self.features:
            from ..models.tokenizer import build_tokenizer

            self.tokenizer = build_tokenizer(cfg.model.text)

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        n = table.num_rows
        mc = self.cfg.model
        out: dict[str, np.ndarray] = {}
        presents = {m: bool_column(table, f"{m.value}_present") for m in self.modalities}
        for name, (ref, cached) in self.features.items():
            hashes = table.column(f"{name}_hash").to_pylist()
            out[features_key(Modality(name))] = lookup(cached, hashes, presents[Modality(name)], ref.dim)
        geo = [self._geometry() for _ in range(n)]  # one dihedral transform per sample, shared from above
        if Modality.AERIAL in self.modalities and "aerial" not in self.features:
            size = mc.aerial.image_size
            arr = np.zeros((n, 3, size, size), np.float32)
            for i, data in enumerate(table.column("aerial").to_pylist()):
                if presents[Modality.AERIAL][i]:
                    arr[i] = _aerial_view(self.images.get(data, decode_rgb), size, *geo[i]).transpose(2, 0, 1) / 255.0
            out["aerial"] = arr
        if Modality.DSM in self.modalities:
            size = mc.dsm.image_size
            arr = np.zeros((n, 1, size, size), np.float32)
            for i, dsm in enumerate(_dsm_patches(table)):
                if presents[Modality.DSM][i] and dsm is not None:
                    arr[i, 0] = resize(flip_rotate([dsm], *geo[i])[0], size)
            out["dsm"] = arr
        if Modality.STREET in self.modalities and "street" not in self.features:
            size = mc.street.image_size
            arr = np.zeros((n, 3, size, size), np.float32)
            for i, views in enumerate(table.column("street").to_pylist()):
                if presents[Modality.STREET][i] and views:
                    arr[i] = self._street_view(views, size).transpose(2, 0, 1) / 255.0
            out["street"] = arr
        if Modality.TEXT in self.modalities and "text" not in self.features:
            from ..models.tokenizer import tokenize

            assert self.tokenizer is not None
            texts = [
                t if p else "" for t, p in zip(table.column("text").to_pylist(), presents[Modality.TEXT], strict=True)
            ]
            enc = tokenize(self.tokenizer, texts, mc.text.max_length)
            out["text_input_ids"] = enc["text_input_ids"].numpy()
            out["text_attention_mask"] = enc["text_attention_mask"].numpy()
        if Modality.COORDS in self.modalities:
            lat = table.column("lat_deg").to_numpy()
            lon = table.column("lon_deg").to_numpy()
            out["coords"] = np.stack([lat, lon], axis=1).astype(np.float32).reshape(n, 2)
        for m in self.modalities:
            out[present_key(m)] = presents[m]
        if self.keep_ids:
            out["sample_id"] = np.array(table.column("sample_id").to_pylist(), dtype=object)
        return out

    def fixed_rows(self, table: pa.Table) -> np.ndarray:
        """``(N,)`` bool: which rows decode without a random draw (the same arrays every epoch: cacheable)."""
        n = table.num_rows
        if not self.augment:
            return np.ones(n, bool)
        aug = self.cfg.data.augment
        if aug.aerial_flip_rotate and {Modality.AERIAL, Modality.DSM} & set(self.modalities):
            return np.zeros(n, bool)
        if Modality.STREET not in self.modalities:
            return np.ones(n, bool)
        lo, hi = aug.street_fov_deg
        fixed_pano_crop = lo == hi and aug.street_max_yaw_deg == 0 and aug.street_max_pitch_deg == 0
        views = table.column("street").combine_chunks()  # projections read from Arrow: no image bytes copied
        counts = views.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        projections = views.values.field("projection").to_numpy(zero_copy_only=False)
        first = views.offsets.to_numpy()[:-1]
        out = np.zeros(n, bool)
        for i, present in enumerate(bool_column(table, "street_present")):
            if not (present and counts[i]):
                out[i] = True
            elif counts[i] == 1 or not aug.street_random_view:  # photos always get a random field of view
                out[i] = fixed_pano_crop and projections[first[i]] == "equirectangular"
        return out

    def jitter(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Training only: colour jitter of the aerial and street images (``data.augment.photometric_*``) and
        coordinate jitter (``data.augment.coords_jitter_km``).

        Applied after :meth:`__call__` (and after the reader's row cache), so the cached rows
        stay reusable while every epoch sees new colours and new positions.
        """
        aug = self.cfg.data.augment
        colours = aug.photometric_gain > 0 or aug.photometric_shift > 0
        coords = aug.coords_jitter_km > 0 and Modality.COORDS.value in batch
        if not self.augment or not (colours or coords):
            return batch
        out = dict(batch)
        if coords:
            out[Modality.COORDS.value] = jitter_coords(
                batch[Modality.COORDS.value], self.rng, max_km=aug.coords_jitter_km
            )
        for m in (Modality.AERIAL, Modality.STREET):
            if colours and m.value in batch:
                out[m.value] = photometric_jitter(
                    batch[m.value],
                    batch[present_key(m)],
                    self.rng,
                    max_gain=aug.photometric_gain,
                    max_shift=aug.photometric_shift,
                )
        return out

    def _geometry(self) -> tuple[int, bool]:
        if not (self.augment and self.cfg.data.augment.aerial_flip_rotate):
            return 0, False
        return int(self.rng.integers(4)), bool(self.rng.integers(2))

    def _street_view(self, views: list[dict[str, Any]], size: int) -> np.ndarray:
        aug = self.cfg.data.augment
        view = views[int(self.rng.integers(len(views)))] if self.augment and aug.street_random_view else views[0]
        image = self.images.get(view["image"], decode_rgb)
        pano = view["projection"] == "equirectangular"
        lo, hi = aug.street_fov_deg
        if self.augment:
            fov = float(self.rng.uniform(lo, hi)) if pano else float(self.rng.uniform(0.6, 1.0)) * view["fov_deg"]
            spare = aug.street_max_yaw_deg if pano else max(0.0, (view["fov_deg"] - fov) / 2)
            yaw = view["heading_deg"] + float(self.rng.uniform(-spare, spare))
            pitch = float(self.rng.uniform(-aug.street_max_pitch_deg, aug.street_max_pitch_deg))
        else:
            fov = (lo + hi) / 2 if pano else float(view["fov_deg"])
            yaw, pitch = view["heading_deg"], 0.0
        return perspective_view(
            image,
            projection=view["projection"],
            source_heading_deg=view["heading_deg"],
            source_fov_deg=view["fov_deg"],
            yaw_deg=yaw,
            pitch_deg=pitch,
            fov_deg=fov,
            size=size,
        )


class TakeAndDecode:
    """Ray Data transform: chunks of row positions -> rows taken from a pinned Lance version -> decoded batch."""

    def __init__(self, uri: str, version: int, columns: list[str], decode: dict[str, Any]) -> None:
        import lance

        self.dataset = lance.dataset(uri, version=version)
        self.columns = columns
        self.decode = DecodeBatch(**decode)
        # Positions in a pinned version never change content: a decoded row can be reused by position.
        self.rows: BoundedLRU[int, Row] = BoundedLRU(int(decode.get("cache_mb", 0)) * 2**20, row_nbytes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def chunk_positions(batch: Mapping[str, Any]) -> list[int]:
    """The row positions of a batch of work items (each item's ``rows`` list), in order."""
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in batch["rows"]]).tolist()


def take_chunk(dataset: Any, batch: Mapping[str, Any], columns: list[str]) -> pa.Table:
    """The rows at a work item's ``rows`` positions (one list per item in ``batch``) of a pinned Lance dataset."""
    return dataset.take(chunk_positions(batch), columns=columns)


def split_positions(store: SampleStore, split: str) -> tuple[int, np.ndarray]:
    """``(version, positions)`` of the current rows of ``split`` in the samples table, read once."""
    dataset = store.samples()
    flags = dataset.to_table(columns=["split", "current"])
    mask = np.asarray(flags.column("split").to_numpy(zero_copy_only=False) == split) & np.asarray(
        flags.column("current").to_numpy(zero_copy_only=False), dtype=bool
    )
    return int(dataset.version), np.flatnonzero(mask)


def epoch_chunks(positions: np.ndarray, *, epochs: int, shuffle: bool, seed: int, chunk: int) -> list[dict[str, Any]]:
    """Work items of ``chunk`` positions each, epoch after epoch (a new permutation per epoch when shuffling)."""
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    for _ in range(max(1, epochs)):
        order = rng.permutation(positions) if shuffle else positions
        items.extend({"rows": order[i : i + chunk].tolist()} for i in range(0, len(order), chunk))
    return items


def bool_column(table: pa.Table, column: str) -> np.ndarray:
    """A boolean column as numpy, nulls read as False."""
    return np.asarray(table.column(column).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _dsm_patches(table: pa.Table) -> list[np.ndarray | None]:
    """The float16 DSM lists as ``(px, px)`` float32 arrays, sliced from the Arrow buffer (no Python floats)."""
    col = table.column("dsm").combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.float32)
    offsets = col.offsets.to_numpy()
    sizes = table.column("dsm_px").fill_null(0).to_numpy(zero_copy_only=False)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    out: list[np.ndarray | None] = []
    for i in range(len(col)):
        if not valid[i] or sizes[i] == 0:
            out.append(None)
        else:
            out.append(values[offsets[i] : offsets[i + 1]].reshape(int(sizes[i]), int(sizes[i])))
    return out


def _aerial_view(rgb: np.ndarray, size: int, quarter_turns: int, flip: bool) -> np.ndarray:
    """Rotate/flip and resize in PIL (C code): a numpy block mean per tile costs a millisecond."""
    img = Image.fromarray(rgb)
    for _ in range(quarter_turns):  # np.rot90 turns counter-clockwise, as ROTATE_90 does
        img = img.transpose(Image.Transpose.ROTATE_90)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32)


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
    decode = {"cfg": cfg, "augment": augment, "seed": seed, "keep_ids": keep_ids, "cache_mb": cache_mb,
              "features": dict(features or {})}  # fmt: skip
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        TakeAndDecode,
        fn_constructor_kwargs={"uri": store.samples_uri, "version": version, "columns": columns, "decode": decode},
        batch_format="numpy",
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=decoders),
        num_cpus=cpus_per_decoder,
    )
