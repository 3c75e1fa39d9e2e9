"""Model versions: a stable id derived from what a model directory holds, not from where it lies."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..config import load_config
from ..errors import CheckpointError, InputError

# The names UniGeoCLIP.save_pretrained writes (not imported from there: reading a model directory's
# identity must not cost importing torch and transformers).
CONFIG_FILE, WEIGHTS_FILE, TOWERS_FILE = "unigeoclip.yaml", "model.safetensors", "hf_towers.json"
TOKENIZER_DIR = "tokenizer"

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the weights, the config, the tower configs and the tokenizer files (names and bytes).

    Two copies of one model share it; retraining, a config change or another tokenizer changes it.
    """
    src = Path(model_dir)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, TOWERS_FILE) if not (src / f).is_file()]
    if missing:
        raise CheckpointError(
            f"{str(src)!r} is not a UniGeoCLIP model directory (missing {', '.join(missing)}): "
            "pass the directory that UniGeoCLIP.save_pretrained or `unigeoclip train` wrote"
        )
    files = [src / CONFIG_FILE, src / TOWERS_FILE, src / WEIGHTS_FILE]
    if (src / TOKENIZER_DIR).is_dir():
        files += sorted(p for p in (src / TOKENIZER_DIR).rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(src).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def model_version_id(model_dir: str | Path) -> str:
    """``<config name>-<first 12 hex of the fingerprint>``, e.g. ``small-3f9c0a1b2c4d``."""
    name = re.sub(r"[^a-z0-9]+", "-", load_config(Path(model_dir) / CONFIG_FILE).name.lower()).strip("-") or "model"
    return f"{name}-{model_fingerprint(model_dir)[:12]}"


def check_version_name(version: str) -> str:
    """A user-given version name must be usable as a table-name suffix and in SQL filters."""
    if not _VERSION_RE.match(version):
        raise InputError(
            f"model version {version!r} is not a valid name: use 1-100 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return version
