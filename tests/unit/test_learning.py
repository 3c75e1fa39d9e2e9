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
