"""The demo's checks that come before any work, and the arguments its stages get."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from unigeoclip.app.demo import DemoOptions, run_demo
from unigeoclip.errors import UniGeoCLIPError


def test_a_taken_port_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UniGeoCLIPError, match=f"port {port} on 127.0.0.1 is taken"):
            run_demo(DemoOptions(out=tmp_path / "demo", port=port), say=lambda _: None)
    assert not (tmp_path / "demo").exists()


def test_full_demo_uses_the_preset_and_quick_sets_every_stage_the_same_size(tmp_path: Path) -> None:
    full = DemoOptions(out=tmp_path)
    assert full.config_sets() == [] and full.train_args() == []
    quick = DemoOptions.quick(tmp_path, port=8123)
    assert quick.port == 8123 and quick.config_sets() == [
        "--set", "data.sources.earth.max_places=400", "--set", "data.sources.earth.landscape_max=400"
    ]  # fmt: skip
    assert quick.train_args() == ["--steps", "30", "--set", "train.val_every=30", "--set", "train.ckpt_every=30"]
    assert full.overrides() == {}
    assert quick.overrides() == {
        "data": {"sources": {"earth": {"max_places": 400, "landscape_max": 400}}},
        "train": {"steps": 30, "val_every": 30, "ckpt_every": 30},
    }
