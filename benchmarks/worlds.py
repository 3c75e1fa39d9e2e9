"""The benchmarks' common data: one synthetic city of a chosen number of S2 cells, so figures compare."""

from __future__ import annotations

from unigeoclip import load_config
from unigeoclip.config import Config
from unigeoclip.ingest.pipeline import IngestSummary, ingest
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig


def one_city_config(preset: str, cells: int) -> Config:
    """``preset`` over a single 5 km synthetic city capped at ``cells`` cells (every year of the preset)."""
    city = {"n_cities": 1, "city_extent_m": 5000, "max_cells": cells}
    return load_config(preset, overrides={"data": {"sources": {"synthetic": city}}})


def ingest_world(cfg: Config, store: SampleStore) -> IngestSummary:
    """Ingest the config's synthetic world into ``store`` through the real Ray Data pipeline."""
    return ingest(SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data), store, cfg.data)


def tiny_db(prefix: str) -> str:
    """A local Ray, the tiny synthetic world ingested and embedded with a tiny model (two steps): the
    LanceDB directory a benchmark serves (its figures are the service's, not the model's)."""
    import tempfile
    from pathlib import Path

    from unigeoclip.cluster.runtime import ensure_ray
    from unigeoclip.embed import EmbedOptions, embed

    from tests.helpers import train_tiny

    ensure_ray()
    cfg = load_config("tiny")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    store = SampleStore(work / "store")
    ingest_world(cfg, store)
    embed(train_tiny(cfg, work / "model", steps=2, seed=1), store, work / "db", options=EmbedOptions(actors=1))
    return str(work / "db")


def replica_rss_mib() -> dict[str, float]:
    """Resident memory of the live Serve replicas, MiB, summed per deployment (``Gateway``, ``QueryEncoder``, ...)."""
    import psutil
    from ray.util.state import list_actors

    out: dict[str, float] = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")]):
        name = (a.class_name or "").rsplit(":", 1)[-1]
        if a.class_name and a.class_name.startswith("ServeReplica") and a.pid:
            out[name] = out.get(name, 0.0) + psutil.Process(int(a.pid)).memory_info().rss / 2**20
    return out
