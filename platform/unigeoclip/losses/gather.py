"""The one place embeddings cross processes.

``gather_with_grad`` is the only collective the contrastive loss uses: one call per
modality per step. Rank and world size reach the loss through its constructor; this
module is what the training loop hands it, so model and loss code never touch
``torch.distributed`` themselves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns each rank the summed gradient of its own rows."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts, dim=0)  # (W * b, ...)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            out = torch.empty((ctx.rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad)
            return out
        # gloo has no reduce-scatter: sum everywhere and keep our slice.
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """``(b, ...)`` on each of W ranks -> ``(W * b, ...)`` in rank order, differentiable.

    Every rank must pass the same ``b`` (the data loader drops ragged last batches).
    """
    return _GatherWithGrad.apply(local)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a metric across ranks (no gradient); identity outside a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
