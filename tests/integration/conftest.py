"""One local Ray cluster per test session, and a tiny synthetic store ingested once and shared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
from unigeoclip import Config, load_config
from unigeoclip.cluster.runtime import ensure_ray
from unigeoclip.ingest.pipeline import IngestSummary, ingest
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSource


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict]:
    resources = ensure_ray(num_cpus=2)
    yield resources
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_world_cfg() -> Config:
    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_store(
    ray_cluster: dict, tiny_world_cfg: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SampleStore, IngestSummary]:
    """The tiny synthetic world (2 cities, 3 years) ingested through the real Ray Data pipeline."""
    store = SampleStore(tmp_path_factory.mktemp("stores") / "tiny")
    source = SyntheticSource(tiny_world_cfg.data.sources.synthetic, tiny_world_cfg.data)
    summary = ingest(source, store, tiny_world_cfg.data)
    return store, summary
