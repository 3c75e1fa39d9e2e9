"""Loading HF towers from local directories only (nothing is ever fetched from a hub)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a local HF model directory, with a clear error if it is not one."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{str(directory)!r} is not a local Hugging Face model directory (no config.json); "
            "pretrained weights are only loaded from local directories"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data
