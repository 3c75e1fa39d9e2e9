"""The run directory: its saved config's name, and runs started before that name still resume (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from unigeoclip import Config
from unigeoclip.errors import ConfigError
from unigeoclip.train.trainer import RUN_NAME, has_run, prepare_run, run_config


def test_a_run_names_its_config_as_a_model_directory_does_and_older_runs_still_resume(
    tiny_cfg: Config, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh"
    prepare_run(tiny_cfg, fresh, resume=False)
    assert (fresh / "unigeoclip.yaml").is_file() and not (fresh / "config.yaml").exists()

    old = tmp_path / "old"  # a run directory from before the rename
    (old / "ray" / RUN_NAME).mkdir(parents=True)
    tiny_cfg.save(old / "config.yaml")
    assert has_run(old) and run_config(old) == old / "config.yaml"
    more = tiny_cfg.train.steps + 5
    assert prepare_run(tiny_cfg.updated({"train": {"steps": more}}), old, resume=True).train.steps == more
    assert not (old / "unigeoclip.yaml").exists()  # the legacy file stays the one reference
    with pytest.raises(ConfigError, match="another model"):
        prepare_run(tiny_cfg.updated({"model": {"embed_dim": 2 * tiny_cfg.model.embed_dim}}), old, resume=True)
