"""SigLIP-2's vision and text transformers in plain torch, for rebuilding saved towers.

A saved model is rebuilt in every process that serves or embeds with it: the embedding actors, the
Serve encoder, the evaluation. ``transformers``' SigLIP-2 module imports ``torch.distributed.tensor``,
``torch._dynamo``, ``scipy.optimize`` and a kernel hub on the way, none of which the forward pass uses.
These modules hold the same parameters under the same names as ``Siglip2VisionModel`` and
``Siglip2TextModel`` (one saved state dict loads into either) and compute the same function with the
same attention kernel (``scaled_dot_product_attention``); ``tests/models/test_siglip2.py`` checks both
against ``transformers``.

New towers (random or pretrained) are still built by ``transformers``, whose initialisation and
loaders they keep; :func:`rebuilds` says which saved configs these modules cover.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

VISION_TYPE = "siglip2_vision_model"
TEXT_TYPE = "siglip2_text_model"


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)`` (``transformers``' ``quick_gelu``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise."""
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {  # transformers' ACT2FN entries of these names
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu": nn.GELU,
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
}
SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")  # saved by every config


def rebuilds(hf_config: Mapping[str, Any], model_type: str) -> bool:
    """Whether a saved tower config of ``model_type`` (:data:`VISION_TYPE` or :data:`TEXT_TYPE`) is one these
    modules rebuild exactly; else ``transformers`` rebuilds it."""
    if hf_config.get("model_type") != model_type or hf_config.get("hidden_act", "gelu_pytorch_tanh") not in ACTIVATIONS:
        return False
    needed = (*SIZES, "vocab_size") if model_type == TEXT_TYPE else SIZES
    if any(hf_config.get(key) is None for key in needed):
        return False
    return model_type == TEXT_TYPE or bool(hf_config.get("vision_use_head", True))


def patch_side(patch_size: int | Sequence[int]) -> int:
    """A SigLIP-2 config's ``patch_size`` (an int, or a square's ``[side, side]``) as one side in pixels."""
    return int(patch_size if isinstance(patch_size, int) else patch_size[0])


class SavedConfig:
    """A saved ``transformers`` config dict read by attribute, as towers read ``backbone.config``."""

    def __init__(self, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self._values = {**defaults, **values}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        """The dict it was built from (with the defaults it lacked): what the model directory saves again."""
        return dict(self._values)


_COMMON = {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "attention_dropout": 0.0}
VISION_DEFAULTS = {**_COMMON, "num_channels": 3, "patch_size": 16, "num_patches": 256, "vision_use_head": True}
TEXT_DEFAULTS = {**_COMMON, "max_position_embeddings": 64, "projection_size": None}


class Siglip2Output(NamedTuple):
    """The two outputs the towers read, under ``transformers``' names."""

    last_hidden_state: torch.Tensor  # (B, N, H)
    pooler_output: torch.Tensor  # (B, H) vision, (B, projection_size) text


class Siglip2MLP(nn.Module):
    """``fc1`` -> activation -> ``fc2``."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        self.activation_fn = ACTIVATIONS[cfg.hidden_act]()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., W)`` -> ``(..., W)``."""
        return self.fc2(self.activation_fn(self.fc1(x)))


class Siglip2Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        width, self.num_heads = cfg.hidden_size, cfg.num_attention_heads
        self.head_dim = width // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = float(cfg.attention_dropout)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, W)`` and a ``(B, 1, 1, T)`` bool key mask (True = attend) or None -> ``(B, T, W)``."""
        b, t, _ = x.shape
        heads = (b, t, self.num_heads, self.head_dim)
        q, k, v = (proj(x).view(heads).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=self.scale)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


class Siglip2EncoderLayer(nn.Module):
    """Pre-norm attention then MLP, each residual."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = Siglip2Attention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = Siglip2MLP(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, W)`` -> ``(B, T, W)``; ``mask`` as :meth:`Siglip2Attention.forward` takes it."""
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Siglip2Encoder(nn.Module):
    """The stack of encoder layers (``layers``: what ``unlocked_layers`` counts)."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Siglip2EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, W)`` through every layer."""
        for layer in self.layers:
            x = layer(x, mask)
        return x


def key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, T)`` 1/0 -> the ``(B, 1, 1, T)`` bool mask ``scaled_dot_product_attention`` takes; None when all attend."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def resized_positions(grid: torch.Tensor, spatial_shapes: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(G, G, W)`` position embeddings -> ``(B, max_length, W)``, resized to each image's ``(rows, cols)`` of patches.

    ``transformers``' ``Siglip2VisionEmbeddings.resize_positional_embeddings``: the weights of
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)`` along each axis, padding positions
    taking the first one; at the grid's own size the weights are one-hot and the embeddings come back as they are.
    """
    g = grid.shape[0]
    sizes = spatial_shapes.float()[:, None]  # (B, 1, 2)
    positions = torch.arange(max_length, device=spatial_shapes.device, dtype=torch.float32)[None, :, None]
    rows = torch.div(positions, sizes[..., 1:], rounding_mode="floor")
    index = torch.cat([rows, positions - rows * sizes[..., 1:]], dim=-1)
    index = index * (positions < sizes.prod(-1, keepdim=True))
    scale = g / sizes
    support = scale.clamp(min=1)
    center = (index + 0.5) * scale - 0.5
    source = torch.arange(g, device=spatial_shapes.device, dtype=torch.float32)
    weights = (1 - (source - center[..., None]).abs_().div_(support[..., None])).clamp_(min=0)
    weights = weights / weights.sum(-1, keepdim=True)
    weights = (weights[..., 0, :, None] * weights[..., 1, None, :]).flatten(-2)  # (B, max_length, G * G)
    flat = grid.reshape(-1, grid.shape[-1])
    return (weights.to(flat.device) @ flat.float()).to(grid.dtype)


class Siglip2VisionEmbeddings(nn.Module):
    """Patch projection plus position embeddings resized to the image's grid of patches."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        patch = patch_side(cfg.patch_size)
        self.patch_embedding = nn.Linear(cfg.num_channels * patch * patch, cfg.hidden_size)
        self.grid = int(cfg.num_patches**0.5)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        """``(B, N, p * p * C)`` patches and ``(B, 2)`` grids -> ``(B, N, W)``."""
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        grid = self.position_embedding.weight.reshape(self.grid, self.grid, -1)
        return patches + resized_positions(grid, spatial_shapes, pixel_values.shape[1])


class Siglip2PoolingHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over the patches."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.attention = nn.MultiheadAttention(cfg.hidden_size, cfg.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = Siglip2MLP(cfg)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, N, W)`` states and their ``(B, N)`` 1/0 mask -> ``(B, W)``."""
        probe = self.probe.repeat(x.shape[0], 1, 1)
        padding = ~attention_mask.bool() if attention_mask is not None else None
        x = self.attention(probe, x, x, key_padding_mask=padding)[0]
        x = x + self.mlp(self.layernorm(x))
        return x[:, 0]


class Siglip2Vision(nn.Module):
    """``Siglip2VisionModel`` (with its pooling head) rebuilt from a saved config dict."""

    def __init__(self, hf_config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = SavedConfig(hf_config, VISION_DEFAULTS)
        self.embeddings = Siglip2VisionEmbeddings(self.config)
        self.encoder = Siglip2Encoder(self.config)
        self.post_layernorm = nn.LayerNorm(self.config.hidden_size, eps=self.config.layer_norm_eps)
        self.head = Siglip2PoolingHead(self.config)

    def forward(
        self, *, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> Siglip2Output:
        """``(B, N, p * p * C)`` patches, their ``(B, N)`` mask and ``(B, 2)`` patch grid -> states and pooled."""
        x = self.embeddings(pixel_values, spatial_shapes)
        x = self.post_layernorm(self.encoder(x, key_mask(pixel_attention_mask)))
        return Siglip2Output(x, self.head(x, pixel_attention_mask))


class Siglip2TextEmbeddings(nn.Module):
    """Token plus position embeddings."""

    def __init__(self, cfg: SavedConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids -> ``(B, L, W)``; more ids than positions is an :class:`InputError`."""
        positions = self.position_embedding.weight
        if input_ids.shape[-1] > positions.shape[0]:
            raise InputError(
                f"{input_ids.shape[-1]} tokens are more than the tower's {positions.shape[0]} positions: "
                "tokenize to its max_length"
            )
        return self.token_embedding(input_ids) + positions[: input_ids.shape[-1]]


class Siglip2Text(nn.Module):
    """``Siglip2TextModel`` rebuilt from a saved config dict; ``pooler_output`` is the head over the last position."""

    def __init__(self, hf_config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = SavedConfig(hf_config, TEXT_DEFAULTS)
        cfg = self.config
        self.embeddings = Siglip2TextEmbeddings(cfg)
        self.encoder = Siglip2Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.projection_size or cfg.hidden_size)

    def forward(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Siglip2Output:
        """``(B, L)`` token ids and mask -> ``(B, L, H)`` states and the projected last position."""
        x = self.embeddings(input_ids)
        x = self.final_layer_norm(self.encoder(x, key_mask(attention_mask)))
        return Siglip2Output(x, self.head(x[:, -1]))
