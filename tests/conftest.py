"""Shared fixtures: tiny configs, models and batches the tests build themselves (nothing downloaded), one local
Ray per session and a tiny synthetic store ingested once (started only by the tests that ask for them).

The tests mirror the library's packages (``tests/<package>/``); markers say what a test needs: ``slow``,
``integration`` (a local Ray or several processes), ``cluster`` (multi-node clusters of its own).
"""

from __future__ import annotations

import os

# Nothing in the test suite may reach a model hub: fail loudly instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator

import pytest
import ray
import torch
from unigeoclip import Config, UniGeoCLIP, load_config
from unigeoclip.cluster.runtime import ensure_ray
from unigeoclip.ingest.pipeline import IngestSummary, ingest
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return load_config("tiny")


@pytest.fixture()
def tiny_model(tiny_cfg: Config) -> UniGeoCLIP:
    torch.manual_seed(0)
    return UniGeoCLIP.from_config(tiny_cfg).eval()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Multi-node tests first: they start Ray clusters of their own, which needs a process that has not yet joined
    the session's local Ray (started by the first test that asks for ``ray_cluster``)."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("cluster") else 1)


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
    source = SyntheticSource(SyntheticSourceConfig.of(tiny_world_cfg.data), tiny_world_cfg.data)
    summary = ingest(source, store, tiny_world_cfg.data)
    return store, summary
