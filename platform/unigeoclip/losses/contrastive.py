"""All-pairs InfoNCE across modalities, with masks and one gather per modality.

For every ordered pair ``(m, n)``, ``m != n``, of the modalities in a batch, the loss is
the cross-entropy of matching each ``m`` embedding to its own sample's ``n`` embedding
among all samples of the (global) batch where both are present; the total is the mean
over the pairs that have at least one such sample. No modality is a pivot unless the
``pivot`` ablation asks for one.

Distributed (after open_clip's local loss): each modality's embeddings and presence
mask are gathered once, with gradient, and each rank scores its own rows against the
global batch. Each rank's ``total`` is scaled so that the mean over ranks (what
data-parallel engines do to gradients) equals the loss of one process holding the
whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LossConfig
from ..errors import DistributedError, InputError
from ..modality import Modality

Pair = tuple[Modality, Modality]
Gather = Callable[[torch.Tensor], torch.Tensor]


def pair_key(m: Modality, n: Modality) -> str:
    """Name of the directed pair (query ``m``, target ``n``) in logs and metrics."""
    return f"{m.value}->{n.value}"


def training_pairs(modalities: Sequence[Modality], cfg: LossConfig) -> list[Pair]:
    """Unordered pairs the loss contrasts (both directions of each are scored)."""
    if cfg.mode == "pivot":
        assert cfg.pivot is not None
        return [(m, cfg.pivot) for m in modalities if m != cfg.pivot]
    return list(combinations(modalities, 2))


@dataclass
class LossOutput:
    """``total`` is what to backpropagate; the per-pair figures are detached, for logging."""

    total: torch.Tensor
    pair_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    pair_accuracy: dict[str, torch.Tensor] = field(default_factory=dict)
    logit_scale: torch.Tensor | None = None


class ContrastiveLoss(nn.Module):
    """InfoNCE over every ordered modality pair (or pivot pairs), learned temperature."""

    def __init__(
        self,
        cfg: LossConfig,
        modalities: Sequence[Modality],
        *,
        rank: int = 0,
        world_size: int = 1,
        gather: Gather | None = None,
    ) -> None:
        super().__init__()
        if world_size > 1 and gather is None:
            from .gather import gather_with_grad

            gather = gather_with_grad
        if not 0 <= rank < world_size:
            raise DistributedError(f"rank {rank} is outside world size {world_size}")
        self.modalities = tuple(modalities)
        self.pairs = training_pairs(self.modalities, cfg)
        self.rank, self.world_size, self.gather = rank, world_size, gather
        self.max_log_scale = math.log(cfg.max_logit_scale)
        init = torch.tensor([math.log(1.0 / cfg.temperature_init)])  # (1,): DeepSpeed cannot broadcast 0-d params
        names = [self._scale_name(m, n) for m, n in self.pairs] if cfg.per_pair_temperature else ["all"]
        self.per_pair = cfg.per_pair_temperature
        self.log_scale = nn.ParameterDict(
            {name: nn.Parameter(init.clone(), requires_grad=cfg.learn_temperature) for name in names}
        )

    @staticmethod
    def _scale_name(m: Modality, n: Modality) -> str:
        """Both directions of a pair share one scale: name it in canonical modality order."""
        first, second = sorted((m, n), key=list(Modality).index)
        return f"{first.value}|{second.value}"

    def scale(self, m: Modality, n: Modality) -> torch.Tensor:
        """The logit scale (1 / temperature) of pair ``{m, n}``, capped at ``max_logit_scale``."""
        name = self._scale_name(m, n) if self.per_pair else "all"
        return self.log_scale[name][0].clamp(max=self.max_log_scale).exp()

    def forward(
        self, embeddings: Mapping[Modality, torch.Tensor], masks: Mapping[Modality, torch.Tensor]
    ) -> LossOutput:
        """``embeddings[m]``: ``(b, D)`` unit vectors; ``masks[m]``: ``(b,)`` bool presence (all true if missing)."""
        present = [m for m in self.modalities if m in embeddings]
        sizes = {int(embeddings[m].shape[0]) for m in present}
        if len(sizes) > 1:
            raise InputError(f"modalities have different batch sizes {sorted(sizes)}; every tensor must hold b rows")
        b = sizes.pop() if sizes else 0
        global_ = {m: self._global(embeddings[m], masks.get(m)) for m in present}
        offset = self.rank * b

        losses: dict[str, torch.Tensor] = {}
        accuracy: dict[str, torch.Tensor] = {}
        for m, n in self.pairs:
            if m not in global_ or n not in global_:
                continue
            (zm_all, mm_all), (zn_all, mn_all) = global_[m], global_[n]
            both = mm_all & mn_all  # (N,) rows where the pair exists, N = W * b
            count = int(both.sum())
            if count == 0:
                continue
            scale = self.scale(m, n)
            if self.world_size == 1:
                self._score_local(zm_all, zn_all, both, count, scale, (m, n), losses, accuracy)
            else:
                local_both = both[offset : offset + b]
                target = (torch.cumsum(both, 0) - 1)[offset : offset + b][local_both]  # (r,)
                for q, t, t_all in ((m, n, zn_all), (n, m, zm_all)):
                    rows = embeddings[q][local_both]  # (r, D)
                    logits = (scale * rows) @ t_all[both].T  # (r, count)
                    ce = F.cross_entropy(logits, target, reduction="sum")
                    losses[pair_key(q, t)] = ce * (self.world_size / count)
                    accuracy[pair_key(q, t)] = _accuracy(logits, target)
        if not losses:
            zero = sum((e.sum() * 0.0 for e in embeddings.values()), torch.tensor(0.0))
            return LossOutput(total=zero)
        total = torch.stack(list(losses.values())).mean()
        scales = torch.cat([p.detach() for p in self.log_scale.values()]).clamp(max=self.max_log_scale).exp()
        return LossOutput(
            total=total,
            pair_losses={k: v.detach() for k, v in losses.items()},
            pair_accuracy=accuracy,
            logit_scale=scales.mean(),
        )

    def _global(self, z: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Local ``(b, D)`` + ``(b,)`` -> global ``(W b, D)`` + ``(W b,)`` in ONE collective (mask rides along)."""
        present = torch.ones(z.shape[0], dtype=torch.bool, device=z.device) if mask is None else mask.bool()
        if self.world_size == 1:
            return z, present
        assert self.gather is not None
        packed = self.gather(torch.cat((z, present.to(z.dtype).unsqueeze(1)), dim=1))  # (W b, D + 1)
        return packed[:, :-1], packed[:, -1] > 0.5

    @staticmethod
    def _score_local(
        zm: torch.Tensor,
        zn: torch.Tensor,
        both: torch.Tensor,
        count: int,
        scale: torch.Tensor,
        pair: Pair,
        losses: dict[str, torch.Tensor],
        accuracy: dict[str, torch.Tensor],
    ) -> None:
        """One process: the logits of an unordered pair serve both directions (rows and columns)."""
        if count < both.shape[0]:
            zm, zn = zm[both], zn[both]
        logits = (scale * zm) @ zn.T  # (count, count); scaling rows costs b D, not b^2
        loss_mn, loss_nm, acc_mn, acc_nm = SymmetricInfoNCE.apply(logits)
        m, n = pair
        losses[pair_key(m, n)], losses[pair_key(n, m)] = loss_mn, loss_nm
        accuracy[pair_key(m, n)], accuracy[pair_key(n, m)] = acc_mn, acc_nm


class SymmetricInfoNCE(torch.autograd.Function):
    """Cross-entropy of the rows and of the columns of square logits whose targets are the diagonal.

    One pass computes both softmaxes and keeps them for the backward, instead of four
    log-softmax passes (two over a strided transpose) and two argmax passes: the pair's
    cost stays close to its unavoidable matrix products.
    Returns (row loss, column loss, row top-1 accuracy, column top-1 accuracy).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:  # logits (n, n)
        """``(n, n)`` logits -> row and column losses, row and column top-1 accuracy; saves both softmaxes."""
        diag = logits.diagonal()
        row_max = logits.amax(dim=1, keepdim=True)  # (n, 1)
        e_rows = (logits - row_max).exp_()  # unnormalised: the division is folded into the backward
        row_sum = e_rows.sum(dim=1, keepdim=True)
        col_max = logits.amax(dim=0, keepdim=True)  # (1, n)
        e_cols = (logits - col_max).exp_()
        col_sum = e_cols.sum(dim=0, keepdim=True)
        ctx.save_for_backward(e_rows, row_sum, e_cols, col_sum)
        loss_rows = (row_max.squeeze(1) + row_sum.log().squeeze(1) - diag).mean()
        loss_cols = (col_max.squeeze(0) + col_sum.log().squeeze(0) - diag).mean()
        acc_rows = (diag >= row_max.squeeze(1)).float().mean()
        acc_cols = (diag >= col_max.squeeze(0)).float().mean()
        ctx.mark_non_differentiable(acc_rows, acc_cols)
        return loss_rows, loss_cols, acc_rows, acc_cols

    @staticmethod
    def backward(ctx: Any, g_rows: torch.Tensor | None, g_cols: torch.Tensor | None, *_: Any) -> torch.Tensor:
        """The ``(n, n)`` logits gradient: each loss's softmax minus its diagonal one-hot, times its grad / n."""
        e_rows, row_sum, e_cols, col_sum = ctx.saved_tensors
        n = e_rows.shape[0]
        zero = torch.zeros((), dtype=e_rows.dtype, device=e_rows.device)
        g_r = (g_rows if g_rows is not None else zero) / n
        g_c = (g_cols if g_cols is not None else zero) / n
        grad = torch.addcmul(e_rows * (g_r / row_sum), e_cols, g_c / col_sum)  # (n, n): both softmax terms
        grad.diagonal().sub_(g_r + g_c)  # minus the one-hot targets
        return grad


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if target.numel() == 0:
            return torch.tensor(float("nan"))
        return (logits.argmax(dim=1) == target).float().mean()
