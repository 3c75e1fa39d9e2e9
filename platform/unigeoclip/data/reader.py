"""The training reader: the sample store as a Ray Data stream of model-ready tensors with presence masks.

``build_dataset(cfg, store, split)`` reads the current rows of one split and decodes
them in a pool of actors (each loads its tokenizer once) into the batch contract of
:mod:`unigeoclip.modality`, ready for ``iter_torch_batches`` inside a Ray Train worker.
Training batches are augmented: aerial tiles and DSMs share one random flip/rotation
(they stay co-registered), street views are perspective crops at a random yaw, pitch
and field of view. Other splits get the canonical view: north up, looking along the
view's heading, level, at the middle field of view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from ..config import Config
from ..modality import Modality, present_key
from .augment import flip_rotate, perspective_view, resize
from .imaging import decode_rgb
from .splits import SPLITS, TRAIN
from .store import SampleStore

ROW_COLUMNS = ["sample_id", "lat_deg", "lon_deg", "aerial", "street", "dsm", "dsm_px", "text"]


class DecodeBatch:
    """Ray Data transform: stored rows (pyarrow) -> ``dict[str, np.ndarray]`` in the batch contract."""

    def __init__(self, cfg: Config, *, augment: bool, seed: int = 0, keep_ids: bool = False) -> None:
        self.cfg, self.augment, self.keep_ids = cfg, augment, keep_ids
        self.modalities = cfg.model.modalities
        self.rng = np.random.default_rng(seed)
        self.tokenizer = None
        if Modality.TEXT in self.modalities:
            from ..models.tokenizer import build_tokenizer

            self.tokenizer = build_tokenizer(cfg.model.text)

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        rows = table.to_pylist()
        n = len(rows)
        mc = self.cfg.model
        out: dict[str, np.ndarray] = {}
        presents = {m: np.array([bool(r[f"{m.value}_present"]) for r in rows]) for m in self.modalities}
        geo = [self._geometry() for _ in rows]  # one dihedral transform per sample, shared from above
        if Modality.AERIAL in self.modalities:
            size = mc.aerial.image_size
            arr = np.zeros((n, 3, size, size), np.float32)
            for i, r in enumerate(rows):
                if presents[Modality.AERIAL][i]:
                    img = flip_rotate([decode_rgb(r["aerial"])], *geo[i])[0]
                    arr[i] = resize(img, size).transpose(2, 0, 1) / 255.0
            out["aerial"] = arr
        if Modality.DSM in self.modalities:
            size = mc.dsm.image_size
            arr = np.zeros((n, 1, size, size), np.float32)
            for i, r in enumerate(rows):
                if presents[Modality.DSM][i]:
                    px = int(r["dsm_px"])
                    dsm = np.asarray(r["dsm"], np.float32).reshape(px, px)
                    arr[i, 0] = resize(flip_rotate([dsm], *geo[i])[0], size)
            out["dsm"] = arr
        if Modality.STREET in self.modalities:
            size = mc.street.image_size
            arr = np.zeros((n, 3, size, size), np.float32)
            for i, r in enumerate(rows):
                if presents[Modality.STREET][i] and r["street"]:
                    arr[i] = self._street_view(r["street"], size).transpose(2, 0, 1) / 255.0
            out["street"] = arr
        if Modality.TEXT in self.modalities:
            from ..models.tokenizer import tokenize

            assert self.tokenizer is not None
            texts = [r["text"] if presents[Modality.TEXT][i] else "" for i, r in enumerate(rows)]
            enc = tokenize(self.tokenizer, texts, mc.text.max_length)
            out["text_input_ids"] = enc["text_input_ids"].numpy()
            out["text_attention_mask"] = enc["text_attention_mask"].numpy()
        if Modality.COORDS in self.modalities:
            out["coords"] = np.array([[r["lat_deg"], r["lon_deg"]] for r in rows], np.float32).reshape(n, 2)
        for m in self.modalities:
            out[present_key(m)] = presents[m]
        if self.keep_ids:
            out["sample_id"] = np.array([r["sample_id"] for r in rows], dtype=object)
        return out

    def _geometry(self) -> tuple[int, bool]:
        if not (self.augment and self.cfg.data.augment.aerial_flip_rotate):
            return 0, False
        return int(self.rng.integers(4)), bool(self.rng.integers(2))

    def _street_view(self, views: list[dict[str, Any]], size: int) -> np.ndarray:
        aug = self.cfg.data.augment
        view = views[int(self.rng.integers(len(views)))] if self.augment else views[0]
        image = decode_rgb(view["image"])
        pano = view["projection"] == "equirectangular"
        lo, hi = aug.street_fov_deg
        if self.augment:
            fov = float(self.rng.uniform(lo, hi)) if pano else float(self.rng.uniform(0.6, 1.0)) * view["fov_deg"]
            spare = 180.0 if pano else max(0.0, (view["fov_deg"] - fov) / 2)
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


def batch_rows(batch: Mapping[str, Any]) -> int:
    """Number of samples in a batch dict (every value has them as its first dimension)."""
    return len(next(iter(batch.values())))


def load_batches(
    cfg: Config, store: SampleStore | str, split: str, *, batch_size: int = 128, max_samples: int | None = None
) -> list[dict[str, np.ndarray]]:
    """A whole (small) split decoded once, un-augmented, as numpy batches held in memory (validation sets)."""
    out, seen = [], 0
    for batch in build_dataset(cfg, store, split, augment=False).iter_batches(batch_size=batch_size):
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
) -> ray.data.Dataset:
    """The current samples of ``split`` as a Ray Data dataset of model-ready numpy batches.

    ``augment`` defaults to ``split == "train"``. ``keep_ids`` adds ``sample_id`` (strings:
    use ``iter_batches``, not ``iter_torch_batches``). ``decoders`` actors, each reserving
    ``cpus_per_decoder`` CPUs, decode in parallel with whatever consumes the stream.
    ``epochs`` > 1 repeats the split in one stream (block order reshuffled each time):
    one execution for a whole training run, instead of a pipeline restart per epoch.
    """
    import lance_ray

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    if not store.has_samples():
        raise FileNotFoundError(f"no sample store at {store.root}: run `unigeoclip ingest --store {store.root}` first")
    columns = ROW_COLUMNS + [f"{m.value}_present" for m in cfg.model.modalities]
    reads = [
        lance_ray.read_lance(
            store.samples_uri,
            columns=columns,
            filter=f"split = '{split}' AND current = true",
            ray_remote_args={"num_cpus": min(1.0, cpus_per_decoder)},  # reading is light; a whole CPU could starve
        ).randomize_block_order(seed=seed + e)
        for e in range(max(1, epochs))
    ]
    ds = reads[0].union(*reads[1:]) if epochs > 1 else reads[0]
    return ds.map_batches(
        DecodeBatch,
        fn_constructor_kwargs={
            "cfg": cfg,
            "augment": split == TRAIN if augment is None else augment,
            "seed": seed,
            "keep_ids": keep_ids,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=decoders),
        num_cpus=cpus_per_decoder,
    )
