"""Splits by place and time, never by row: neighbouring cells leak, so hold-outs are whole regions or years."""

from __future__ import annotations

from typing import get_args

from ..config import SplitConfig, SplitName
from ..geo.s2 import parent_token, stable_fraction

SPLITS: tuple[str, ...] = get_args(SplitName)
TRAIN, TEST_YEAR, TEST_REGION = SPLITS


def held_out_region(cell_token: str, cfg: SplitConfig) -> bool:
    """Whether the cell's S2 parent (at ``region_parent_level``) is held out for out-of-distribution tests."""
    parent = parent_token(cell_token, cfg.region_parent_level)
    return parent in cfg.holdout_regions or stable_fraction(parent, cfg.salt) < cfg.region_fraction


def assign_split(cell_token: str, year: int, cfg: SplitConfig) -> str:
    """``test_region`` for held-out parents (all years), else ``test_year`` for the held-out year, else ``train``."""
    if held_out_region(cell_token, cfg):
        return TEST_REGION
    if cfg.holdout_year is not None and year == cfg.holdout_year:
        return TEST_YEAR
    return TRAIN
