"""Location encoders: the scaled lat-lon encoder of UniGeoCLIP and GeoCLIP's capsules.

Scaled encoder, per location (attention runs over that location's tokens only):

    (lat, lon) -> Equal Earth (x, y) -> K frozen Gaussian random-Fourier projections,
    one per sigma, each [cos, sin] = one token of width W -> + R learned registers
    -> depth pre-norm blocks -> mean of the K frequency tokens -> Linear(W, D) -> L2.

``sh_degree`` > 0 adds one token, the real spherical harmonics of the position (SatCLIP's basis)
through a learned linear map, beside the K Fourier tokens.

Every learned weight is shared by the K frequency tokens, so the parameter count does
not depend on K. Depth 0 reduces to plain fixed Fourier features and a linear head.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Self

import torch
from torch import nn

from ..config import CoordsEncoderConfig
from ..geo.harmonics import real_spherical_harmonics
from ..geo.projection import equal_earth_normalised
from .blocks import ProjectionHead, TransformerBlock


class FourierProjections(nn.Module):
    """K frozen Gaussian projections ``B_k ~ N(0, sigma_k^2)`` of Equal Earth positions.

    Held in float64 and kept so when the model is cast (``.bfloat16()`` by DeepSpeed):
    at sigma 2^12 the phase reaches ~1e5 radians, where float32 already blurs the
    finest scale and bf16 would erase it. Saved with the weights, so a reloaded model
    uses the very same draw.
    """

    projections: torch.Tensor

    def __init__(self, sigmas: tuple[float, ...], width: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        unit = torch.randn(len(sigmas), width // 2, 2, generator=gen, dtype=torch.float64)
        self.register_buffer("projections", unit * torch.tensor(sigmas, dtype=torch.float64).view(-1, 1, 1))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        kept = self.projections
        super()._apply(fn, recurse)
        self.projections = kept.to(device=self.projections.device)  # follow moves, not casts
        return self

    def forward(self, coords: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B, 2)`` lat/lon degrees -> ``(B, K, W)`` tokens ``[cos 2 pi Bv, sin 2 pi Bv]``."""
        v = equal_earth_normalised(coords).to(self.projections.device)  # (B, 2) float64
        phase = 2.0 * math.pi * torch.einsum("bc,kpc->bkp", v, self.projections)  # (B, K, W / 2)
        return torch.cat((phase.cos(), phase.sin()), dim=-1).to(dtype)  # (B, K, W)


class ScaledLocationEncoder(nn.Module):
    """UniGeoCLIP's scaled lat-lon encoder (depth 0 = fixed Fourier features)."""

    def __init__(self, cfg: CoordsEncoderConfig, width: int, embed_dim: int) -> None:
        super().__init__()
        self.fourier = FourierProjections(cfg.sigmas, width, cfg.seed)
        self.sh_degree = cfg.sh_degree
        self.sh: nn.Module | None = nn.Linear((cfg.sh_degree + 1) ** 2, width) if cfg.sh_degree else None
        self.registers = nn.Parameter(0.02 * torch.randn(1, cfg.num_registers, width))
        self.blocks = nn.ModuleList(TransformerBlock(width, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm: nn.Module = nn.LayerNorm(width) if cfg.depth > 0 else nn.Identity()
        self.head = ProjectionHead(width, embed_dim)

    def no_weight_decay(self) -> set[str]:
        """The registers are learned inputs, not weights: no decay (timm's convention)."""
        return {"registers"}

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` lat_deg, lon_deg -> ``(B, D)`` unit vectors."""
        dtype = self.head.linear.weight.dtype
        tokens = self.fourier(coords, dtype)  # (B, K, W)
        if self.sh is not None:  # one more frequency token: the spherical harmonics, linearly mapped
            harmonics = real_spherical_harmonics(coords[:, 0], coords[:, 1], self.sh_degree)  # (B, (L + 1)^2)
            tokens = torch.cat((tokens, self.sh(harmonics.to(dtype)).unsqueeze(1)), dim=1)  # (B, K + 1, W)
        k = tokens.shape[1]
        if len(self.blocks) > 0:
            x = torch.cat((tokens, self.registers.expand(tokens.shape[0], -1, -1)), dim=1)  # (B, K + R, W)
            for block in self.blocks:
                x = block(x)
            tokens = x[:, :k]  # registers dropped
        return self.head(self.norm(tokens.mean(dim=1)))  # (B, D)


class GeoCLIPLocationEncoder(nn.Module):
    """GeoCLIP-style baseline: one MLP capsule per sigma, outputs summed (parameters grow with K)."""

    def __init__(self, cfg: CoordsEncoderConfig, width: int, embed_dim: int) -> None:
        super().__init__()
        hidden = cfg.capsule_hidden
        self.fourier = FourierProjections(cfg.sigmas, width, cfg.seed)
        self.capsules = nn.ModuleList(
            nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, embed_dim),
            )
            for _ in cfg.sigmas
        )  # fmt: skip

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` lat_deg, lon_deg -> ``(B, D)`` unit vectors: the capsules' outputs summed over the sigmas."""
        tokens = self.fourier(coords, next(self.capsules.parameters()).dtype)  # (B, K, W)
        summed = torch.stack([cap(tokens[:, i]) for i, cap in enumerate(self.capsules)]).sum(0)  # (B, D)
        return nn.functional.normalize(summed, dim=-1)


def build_location_encoder(cfg: CoordsEncoderConfig, width: int, embed_dim: int) -> nn.Module:
    """The coordinate encoder that ``cfg.kind`` names: UniGeoCLIP's scaled encoder or GeoCLIP's capsules."""
    if cfg.kind == "scaled":
        return ScaledLocationEncoder(cfg, width, embed_dim)
    return GeoCLIPLocationEncoder(cfg, width, embed_dim)
