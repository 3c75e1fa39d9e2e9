"""The model can learn: the tiny model memorises a fixed batch until every pair retrieves perfectly."""

from __future__ import annotations

import pytest
import torch
from unigeoclip import UniGeoCLIP, load_config
from unigeoclip.losses import ContrastiveLoss

from ..helpers import make_batch


@pytest.mark.slow
def test_tiny_model_drives_every_pair_to_top1_accuracy_one() -> None:
    torch.manual_seed(0)
    cfg = load_config("tiny")
    model = UniGeoCLIP.from_config(cfg).train()
    loss_fn = ContrastiveLoss(cfg.loss, cfg.model.modalities)
    batch = make_batch(model, 64, seed=11)
    masks = {m: batch[f"{m.value}_present"] for m in model.modalities}
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=3e-3, weight_decay=0.0)
    first = None
    for _step in range(400):
        out = loss_fn(model(batch), masks)
        first = first if first is not None else out.total.item()
        opt.zero_grad()
        out.total.backward()
        opt.step()
        if all(a.item() == 1.0 for a in out.pair_accuracy.values()):
            break
    model.eval()
    with torch.no_grad():
        final = loss_fn(model(batch), masks)
    assert len(final.pair_accuracy) == 20
    assert {k: v.item() for k, v in final.pair_accuracy.items()} == {k: 1.0 for k in final.pair_accuracy}
    assert final.total.item() < 0.25 * first


def test_the_one_train_step_does_what_a_hand_written_step_does() -> None:
    """train_step over a PlainEngine (clip, AdamW, schedule) against the same step written out by hand."""
    import copy

    from unigeoclip.train.module import TrainModule
    from unigeoclip.train.step import PlainEngine, train_step

    cfg = load_config("tiny")
    torch.manual_seed(0)
    module = TrainModule(UniGeoCLIP.from_config(cfg), ContrastiveLoss(cfg.loss, cfg.model.modalities))
    twin = copy.deepcopy(module)
    batch = make_batch(module.model, 8, seed=3)

    def parts(m: torch.nn.Module) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** (step + 1))

    engine = PlainEngine(module, *parts(module), grad_clip=0.5)
    out = train_step(engine, batch)
    opt, sched = parts(twin)
    twin.train()
    expected = twin(batch)
    expected.total.backward()
    torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    opt.step()
    sched.step()
    assert torch.equal(out.total.detach(), expected.total.detach())
    for (name, a), b in zip(module.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert all(p.grad is None or not p.grad.any() for p in module.parameters()), "gradients zeroed for the next step"
    assert engine.scheduler is not None and engine.scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.25)
