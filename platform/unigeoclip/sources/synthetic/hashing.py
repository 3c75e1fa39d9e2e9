"""Deterministic pseudo-randomness keyed by world position, so any cell renders on its own."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def unit(*keys: object) -> float:
    """A number in [0, 1) fixed by ``keys`` (the same on every machine and Python run)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def uniform(lo: float, hi: float, *keys: object) -> float:
    """A number in [``lo``, ``hi``) fixed by ``keys``."""
    return lo + (hi - lo) * unit(*keys)


def choice(options: Sequence[T], *keys: object) -> T:
    """One of ``options``, fixed by ``keys``."""
    return options[int(unit(*keys) * len(options))]


def rng(*keys: object) -> np.random.Generator:
    """A numpy generator seeded from ``keys`` (textures, jitter)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))
