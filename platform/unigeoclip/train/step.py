"""One training step, written once: forward the model and the loss, backward, step.

:func:`train_step` drives anything with DeepSpeed's engine interface (called on a batch, then
``backward`` and ``step``). The distributed loop hands it the DeepSpeed engine; what trains in
one process without DeepSpeed (the proxy benchmark, the tests' small models) hands it a
:class:`PlainEngine`, which does what the engine does for a single worker with the project's
settings: gradient clipping, the optimizer step, the schedule step, zeroed gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from ..losses import LossOutput


class Engine(Protocol):
    """What a training step drives: DeepSpeed's engine interface."""

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> LossOutput:
        """The loss's output for ``batch`` (the forward pass)."""
        ...

    def backward(self, loss: torch.Tensor) -> Any:
        """Backpropagates ``loss`` into the module's gradients."""
        ...

    def step(self) -> Any:
        """Takes the optimizer (and schedule) step after ``backward``, then zeroes the gradients."""
        ...


class PlainEngine:
    """DeepSpeed's engine interface over a plain module and optimizer (one process, fp32, no accumulation)."""

    def __init__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        grad_clip: float = 0.0,
    ) -> None:
        self.module, self.optimizer, self.scheduler, self.grad_clip = module, optimizer, scheduler, grad_clip

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> LossOutput:
        """The module's loss output for ``batch``, in training mode."""
        self.module.train()
        out: LossOutput = self.module(batch)
        return out

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagates ``loss`` into the module's gradients (``loss.backward()``)."""
        loss.backward()

    def step(self) -> None:
        """Clips the gradient norm (``grad_clip`` > 0), steps the optimizer and the schedule, zeroes the gradients."""
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad()


def train_step(engine: Engine, batch: Mapping[str, torch.Tensor]) -> LossOutput:
    """Forward, backward and step one (micro-)batch; returns the loss's output (total, per pair, accuracies)."""
    out = engine(batch)
    engine.backward(out.total)
    engine.step()
    return out
