"""A real 2-process gloo run of the loss (torch.multiprocessing, no mocks) against one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from unigeoclip import Modality
from unigeoclip.cluster.ingress import free_port
from unigeoclip.config import LossConfig
from unigeoclip.losses import ContrastiveLoss

MODS = tuple(Modality)
WORLD, LOCAL_B, FEAT, D = 2, 6, 10, 8

pytestmark = pytest.mark.integration


def towers() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({m.value: nn.Linear(FEAT, D) for m in MODS}).double()


def step_inputs(step: int) -> tuple[dict[Modality, torch.Tensor], dict[Modality, torch.Tensor]]:
    """The global batch of one step: features and presence masks (with holes) for every modality."""
    g = torch.Generator().manual_seed(100 + step)
    n = WORLD * LOCAL_B
    feats = {m: torch.randn(n, FEAT, generator=g, dtype=torch.float64) for m in MODS}
    masks = {m: torch.rand(n, generator=g) > 0.25 for m in MODS}
    masks[Modality.STREET][:LOCAL_B] = False  # rank 0 has no street view at all
    return feats, masks


def run_step(model: nn.ModuleDict, loss_fn: ContrastiveLoss, feats, masks, rows: slice):
    emb = {m: F.normalize(model[m.value](feats[m][rows]), dim=1) for m in MODS}
    out = loss_fn(emb, {m: masks[m][rows] for m in MODS})
    out.total.backward()
    return out


def worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    counts = {"all_gather": 0, "all_reduce": 0}
    for name in counts:
        original = getattr(dist, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        setattr(dist, name, counted)
    model = towers()
    loss_fn = ContrastiveLoss(LossConfig(), MODS, rank=rank, world_size=WORLD).double()
    results: dict[str, torch.Tensor] = {}
    for step in range(2):
        for key in counts:
            counts[key] = 0
        model.zero_grad()
        loss_fn.zero_grad()
        feats, masks = step_inputs(step)
        out = run_step(model, loss_fn, feats, masks, slice(rank * LOCAL_B, (rank + 1) * LOCAL_B))
        results[f"{step}/total"] = out.total.detach()
        results[f"{step}/gathers"] = torch.tensor(counts["all_gather"])
        results[f"{step}/reduces"] = torch.tensor(counts["all_reduce"])
        for name, p in [*model.named_parameters(), *loss_fn.named_parameters()]:
            results[f"{step}/grad/{name}"] = p.grad.detach().clone()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    model = towers()
    loss_fn = ContrastiveLoss(LossConfig(), MODS).double()
    for step in range(2):
        model.zero_grad()
        loss_fn.zero_grad()
        feats, masks = step_inputs(step)
        single = run_step(model, loss_fn, feats, masks, slice(None))
        # Data-parallel engines average over ranks: the average must be the one-process value.
        mean_total = sum(r[f"{step}/total"] for r in ranks) / WORLD
        assert mean_total.item() == pytest.approx(single.total.item(), abs=1e-10)
        for name, p in [*model.named_parameters(), *loss_fn.named_parameters()]:
            mean_grad = sum(r[f"{step}/grad/{name}"] for r in ranks) / WORLD
            torch.testing.assert_close(mean_grad, p.grad, atol=1e-10, rtol=1e-8)
        for r in ranks:
            # One gather per modality in the forward, and its one gradient return in the backward:
            # M collectives each way, not one per ordered pair (M (M - 1) = 20).
            assert r[f"{step}/gathers"].item() == len(MODS)
            assert r[f"{step}/reduces"].item() == len(MODS)
