"""Stored rows -> model inputs: the one preprocessor the reader, the embedding job and the evaluation share.

:class:`DecodeBatch` turns rows of the sample store (pyarrow) into the batch contract of
:mod:`unigeoclip.modality` for a :class:`~.spec.PreprocessSpec`: the canonical view (:mod:`.views`) for
embedding and evaluation, or training's augmentation (a dihedral transform shared by the aerial tile
and the DSM, random street crops, colour and coordinate jitter). No Ray here: the reader runs it in
Ray Data actors, the evaluation in process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CheckpointError
from ..modality import Modality, features_key, present_key
from .augment import flip_rotate, jitter_coords, perspective_view, photometric_jitter
from .decode_cache import DecodedImageCache
from .imaging import decode_rgb
from .spec import PreprocessSpec
from .text import build_tokenizer, tokenize
from .views import aerial_view, canonical_street_view, chw, dsm_view


@dataclass(frozen=True)
class CachedFeatures:
    """A locked tower's features by content hash (loaded from its feature cache), ``dim`` wide."""

    dim: int
    by_hash: Mapping[str, np.ndarray]

    def lookup(self, hashes: list[str], present: np.ndarray) -> np.ndarray:
        """``(B, dim)`` features of a batch's present rows (zeros for absent ones); a missing hash is an error."""
        out = np.zeros((len(hashes), self.dim), np.float32)
        for i, (h, p) in enumerate(zip(hashes, present, strict=True)):
            if not p:
                continue
            found = self.by_hash.get(h)
            if found is None:
                raise CheckpointError(
                    f"content {h} has no cached feature: the cache was filled before this sample was ingested; "
                    "training fills it at start (unigeoclip.train.frozen.ensure_features)"
                )
            out[i] = found
        return out


ROW_COLUMNS = ["sample_id", "lat_deg", "lon_deg", "aerial", "street", "dsm", "dsm_px", "text"]


class DecodeBatch:
    """Ray Data transform: stored rows (pyarrow) -> ``dict[str, np.ndarray]`` in the batch contract."""

    def __init__(
        self,
        spec: PreprocessSpec,
        *,
        augment: bool,
        seed: int = 0,
        keep_ids: bool = False,
        cache_mb: int = 0,
        features: Mapping[str, CachedFeatures] | None = None,
    ) -> None:
        """Decodes ``spec.modalities`` (``()``: none). ``features``: modalities of locked towers whose cached
        features go into the batch as ``<m>_features`` instead of their inputs."""
        self.spec, self.augment, self.keep_ids = spec, augment, keep_ids
        self.images = DecodedImageCache(cache_mb * 2**20)
        self.modalities = spec.modalities
        self.rng = np.random.default_rng(seed)
        self.features = dict(features or {})
        self.tokenizer = None
        if Modality.TEXT in self.modalities and Modality.TEXT.value not in self.features:
            self.tokenizer = build_tokenizer(spec.text)

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        """Rows -> the batch contract: images ``(B, C, S, S)``, tokens, coords ``(B, 2)``, masks (absent: zeros)."""
        n = table.num_rows
        spec = self.spec
        out: dict[str, np.ndarray] = {}
        presents = {m: bool_column(table, f"{m.value}_present") for m in self.modalities}
        for name, cached in self.features.items():
            hashes = table.column(f"{name}_hash").to_pylist()
            out[features_key(Modality(name))] = cached.lookup(hashes, presents[Modality(name)])
        geo = [self._geometry() for _ in range(n)]  # one dihedral transform per sample, shared from above
        if Modality.AERIAL in self.modalities and "aerial" not in self.features:
            size = spec.aerial_size
            arr = np.zeros((n, 3, size, size), np.float32)
            for i, data in enumerate(table.column("aerial").to_pylist()):
                if presents[Modality.AERIAL][i]:
                    arr[i] = chw(aerial_view(self.images.get(data, decode_rgb), size, *geo[i]))
            out["aerial"] = arr
        if Modality.DSM in self.modalities:
            size = spec.dsm_size
            arr = np.zeros((n, 1, size, size), np.float32)
            for i, dsm in enumerate(dsm_patches(table)):
                if presents[Modality.DSM][i] and dsm is not None:
                    arr[i, 0] = dsm_view(flip_rotate([dsm], *geo[i])[0], size)
            out["dsm"] = arr
        if Modality.STREET in self.modalities and "street" not in self.features:
            size = spec.street_size
            arr = np.zeros((n, 3, size, size), np.float32)
            for i, views in enumerate(table.column("street").to_pylist()):
                if presents[Modality.STREET][i] and views:
                    arr[i] = chw(self._street_view(views, size))
            out["street"] = arr
        if Modality.TEXT in self.modalities and "text" not in self.features:
            assert self.tokenizer is not None
            texts = [
                t if p else "" for t, p in zip(table.column("text").to_pylist(), presents[Modality.TEXT], strict=True)
            ]
            enc = tokenize(self.tokenizer, texts, spec.text.max_length)
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
        aug = self.spec.augment
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
        aug = self.spec.augment
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
        if not (self.augment and self.spec.augment.aerial_flip_rotate):
            return 0, False
        return int(self.rng.integers(4)), bool(self.rng.integers(2))

    def _street_view(self, views: list[dict[str, Any]], size: int) -> np.ndarray:
        aug = self.spec.augment
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
            return canonical_street_view(
                image, self.spec, projection=view["projection"], heading_deg=view["heading_deg"],
                fov_deg=float(view["fov_deg"]),
            )  # fmt: skip
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


def bool_column(table: pa.Table, column: str) -> np.ndarray:
    """A boolean column as numpy, nulls read as False."""
    return np.asarray(table.column(column).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def dsm_patches(table: pa.Table) -> list[np.ndarray | None]:
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
