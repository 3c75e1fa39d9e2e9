"""The benchmarks' common data: one synthetic city of a chosen number of S2 cells, so figures compare."""

from __future__ import annotations

from unigeoclip import load_config
from unigeoclip.config import Config
from unigeoclip.data.ingest import IngestSummary, ingest
from unigeoclip.data.sources.synthetic import SyntheticSource
from unigeoclip.data.store import SampleStore


def one_city_config(preset: str, cells: int) -> Config:
    """``preset`` over a single 5 km synthetic city capped at ``cells`` cells (every year of the preset)."""
    city = {"n_cities": 1, "city_extent_m": 5000, "max_cells": cells}
    return load_config(preset, overrides={"data": {"sources": {"synthetic": city}}})


def ingest_world(cfg: Config, store: SampleStore) -> IngestSummary:
    """Ingest the config's synthetic world into ``store`` through the real Ray Data pipeline."""
    return ingest(SyntheticSource(cfg.data.sources.synthetic, cfg.data), store, cfg.data)
