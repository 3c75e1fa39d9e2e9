"""Aerial and street-level image towers: SigLIP-2 vision transformers.

New towers are built by ``transformers``; a saved one is rebuilt by :mod:`.siglip2` where it can be.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import VisionTowerConfig
from ..errors import ConfigError, InputError
from ..pretrained import local_model_dir, read_hf_config
from .blocks import LockableTower, ProjectionHead
from .siglip2 import VISION_TYPE, Siglip2Vision, patch_side, rebuilds

if TYPE_CHECKING:
    from transformers import Siglip2VisionConfig, Siglip2VisionModel


def vision_config_from(cfg: VisionTowerConfig) -> Siglip2VisionConfig:
    """A random-init SigLIP-2 vision config of the tower's sizes (RGB, a square grid of patches)."""
    from transformers import Siglip2VisionConfig

    grid = cfg.image_size // cfg.patch_size
    return Siglip2VisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        patch_size=cfg.patch_size,
        num_patches=grid * grid,
        num_channels=3,
    )


def load_pretrained_vision(directory: Path) -> Siglip2VisionModel:
    """A SigLIP-2 vision tower from a local ``Siglip2Model`` or ``Siglip2VisionModel`` directory."""
    from transformers import Siglip2Model, Siglip2VisionModel

    model_type = read_hf_config(directory).get("model_type")
    directory = local_model_dir(directory)
    if model_type == "siglip2":  # a full SigLIP-2 model: keep its vision tower
        return Siglip2Model.from_pretrained(str(directory), local_files_only=True).vision_model
    if model_type == "siglip2_vision_model":
        return Siglip2VisionModel.from_pretrained(str(directory), local_files_only=True)
    raise ConfigError(f"{str(directory)!r} holds a {model_type!r} model; a SigLIP-2 vision tower is needed")


def rebuild_vision(hf_config: Mapping[str, Any]) -> nn.Module:
    """A saved vision tower's backbone, uninitialised (its weights come from the model directory)."""
    if rebuilds(hf_config, VISION_TYPE):
        return Siglip2Vision(hf_config)
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    return Siglip2VisionModel(Siglip2VisionConfig(**hf_config))


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, p * p * C)`` in the (row, column, channel) order of SigLIP-2's processor."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class ImageTower(LockableTower):
    """RGB in [0, 1] -> SigLIP-2 vision transformer (attention-pooled) -> ``(B, D)`` unit vectors."""

    def __init__(self, cfg: VisionTowerConfig, embed_dim: int, hf_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        if hf_config is not None:  # rebuilding a saved model: its weights come from the model directory
            self.backbone = rebuild_vision(hf_config)
        elif cfg.pretrained_dir is not None:
            self.backbone = load_pretrained_vision(cfg.pretrained_dir)
        else:
            from transformers import Siglip2VisionModel

            self.backbone = Siglip2VisionModel(vision_config_from(cfg))
        self.patch_size = patch_side(self.backbone.config.patch_size)
        self.head = ProjectionHead(self.backbone.config.hidden_size, embed_dim, cfg.head_hidden)
        if cfg.locked:
            self.lock(cfg.unlocked_layers)

    def hf_config(self) -> dict[str, Any]:
        """The backbone's HF config as a dict, saved with the model so a reload rebuilds the same tower."""
        return self.backbone.config.to_dict()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, D)`` unit vectors."""
        return self.head(self.features(images))  # (B, D)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> the attention-pooled ``(B, F)`` state the head projects (a locked tower's cache)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be (B, 3, H, W) RGB in [0, 1], got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise InputError(f"image size {h}x{w} is not a multiple of the patch size {p}; resize first")
        dtype = self.head.linear.weight.dtype
        patches = patchify((images.to(dtype) - 0.5) / 0.5, p)  # (B, N, p*p*3) in [-1, 1]
        shapes = torch.tensor([[h // p, w // p]], device=images.device).expand(b, 2)
        mask = torch.ones(patches.shape[:2], dtype=torch.long, device=images.device)  # (B, N)
        out = self.backbone(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)
        return out.pooler_output  # (B, F)
