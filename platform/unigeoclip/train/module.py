"""What DeepSpeed wraps: the five-tower model and the loss as one module (the temperature is trained too)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..losses import ContrastiveLoss, LossOutput
from ..modality import present_key
from ..models import UniGeoCLIP


class TrainModule(nn.Module):
    """The model and the loss as one module: what DeepSpeed wraps (the temperatures train too)."""

    def __init__(self, model: UniGeoCLIP, loss: ContrastiveLoss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Mapping[str, torch.Tensor]) -> LossOutput:
        """The contrastive loss of a batch: every tower's embeddings (in fp32) under its presence mask."""
        embeddings = {m: z.float() for m, z in self.model(batch).items()}  # the loss runs in fp32 under bf16
        masks = {m: batch[present_key(m)] for m in embeddings if present_key(m) in batch}
        return self.loss(embeddings, masks)
