"""Fill the feature caches of a config's locked towers before training reads them.

For every locked tower without unlocked layers (``model.<m>.cached``): the key of the tower
(its weights and feature settings), the content hashes of the store's current samples that
have the modality, and the features of those the cache lacks, computed here in batches from
the canonical (un-augmented) inputs. A second run with the same tower computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Config
from ..modality import Modality, present_key
from ..models import UniGeoCLIP
from ..models.blocks import LockableTower
from ..preprocess.batch import DecodeBatch
from ..preprocess.spec import PreprocessSpec
from ..reader.feature_cache import CacheRef, FeatureCache, table_uri
from ..samples.store import SampleStore

CACHEABLE = (Modality.AERIAL, Modality.STREET, Modality.TEXT)
COMMIT_ROWS = 4096  # features appended per write: a crash recomputes at most this many


@dataclass
class CacheStats:
    """A locked tower's feature cache for a run: contents wanted, cached and computed, and its size."""

    modality: str
    uri: str
    wanted: int  # distinct contents of the store's current samples
    computed: int  # of which this call computed (the rest were cached: the hit rate)
    seconds: float
    nbytes: int

    @property
    def hit_rate(self) -> float:
        """The share of wanted contents that were cached already (1.0 when nothing is wanted)."""
        return 1.0 - self.computed / self.wanted if self.wanted else 1.0

    def __str__(self) -> str:
        return (
            f"{self.modality} features: {self.wanted} contents, {self.wanted - self.computed} cached "
            f"({self.hit_rate:.0%}), {self.computed} computed in {self.seconds:.1f} s; {self.nbytes / 2**20:.1f} MiB "
            f"at {self.uri}"
        )


def locked_modalities(cfg: Config) -> list[Modality]:
    """The modalities of ``cfg``'s model whose locked towers' features are cached (``model.<m>.cached``)."""
    return [m for m in cfg.model.modalities if m in CACHEABLE and getattr(cfg.model, m.value).cached]


def tower_key(tower: LockableTower, settings: dict[str, object]) -> str:
    """A hash of the tower's backbone weights and of the settings that shape its features (16 hex digits)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(tower.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _settings(model: UniGeoCLIP, m: Modality) -> dict[str, object]:
    mc = model.config.model
    if m is Modality.TEXT:
        assert model.tokenizer is not None
        vocab = hashlib.sha256(json.dumps(sorted(model.tokenizer.get_vocab().items())).encode()).hexdigest()
        return {"kind": mc.text.kind, "pooling": mc.text.pooling_or_default, "max_length": mc.text.max_length,
                "vocab": vocab}  # fmt: skip
    tower = getattr(mc, m.value)
    return {"image_size": tower.image_size, "preprocessing": "canonical-v1"}


def cache_refs(model: UniGeoCLIP, store_root: str) -> dict[str, CacheRef]:
    """Where each locked tower of ``model`` keeps its features for the store at ``store_root``."""
    refs = {}
    for m in locked_modalities(model.config):
        tower = model.tower(m)
        assert isinstance(tower, LockableTower)
        key = tower_key(tower, _settings(model, m))
        refs[m.value] = CacheRef(m.value, table_uri(store_root, m.value, key), tower.feature_dim)
    return refs


def ensure_features(
    cfg: Config, store: SampleStore, *, batch_size: int = 128, say: Callable[[str], None] = print
) -> tuple[dict[str, CacheRef], list[CacheStats]]:
    """Compute what the caches of ``cfg``'s locked towers lack for ``store``'s current samples."""
    if not locked_modalities(cfg):
        return {}, []
    model = UniGeoCLIP.from_config(cfg).eval()
    refs = cache_refs(model, store.root)
    stats = []
    for name, ref in refs.items():
        m = Modality(name)
        started = time.perf_counter()
        cache = FeatureCache(ref)
        have = cache.hashes()
        table = store.samples().to_table(
            columns=["sample_id", "lat_deg", "lon_deg", f"{name}_hash", present_key(m), m.value],
            filter=f"current = true AND {present_key(m)} = true",
        )
        hashes = table.column(f"{name}_hash").to_pylist()
        first = {h: i for i, h in reversed(list(enumerate(hashes)))}  # one row per distinct content
        todo = sorted(i for h, i in first.items() if h not in have)
        decode = DecodeBatch(PreprocessSpec.of(cfg, modalities=(m,)), augment=False)
        tower = model.tower(m)
        pending_h: list[str] = []
        pending_f: list[np.ndarray] = []
        for start in range(0, len(todo), batch_size):
            rows = table.take(todo[start : start + batch_size])
            batch = decode(rows)
            with torch.no_grad():
                feats = _features(tower, m, batch)
            pending_h += rows.column(f"{name}_hash").to_pylist()
            pending_f.append(feats)
            if len(pending_h) >= COMMIT_ROWS or start + batch_size >= len(todo):
                cache.append(pending_h, np.concatenate(pending_f))
                say(f"  {name} features: {start + len(rows)}/{len(todo)} computed")
                pending_h, pending_f = [], []
        stats.append(CacheStats(name, ref.uri, len(first), len(todo), time.perf_counter() - started, cache.nbytes()))
        say(str(stats[-1]))
    return refs, stats


def _features(tower: torch.nn.Module, m: Modality, batch: dict[str, np.ndarray]) -> np.ndarray:
    if m is Modality.TEXT:
        ids = torch.from_numpy(batch["text_input_ids"])
        mask = torch.from_numpy(batch["text_attention_mask"])
        out = tower.features(ids, mask)  # type: ignore[operator]
    else:
        out = tower.features(torch.from_numpy(batch[m.value]))  # type: ignore[operator]
    return np.asarray(out.float().numpy(), np.float32)
