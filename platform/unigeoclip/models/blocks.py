"""Building blocks shared by the towers written here (DSM ViT, coordinate encoder)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class TransformerBlock(nn.Module):
    """Pre-norm transformer block over ``(B, T, W)`` tokens; attention never mixes samples."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, W)`` -> ``(B, T, W)``: self-attention then MLP, each pre-normed and residual."""
        b, t, w = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.num_heads, w // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, W / heads)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, W / heads)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.norm2(x))


class ProjectionHead(nn.Module):
    """Linear map to the shared space followed by L2 normalisation: every tower ends here.

    ``hidden`` > 0 puts a GELU layer of that width before the map (a two-layer MLP head), for a
    locked tower whose frozen features need more than a linear map to reach the shared space.
    """

    def __init__(self, in_features: int, embed_dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.in_features = in_features
        self.pre: nn.Module = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU()) if hidden else nn.Identity()
        self.linear = nn.Linear(hidden or in_features, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(B, D)`` unit vectors in the shared space."""
        return F.normalize(self.linear(self.pre(x)), dim=-1)


class LockableTower(nn.Module):
    """A tower of a pretrained ``backbone`` and a ``head``: ``features`` (backbone + pooling) then ``project``.

    Locked (LiT, Zhai et al. 2022), the backbone is frozen and stays in eval mode (no dropout), so its
    features of an input never change and can be computed once and cached; only the head trains, plus
    the last ``unlocked_layers`` of the backbone if asked (then nothing is cached).
    """

    backbone: Any  # a transformers model
    head: ProjectionHead
    locked: bool = False

    def lock(self, unlocked_layers: int) -> None:
        """Freeze the backbone (in eval mode) except its last ``unlocked_layers`` layers; the head stays trainable."""
        self.locked = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if unlocked_layers:
            layers = layer_stack(self.backbone)
            if unlocked_layers > len(layers):
                raise ConfigError(f"unlocked_layers {unlocked_layers} is more than the tower's {len(layers)} layers")
            for layer in list(layers)[-unlocked_layers:]:
                for p in layer.parameters():
                    p.requires_grad_(True)
        self.backbone.eval()

    def train(self, mode: bool = True) -> LockableTower:
        """Set the training mode as usual, but keep a locked backbone in eval mode (no dropout: cacheable features)."""
        super().train(mode)
        if self.locked:
            self.backbone.eval()
        return self

    @property
    def feature_dim(self) -> int:
        """Width ``F`` of the features the head takes (the backbone's pooled output)."""
        return self.head.in_features

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` features (the backbone's pooled output, e.g. from the cache) -> ``(B, D)`` unit vectors."""
        return self.head(features.to(self.head.linear.weight.dtype))


def layer_stack(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's stack of transformer layers: its longest ``ModuleList`` named ``layer`` or ``layers``."""
    stacks = [m for name, m in backbone.named_modules() if isinstance(m, nn.ModuleList) and name.split(".")[-1]
              in ("layer", "layers")]  # fmt: skip
    if not stacks:
        raise ConfigError(f"no layer stack found in {type(backbone).__name__}: unlocked_layers cannot apply")
    return max(stacks, key=len)
