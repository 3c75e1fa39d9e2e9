"""The text tower: SigLIP-2's text transformer, or any local HF encoder (mean pooled).

New towers are built by ``transformers``; a saved SigLIP-2 one is rebuilt by :mod:`.siglip2` where it can be.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import TextTowerConfig
from ..errors import ConfigError, InputError
from ..preprocess.text import Tokenizer
from ..pretrained import local_model_dir, read_hf_config
from .blocks import LockableTower, ProjectionHead
from .siglip2 import TEXT_TYPE, Siglip2Text, rebuilds

if TYPE_CHECKING:
    from transformers import PreTrainedModel, Siglip2TextConfig


def text_config_from(cfg: TextTowerConfig, tokenizer: Tokenizer) -> Siglip2TextConfig:
    """A random-init SigLIP-2 text config whose vocabulary and special ids are the tokenizer's."""
    from transformers import Siglip2TextConfig

    return Siglip2TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _load_pretrained(cfg: TextTowerConfig) -> PreTrainedModel:
    from transformers import AutoModel, Siglip2Model, Siglip2TextModel

    assert cfg.pretrained_dir is not None
    directory = str(local_model_dir(cfg.pretrained_dir))
    model_type = read_hf_config(cfg.pretrained_dir).get("model_type")
    if cfg.kind == "siglip2":
        if model_type == "siglip2":  # a full SigLIP-2 model: keep its text tower
            return Siglip2Model.from_pretrained(directory, local_files_only=True).text_model
        if model_type == "siglip2_text_model":
            return Siglip2TextModel.from_pretrained(directory, local_files_only=True)
        raise ConfigError(f"{directory!r} holds a {model_type!r} model; text.kind 'siglip2' needs a SigLIP-2 one")
    return AutoModel.from_pretrained(directory, local_files_only=True)


def rebuild_text(kind: str, hf_config: Mapping[str, Any]) -> nn.Module:
    """A saved text tower's backbone, uninitialised (its weights come from the model directory)."""
    if kind == "siglip2" and rebuilds(hf_config, TEXT_TYPE):
        return Siglip2Text(hf_config)
    from transformers import AutoConfig, AutoModel, Siglip2TextConfig, Siglip2TextModel

    if kind == "siglip2":
        return Siglip2TextModel(Siglip2TextConfig.from_dict(dict(hf_config)))
    return AutoModel.from_config(AutoConfig.for_model(**hf_config))


class TextTower(LockableTower):
    """Token ids -> text encoder -> pooled state -> ``(B, D)`` unit vectors.

    SigLIP-2 towers pool the last position by default (their training convention, inputs
    padded to ``max_length``); other HF encoders are mean pooled over real tokens, as
    sentence-transformers models are trained. ``text.pooling: mean`` mean-pools a SigLIP-2
    tower too: a small one trained from scratch must otherwise route every name through
    one padded position.
    """

    def __init__(
        self,
        cfg: TextTowerConfig,
        embed_dim: int,
        tokenizer: Tokenizer,
        hf_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if hf_config is not None:  # rebuilding a saved model: its weights come from the model directory
            self.backbone = rebuild_text(cfg.kind, hf_config)
        elif cfg.pretrained_dir is not None:
            self.backbone = _load_pretrained(cfg)
        else:
            from transformers import Siglip2TextModel

            self.backbone = Siglip2TextModel(text_config_from(cfg, tokenizer))
        self.kind = cfg.kind
        self.pooling = cfg.pooling_or_default
        self.token_dropout = cfg.token_dropout
        vocab = int(self.backbone.config.vocab_size)
        if len(tokenizer) > vocab:
            raise ConfigError(f"tokenizer has {len(tokenizer)} ids but the text tower's vocabulary is {vocab}")
        if cfg.pretrained_dir is not None and hf_config is None and cfg.tokenizer == "byte" and vocab != len(tokenizer):
            raise ConfigError(
                f"the pretrained text tower in {str(cfg.pretrained_dir)!r} has a {vocab}-id vocabulary, not the "
                f"byte tokenizer's {len(tokenizer)}: set text.tokenizer to 'auto' to use its own tokenizer"
            )
        hidden = getattr(self.backbone.config, "projection_size", None) or self.backbone.config.hidden_size
        self.head = ProjectionHead(int(hidden), embed_dim, cfg.head_hidden)
        if cfg.locked:
            self.lock(cfg.unlocked_layers)

    def hf_config(self) -> dict[str, Any]:
        """The backbone's HF config as a dict, saved with the model so a reload rebuilds the same tower."""
        return self.backbone.config.to_dict()

    def no_weight_decay(self) -> set[str]:
        """The token lookup tables (timm's convention: names relative to this tower). Rows of ids a batch does not
        use get no gradient, so decay alone would shrink them toward zero."""
        tables = [m for name, m in self.backbone.named_modules() if name.rsplit(".", 1)[-1].startswith("token")]
        return {f"backbone.{n}" for n, p in self.backbone.named_parameters() if any(p is t.weight for t in tables)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids and attention mask -> ``(B, D)`` unit vectors."""
        return self.head(self.features(input_ids, attention_mask))  # (B, D)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> the pooled ``(B, F)`` state the head projects (what a locked tower's cache holds)."""
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise InputError(
                f"text_input_ids and text_attention_mask must both be (B, L), got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if self.training and self.token_dropout > 0:
            attention_mask = drop_tokens(attention_mask, self.token_dropout)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "last":
            pooled = out.pooler_output  # (B, H): SigLIP-2's head over the last position
        else:
            weights = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)  # (B, L, 1)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, H)
            if self.kind == "siglip2":  # keep SigLIP-2's own head, so a pretrained tower's width still fits
                siglip_head = self.backbone.get_submodule("head")
                pooled = siglip_head(pooled)
        return pooled  # (B, F)


def drop_tokens(attention_mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Hide each real token with probability ``rate``; a row that would lose every token keeps them all."""
    real = attention_mask.bool()  # (B, L)
    kept = real & (torch.rand(real.shape, device=real.device) >= rate)
    kept = torch.where(kept.any(dim=1, keepdim=True), kept, real)
    return kept.to(attention_mask.dtype)
