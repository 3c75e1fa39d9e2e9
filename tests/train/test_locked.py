"""Locked towers (LiT): the real MiniLM frozen under a trained head, its features cached beside the store.

Checked against independent references: the cache holds what the tower computes from the raw texts,
a changed tower writes a new cache, training moves the head and not one frozen weight, and the
exported model encodes raw text exactly as its head projects the cached features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from unigeoclip import Config, Modality, UniGeoCLIP
from unigeoclip.config import PACKAGED_MINILM
from unigeoclip.errors import ConfigError
from unigeoclip.ingest.pipeline import IngestSummary
from unigeoclip.reader.feature_cache import FeatureCache
from unigeoclip.samples.store import SampleStore
from unigeoclip.train.frozen import cache_refs, ensure_features
from unigeoclip.train.trainer import train

from ..helpers import store_copy, tiny_train_cfg

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LOCKED_TEXT = {"kind": "hf", "pretrained_dir": PACKAGED_MINILM, "tokenizer": "auto", "locked": True,
               "max_length": 48}  # fmt: skip


def locked_cfg(cfg: Config, **text: object) -> Config:
    return cfg.updated({"model": {"text": LOCKED_TEXT | text}})


def test_the_cache_holds_the_towers_features_and_a_second_run_computes_none(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config, tmp_path: Path
) -> None:
    store = store_copy(tiny_store[0], tmp_path / "store")
    cfg = locked_cfg(tiny_world_cfg)
    refs, stats = ensure_features(cfg, store, batch_size=16, say=lambda _: None)
    (first,) = stats
    texts = store.samples().to_table(columns=["text", "text_hash"], filter="current = true AND text_present = true")
    distinct = dict(zip(texts.column("text_hash").to_pylist(), texts.column("text").to_pylist(), strict=True))
    assert first.wanted == first.computed == len(distinct) > 10 and first.hit_rate == 0.0 and first.nbytes > 0

    cached = FeatureCache(refs["text"]).load()
    model = UniGeoCLIP.from_config(cfg).eval()
    hashes = list(distinct)[:8]
    with torch.no_grad():  # the reference: the tower itself on the raw texts
        want = model.tower(Modality.TEXT).features(**_tokens(model, [distinct[h] for h in hashes]))
    np.testing.assert_allclose(np.stack([cached[h] for h in hashes]), want.numpy(), atol=1e-5)

    _, (again,) = ensure_features(cfg, store, say=lambda _: None)
    assert again.computed == 0 and again.hit_rate == 1.0 and again.uri == first.uri

    with torch.no_grad():  # another tower (one weight moved): another key, another table; never a stale read
        next(model.tower(Modality.TEXT).backbone.parameters()).add_(1e-3)
    assert cache_refs(model, store.root)["text"].uri != first.uri
    longer = locked_cfg(tiny_world_cfg, max_length=64)  # a setting that shapes the features: a new key too
    assert cache_refs(UniGeoCLIP.from_config(longer), store.root)["text"].uri != first.uri


def test_training_a_locked_tower_moves_its_head_and_no_frozen_weight(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config, tmp_path: Path
) -> None:
    store = store_copy(tiny_store[0], tmp_path / "store")
    cfg = tiny_train_cfg(locked_cfg(tiny_world_cfg), steps=20, val_every=10)
    before = UniGeoCLIP.from_config(cfg)
    result = train(cfg, store, tmp_path / "run")
    after = UniGeoCLIP.from_pretrained(result.model_dir)
    frozen = before.tower(Modality.TEXT).backbone.state_dict()
    for name, tensor in after.tower(Modality.TEXT).backbone.state_dict().items():
        assert torch.equal(tensor, frozen[name]), name
    head_before, head_after = (x.tower(Modality.TEXT).head.linear.weight for x in (before, after))
    assert not torch.equal(head_after, head_before)
    assert (tmp_path / "run" / "feature_cache.json").is_file()

    # the exported model encodes raw text as its head projects the cached features (serving = training)
    refs, _ = ensure_features(cfg, store, say=lambda _: None)
    cached = FeatureCache(refs["text"]).load()
    texts = store.samples().to_table(columns=["text", "text_hash"], filter="text_present = true").slice(0, 6)
    with torch.no_grad():
        raw = after.encode(Modality.TEXT, texts.column("text").to_pylist())
        feats = torch.from_numpy(np.stack([cached[h] for h in texts.column("text_hash").to_pylist()]))
        projected = after.encode(Modality.TEXT, {"text_features": feats})
    torch.testing.assert_close(raw, projected, atol=1e-5, rtol=0)


def test_a_locked_tower_needs_weights_and_unlocked_layers_need_a_locked_tower(tiny_world_cfg: Config) -> None:
    with pytest.raises((ConfigError, ValueError), match="locked needs pretrained_dir"):
        tiny_world_cfg.updated({"model": {"text": {"locked": True}}})
    with pytest.raises((ConfigError, ValueError), match="only applies to a locked tower"):
        tiny_world_cfg.updated({"model": {"text": LOCKED_TEXT | {"locked": False, "unlocked_layers": 1}}})
    cfg = locked_cfg(tiny_world_cfg, unlocked_layers=2)
    tower = UniGeoCLIP.from_config(cfg).tower(Modality.TEXT)
    trainable = {n.split(".")[2] for n, p in tower.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"4", "5"}, trainable  # MiniLM's last two of six layers
    assert not cfg.model.text.cached


def _tokens(model: UniGeoCLIP, texts: list[str]) -> dict[str, torch.Tensor]:
    enc = model.tokenize(texts)
    return {"input_ids": enc["text_input_ids"], "attention_mask": enc["text_attention_mask"]}
