"""Test helpers: distinct synthetic samples for any model (nothing downloaded)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import s2sphere
import torch
from unigeoclip import Config, Modality, UniGeoCLIP
from unigeoclip.losses import ContrastiveLoss
from unigeoclip.modality import present_key
from unigeoclip.samples.store import SampleStore
from unigeoclip.train.module import TrainModule
from unigeoclip.train.step import PlainEngine, train_step
from unigeoclip.vectors import EmbeddingDB
from unigeoclip.vectors.schema import embedding_schema
from unigeoclip.vectors.writer import upsert


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
    return list(zip(t["sample_id"].to_pylist(), t["modality"].to_pylist(), t["content_hash"].to_pylist(), strict=True))


# A small embedding database without a model: random unit vectors around two cities, two modalities per item.
DB_DIM = 16
DB_MODALITIES = ("aerial", "text")


def embedding_rows(n: int, version: str, seed: int = 0) -> pa.Table:
    """Random unit vectors at random places around two cities, two modalities per item."""
    rng = np.random.default_rng(seed)
    items = n // len(DB_MODALITIES)
    lat = np.where(rng.random(items) < 0.5, 48.85, -33.87) + rng.normal(0, 0.05, items)
    lon = np.where(lat > 0, 2.35, 151.2) + rng.normal(0, 0.05, items)
    cells = [
        s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).parent(16)
        for a, b in zip(lat, lon, strict=True)
    ]
    vec = rng.standard_normal((items * len(DB_MODALITIES), DB_DIM)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    rep = np.repeat(np.arange(items), len(DB_MODALITIES))
    data = {
        "sample_id": [f"item{i}" for i in rep],
        "modality": [DB_MODALITIES[j % len(DB_MODALITIES)] for j in range(len(rep))],
        "model_version": [version] * len(rep),
        "content_hash": [f"h{i}" for i in rep],
        "cell_token": [cells[i].to_token() for i in rep],
        "cell_id": pa.array([cells[i].id() for i in rep], pa.uint64()),
        "lat_deg": lat[rep],
        "lon_deg": lon[rep],
        "year": pa.array(2021 + rep % 3, pa.int16()),
        "split": ["train"] * len(rep),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DB_DIM),
        "embed_run": ["test"] * len(rep),
        "written_at": pa.array([datetime.now(UTC)] * len(rep), pa.timestamp("us", tz="UTC")),
    }
    return pa.table(data, schema=embedding_schema(DB_DIM))


def db_with(tmp_path: Path, rows: pa.Table, version: str = "v1") -> tuple[EmbeddingDB, object]:
    """An embedding database with one version holding ``rows`` (from :func:`embedding_rows`)."""
    db = EmbeddingDB(tmp_path / "db")
    table = db.register_version(
        version, fingerprint="f" * 64, model_dir="/m", embed_dim=DB_DIM, modalities=list(DB_MODALITIES)
    )
    upsert(table, rows)
    return db, table


def tiny_train_cfg(cfg: Config, **train: object) -> Config:
    """``cfg`` with a short two-worker training run that fits this machine (keys of ``train`` override)."""
    base = {"workers": 2, "micro_batch": 16, "steps": 30, "lr": 3e-3, "warmup_steps": 3, "log_every": 5,
            "ckpt_every": 10, "val_every": 10, "cpus_per_worker": 0.5, "cpus_per_decoder": 0.25}  # fmt: skip
    return cfg.updated({"train": base | train})


def store_copy(store: SampleStore, dest: Path) -> SampleStore:
    """A private copy of a shared store, for tests that write to it."""
    import shutil

    shutil.copytree(store.root, dest)
    return SampleStore(dest)


def requires_extra(extra: str, module: str) -> Any:
    """``module``, or a skip of the caller (a test, or the test module importing it at collection) saying which of
    the project's extras to install; ``make install`` installs them all, so CI never skips."""
    return pytest.importorskip(module, reason=f"needs the '{extra}' extra: pip install -e '.[{extra}]'")
