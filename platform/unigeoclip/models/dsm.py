"""The DSM tower: a ViT with register tokens over a patch of surface heights."""

from __future__ import annotations

import torch
from torch import nn

from ..config import DSMTowerConfig
from ..errors import InputError
from .blocks import ProjectionHead, TransformerBlock


def mean_height(dsm: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1)`` mean of the valid (finite) heights of each patch; 0 for a patch of no data."""
    valid = torch.isfinite(dsm)
    count = valid.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    return torch.where(valid, dsm, 0.0).sum(dim=(-2, -1), keepdim=True) / count


def relative_heights(dsm: torch.Tensor, scale_m: float) -> torch.Tensor:
    """Per-patch relative surface: ``asinh((h - mean(h)) / scale)``, no-data (NaN) at the mean.

    Subtracting the patch mean keeps the shape of the surface (roofs above streets,
    valleys below ridges) and drops the absolute altitude, which says little about a
    place's look at street scale; asinh keeps a 5 m house and a 2,000 m ridge in one
    numeric range. ``altitude_scale_m`` gives the tower the altitude back when it matters.
    """
    rel = torch.where(torch.isfinite(dsm), dsm - mean_height(dsm), 0.0)
    return torch.asinh(rel / scale_m)


class DSMTower(nn.Module):
    """``(B, 1, H, W)`` heights in metres -> ViT (class token + registers) -> ``(B, D)`` unit vectors.

    Registers (Darcet et al., 2024) give attention a place to park global information
    away from patch tokens; they are dropped at the output, and the class token of the
    last layer is the embedding.
    """

    def __init__(self, cfg: DSMTowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.image_size, self.scale_m = cfg.image_size, cfg.height_scale_m
        grid = cfg.image_size // cfg.patch_size
        width = cfg.hidden_size
        self.patch_embed = nn.Conv2d(1, width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, width))
        self.registers = nn.Parameter(0.02 * torch.randn(1, cfg.num_registers, width))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + grid * grid, width))
        self.blocks = nn.ModuleList(
            TransformerBlock(width, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.head = ProjectionHead(width, embed_dim)
        self.altitude_scale_m = cfg.altitude_scale_m
        self.altitude = nn.Linear(1, width) if cfg.altitude_scale_m else None

    def no_weight_decay(self) -> set[str]:
        """Learned tokens and positions are inputs, not weights: no decay (timm's convention)."""
        return {"cls_token", "registers", "pos_embed"}

    def forward(self, dsm: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` heights in metres (NaN = no data) -> ``(B, D)`` unit vectors from the class token."""
        if dsm.ndim != 4 or dsm.shape[1] != 1 or dsm.shape[-1] != self.image_size or dsm.shape[-2] != self.image_size:
            raise InputError(
                f"dsm must be (B, 1, {self.image_size}, {self.image_size}) heights in metres, got {tuple(dsm.shape)}"
            )
        x = relative_heights(dsm.float(), self.scale_m).to(self.patch_embed.weight.dtype)
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, W)
        b = patches.shape[0]
        cls = self.cls_token.expand(b, -1, -1)
        if self.altitude is not None and self.altitude_scale_m:
            altitude = torch.asinh(mean_height(dsm.float()).view(b, 1, 1) / self.altitude_scale_m)
            cls = cls + self.altitude(altitude.to(cls.dtype))  # (B, 1, W)
        x = torch.cat((cls, patches), dim=1) + self.pos_embed  # (B, 1 + N, W)
        x = torch.cat((x, self.registers.expand(b, -1, -1)), dim=1)  # (B, 1 + N + R, W)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))  # (B, D)
