"""Test helpers: distinct synthetic samples for any model (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch
from unigeoclip import Config, Modality, UniGeoCLIP
from unigeoclip.data.store import SampleStore
from unigeoclip.losses import ContrastiveLoss
from unigeoclip.modality import present_key
from unigeoclip.store import EmbeddingDB
from unigeoclip.train.module import TrainModule
from unigeoclip.train.step import PlainEngine, train_step


def random_locations(n: int, seed: int = 0) -> torch.Tensor:
    """``(n, 2)`` lat_deg, lon_deg spread over the globe."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g, dtype=torch.float64) * 160 - 80
    lon = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    return torch.stack((lat, lon), dim=1).float()


def make_batch(
    model: UniGeoCLIP, n: int, seed: int = 0, missing: dict[Modality, list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """A batch of ``n`` distinct synthetic samples for every tower of ``model``; ``missing`` rows are masked."""
    g = torch.Generator().manual_seed(seed)
    mc = model.config.model
    batch: dict[str, torch.Tensor] = {}
    for m in model.modalities:
        if m in (Modality.AERIAL, Modality.STREET):
            size = getattr(mc, m.value).image_size
            batch[m.value] = torch.rand(n, 3, size, size, generator=g)
        elif m is Modality.DSM:
            size = mc.dsm.image_size
            batch["dsm"] = 20.0 * torch.rand(n, 1, size, size, generator=g)
        elif m is Modality.TEXT:
            words = ["harbour", "market", "tower", "park", "canal", "station", "bakery", "mill"]
            texts = [f"{words[i % 8]} street {i}, near the {words[(i * 3) % 8]} of district {i // 8}" for i in range(n)]
            batch.update(model.tokenize(texts))
        else:
            batch["coords"] = random_locations(n, seed)
        present = torch.ones(n, dtype=torch.bool)
        for row in (missing or {}).get(m, []):
            present[row] = False
        batch[present_key(m)] = present
    return batch


def train_tiny(cfg: Config, out: Path, *, steps: int, seed: int) -> Path:
    """A few optimizer steps of the real loss in this process (no Ray): weights a version can be told apart by."""
    torch.manual_seed(seed)
    model = UniGeoCLIP.from_config(cfg)
    module = TrainModule(model, ContrastiveLoss(cfg.loss, cfg.model.modalities))
    engine = PlainEngine(module, torch.optim.AdamW(module.parameters(), lr=3e-3))
    for step in range(steps):
        train_step(engine, make_batch(model, 16, seed=seed * 1000 + step))
    return model.eval().save_pretrained(out)


MODALITIES = [m.value for m in Modality]


def expected_keys(store: SampleStore) -> set[tuple[str, str, str]]:
    """(item, modality, content hash) of every present modality of every current sample."""
    cols = ["sample_id", "current"] + [f"{m}_{s}" for m in MODALITIES for s in ("present", "hash")]
    rows = store.samples().to_table(columns=cols).to_pylist()
    return {(r["sample_id"], m, r[f"{m}_hash"]) for r in rows if r["current"] for m in MODALITIES if r[f"{m}_present"]}


def stored_rows(db: Path, version: str) -> pa.Table:
    return EmbeddingDB(db).embeddings(version).to_lance().to_table()


def stored_keys(db: Path, version: str) -> list[tuple[str, str, str]]:
    t = stored_rows(db, version)
    return list(zip(t["item_id"].to_pylist(), t["modality"].to_pylist(), t["content_hash"].to_pylist(), strict=True))
