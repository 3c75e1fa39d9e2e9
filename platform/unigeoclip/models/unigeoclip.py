"""The five-tower model: one encoder per modality into one shared, L2-normalised space."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from .. import atomic
from ..config import Config, load_config
from ..errors import CheckpointError, InputError, ModalityError
from ..geo.coords import LATLON_RANGE, valid_latlon
from ..modality import INPUT_KEYS, Modality, features_key, modalities_in, present_key
from ..preprocess.spec import PreprocessSpec
from ..preprocess.text import Tokenizer, build_tokenizer, load_saved_tokenizer, tokenize
from .blocks import LockableTower
from .coords import build_location_encoder
from .dsm import DSMTower
from .image import ImageTower
from .text import TextTower

CONFIG_FILE = "unigeoclip.yaml"
WEIGHTS_FILE = "model.safetensors"
TOWERS_FILE = "hf_towers.json"
TOKENIZER_DIR = "tokenizer"

TextInput = Sequence[str] | Mapping[str, torch.Tensor]


def batch_tensors(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A decoded numpy batch as tensors on ``device`` (string columns such as ids left out).

    Arrays from Ray's object store are read-only: they are copied, as torch may write to its tensors.
    """
    return {k: torch.from_numpy(np.array(v)).to(device) for k, v in batch.items() if v.dtype != object}


class UniGeoCLIP(nn.Module):
    """Towers in an ``nn.ModuleDict`` keyed by modality; ``forward(batch)`` returns a dict of embeddings."""

    def __init__(
        self,
        cfg: Config,
        *,
        hf_configs: Mapping[str, dict[str, Any]] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        self.config = cfg
        mc = cfg.model
        saved = dict(hf_configs or {})
        self.tokenizer: Tokenizer | None = None
        towers: dict[str, nn.Module] = {}
        for m in mc.modalities:
            if m in (Modality.AERIAL, Modality.STREET):
                towers[m.value] = ImageTower(getattr(mc, m.value), mc.embed_dim, saved.get(m.value))
            elif m is Modality.DSM:
                towers[m.value] = DSMTower(mc.dsm, mc.embed_dim)
            elif m is Modality.TEXT:
                self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(mc.text)
                towers[m.value] = TextTower(mc.text, mc.embed_dim, self.tokenizer, saved.get(m.value))
            else:
                towers[m.value] = build_location_encoder(mc.coords, mc.coords_width, mc.embed_dim)
        self.towers = nn.ModuleDict(towers)

    @classmethod
    def from_config(cls, cfg: Config) -> UniGeoCLIP:
        """A randomly initialised model (towers with ``pretrained_dir`` load those local weights)."""
        return cls(cfg)

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """The model's modalities, in tower order."""
        return tuple(Modality(k) for k in self.towers)

    @property
    def embed_dim(self) -> int:
        """Width ``D`` of the shared embedding space."""
        return self.config.model.embed_dim

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        return next(self.parameters()).device

    def tower(self, modality: Modality | str) -> nn.Module:
        """The tower of one modality; :class:`ModalityError` when the model has none."""
        m = Modality.parse(modality)
        if m.value not in self.towers:
            have = ", ".join(self.towers.keys())
            raise ModalityError(f"this model has no {m.value!r} tower (it has: {have})")
        return self.towers[m.value]

    def preprocess_spec(self) -> PreprocessSpec:
        """What this model is fed: the one spec the reader, the embedding job, the evaluation and the service use."""
        return PreprocessSpec.of(self.config)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings -> ``text_input_ids`` / ``text_attention_mask`` of shape ``(B, max_length)``."""
        if self.tokenizer is None:
            raise ModalityError("this model has no text tower, so it cannot tokenize")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts must be a list of strings")
        return tokenize(self.tokenizer, list(texts), self.config.model.text.max_length)

    def encode(self, modality: Modality | str, inputs: torch.Tensor | TextInput) -> torch.Tensor:
        """One modality's inputs -> ``(B, D)`` unit vectors.

        ``inputs``: a tensor in the layout of :data:`unigeoclip.modality.INPUT_KEYS`, a batch
        dict holding those keys (or a locked tower's ``<m>_features``), or for text a list of strings.
        """
        m = Modality.parse(modality)
        tower = self.tower(m)
        device = self.device
        if isinstance(inputs, Mapping) and features_key(m) in inputs:  # a locked tower's cached features
            if not isinstance(tower, LockableTower):
                raise InputError(f"{features_key(m)} given, but the {m.value} tower takes its inputs, not features")
            return tower.project(torch.as_tensor(inputs[features_key(m)], device=device))
        if m is Modality.TEXT:
            if isinstance(inputs, Mapping):
                ids = inputs.get("text_input_ids", inputs.get("input_ids"))
                mask = inputs.get("text_attention_mask", inputs.get("attention_mask"))
                if ids is None or mask is None:
                    raise InputError("text inputs need text_input_ids and text_attention_mask")
            else:
                if isinstance(inputs, torch.Tensor):
                    raise InputError("text inputs are a list of strings or a dict of token tensors, not a tensor")
                enc = self.tokenize(inputs)
                ids, mask = enc["text_input_ids"], enc["text_attention_mask"]
            return tower(ids.to(device), mask.to(device))
        if isinstance(inputs, Mapping):
            inputs = inputs[INPUT_KEYS[m][0]]
        x = torch.as_tensor(inputs, device=device)
        if m is Modality.COORDS:
            _check_coords(x)
        return tower(x)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[Modality, torch.Tensor]:
        """Embeddings ``(B, D)`` of every modality whose inputs are in ``batch``; absent rows are zero."""
        out: dict[Modality, torch.Tensor] = {}
        for m in modalities_in(dict(batch)):
            if m.value not in self.towers:
                continue
            z = self.encode(m, batch)
            mask = batch.get(present_key(m))
            out[m] = z if mask is None else z * mask.to(device=z.device, dtype=z.dtype).unsqueeze(1)
        return out

    @torch.no_grad()
    def encode_batches(
        self, batches: Iterable[Mapping[str, np.ndarray]]
    ) -> tuple[dict[Modality, np.ndarray], dict[Modality, np.ndarray]]:
        """Embeddings ``(N, D)`` (zero where absent) and presence masks ``(N,)`` of decoded batches, in eval mode.

        The one way a held-out split is encoded: the training loop's validation and the evaluation call it.
        """
        was_training = self.training
        self.eval()
        embs: dict[Modality, list[np.ndarray]] = {}
        present: dict[Modality, list[np.ndarray]] = {}
        try:
            for batch in batches:
                for m, z in self(batch_tensors(batch, self.device)).items():
                    embs.setdefault(m, []).append(z.float().cpu().numpy())
                    present.setdefault(m, []).append(np.asarray(batch[present_key(m)], dtype=bool))
        finally:
            self.train(was_training)
        return {m: np.concatenate(v) for m, v in embs.items()}, {m: np.concatenate(v) for m, v in present.items()}

    # -- persistence -------------------------------------------------------------------------

    def hf_tower_configs(self) -> dict[str, dict[str, Any]]:
        """The configs of the towers built from ``transformers`` (what rebuilds them without their source dir)."""
        return {k: t.hf_config() for k, t in self.towers.items() if isinstance(t, ImageTower | TextTower)}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config, tower configs, tokenizer and safetensors weights (nothing pickled)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / CONFIG_FILE, self.config.to_yaml())
        hf = self.hf_tower_configs()
        atomic.write_text(out / TOWERS_FILE, json.dumps(hf, indent=1, sort_keys=True, default=str))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_model(self, str(tmp), metadata={"format": "pt", "producer": "unigeoclip"})
        os.replace(tmp, out / WEIGHTS_FILE)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> UniGeoCLIP:
        """Rebuild a model saved by :meth:`save_pretrained`, in eval mode, exactly as it was."""
        src = Path(directory)
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, TOWERS_FILE) if not (src / f).is_file()]
        if missing:
            raise CheckpointError(f"{str(src)!r} is not a UniGeoCLIP model directory: missing {', '.join(missing)}")
        cfg = load_config(src / CONFIG_FILE)
        hf_configs = json.loads((src / TOWERS_FILE).read_text())
        tokenizer = None
        if Modality.TEXT in cfg.model.modalities:
            if not (src / TOKENIZER_DIR).is_dir():
                raise CheckpointError(f"{str(src)!r} has a text tower but no {TOKENIZER_DIR}/ directory")
            tokenizer = load_saved_tokenizer(src / TOKENIZER_DIR)
        model = cls(cfg, hf_configs=hf_configs, tokenizer=tokenizer)
        missing_keys, unexpected = load_model(model, str(src / WEIGHTS_FILE), strict=False)
        if missing_keys or unexpected:
            raise CheckpointError(
                f"weights in {str(src)!r} do not match its config: missing {sorted(missing_keys)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return model.to(device).eval()


def _check_coords(coords: torch.Tensor) -> None:
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must be (B, 2) lat_deg, lon_deg, got shape {tuple(coords.shape)}")
    if not bool(torch.isfinite(coords).all()):
        raise InputError("coords contain NaN or infinite values")
    if not bool(valid_latlon(coords[:, 0], coords[:, 1]).all()):
        raise InputError(f"coords out of range: give {LATLON_RANGE}")
