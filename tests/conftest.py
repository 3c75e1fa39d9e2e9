"""Shared fixtures: tiny configs, models and batches the tests build themselves (nothing downloaded)."""

from __future__ import annotations

import os

# Nothing in the test suite may reach a model hub: fail loudly instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from unigeoclip import Config, UniGeoCLIP, load_config


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return load_config("tiny")


@pytest.fixture()
def tiny_model(tiny_cfg: Config) -> UniGeoCLIP:
    torch.manual_seed(0)
    return UniGeoCLIP.from_config(tiny_cfg).eval()
