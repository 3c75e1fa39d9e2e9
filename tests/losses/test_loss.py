"""The all-pairs loss against a plain reference: loop over ordered pairs, full logits, hand-written CE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from unigeoclip import Modality, load_config
from unigeoclip.config import LossConfig
from unigeoclip.losses import ContrastiveLoss

MODS = tuple(Modality)


def random_embeddings(b: int, d: int, seed: int) -> dict[Modality, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1).requires_grad_() for m in MODS}


def naive_loss(
    emb: dict[Modality, torch.Tensor],
    masks: dict[Modality, torch.Tensor],
    scales: dict[frozenset, torch.Tensor],
    pivot: Modality | None = None,
) -> torch.Tensor:
    """Mean over ordered pairs with >= 1 shared row of CE(scale * z_m[S] z_n[S]^T, diag)."""
    terms = []
    for m in emb:
        for n in emb:
            if m == n or (pivot is not None and pivot not in (m, n)):
                continue
            rows = [i for i in range(len(masks[m])) if masks[m][i] and masks[n][i]]
            if not rows:
                continue
            logits = scales[frozenset((m, n))] * emb[m][rows] @ emb[n][rows].T
            per_row = [torch.logsumexp(logits[i], dim=0) - logits[i, i] for i in range(len(rows))]
            terms.append(torch.stack(per_row).mean())
    return torch.stack(terms).mean()


def masks_with_holes(b: int, seed: int) -> dict[Modality, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {m: torch.rand(b, generator=g) > 0.3 for m in MODS}
    masks[Modality.STREET][:] = False  # a modality absent from every row: its pairs must not count
    masks[Modality.STREET][3] = True  # ... except one row shared with whoever else has row 3
    return masks


@pytest.mark.parametrize("per_pair", [False, True])
@pytest.mark.parametrize("with_holes", [False, True])
def test_loss_and_gradients_equal_the_naive_reference(per_pair: bool, with_holes: bool) -> None:
    b, d = 24, 16
    emb = random_embeddings(b, d, seed=1)
    masks = masks_with_holes(b, seed=2) if with_holes else {m: torch.ones(b, dtype=torch.bool) for m in MODS}
    cfg = LossConfig(per_pair_temperature=per_pair, temperature_init=0.1)
    loss_fn = ContrastiveLoss(cfg, MODS).double()
    if per_pair:  # distinct temperatures so a mix-up of pairs would show
        for i, p in enumerate(loss_fn.log_scale.values()):
            p.data.fill_(math.log(5.0 + i))
    out = loss_fn(emb, masks)

    ref_emb = {m: z.detach().clone().requires_grad_() for m, z in emb.items()}
    scales = {
        frozenset((m, n)): loss_fn.scale(m, n).detach().clone().requires_grad_() for m in MODS for n in MODS if m != n
    }
    ref = naive_loss(ref_emb, masks, scales)

    assert out.total.item() == pytest.approx(ref.item(), abs=1e-5)
    out.total.backward()
    ref.backward()
    for m in MODS:
        torch.testing.assert_close(emb[m].grad, ref_emb[m].grad, atol=1e-5, rtol=1e-5)
    if not per_pair:
        # d total / d log_scale = scale * d total / d scale, summed over the pairs sharing it
        # frozenset keys make the two directions of a pair share one reference scale
        ref_grad = sum(scales[frozenset(p)].grad * scales[frozenset(p)].detach() for p in loss_fn.pairs)
        assert loss_fn.log_scale["all"].grad.item() == pytest.approx(ref_grad.item(), abs=1e-5)


def test_pairs_without_shared_rows_are_left_out() -> None:
    b = 8
    emb = random_embeddings(b, 8, seed=3)
    masks = {m: torch.ones(b, dtype=torch.bool) for m in MODS}
    masks[Modality.AERIAL][:4] = False
    masks[Modality.STREET][4:] = False  # aerial and street never co-occur
    out = ContrastiveLoss(LossConfig(), MODS).double()(emb, masks)
    assert "aerial->street" not in out.pair_losses and "street->aerial" not in out.pair_losses
    assert len(out.pair_losses) == 18


def test_pivot_mode_only_contrasts_with_the_pivot() -> None:
    b = 12
    emb = random_embeddings(b, 8, seed=4)
    masks = {m: torch.ones(b, dtype=torch.bool) for m in MODS}
    cfg = LossConfig(mode="pivot", pivot=Modality.AERIAL)
    loss_fn = ContrastiveLoss(cfg, MODS).double()
    out = loss_fn(emb, masks)
    assert set(out.pair_losses) == {f"{m.value}->aerial" for m in MODS[1:]} | {f"aerial->{m.value}" for m in MODS[1:]}
    scales = {frozenset((m, n)): loss_fn.scale(m, n).detach() for m in MODS for n in MODS if m != n}
    ref = naive_loss({m: z.detach() for m, z in emb.items()}, masks, scales, pivot=Modality.AERIAL)
    assert out.total.item() == pytest.approx(ref.item(), abs=1e-6)


def test_accuracy_is_one_when_embeddings_match_across_modalities() -> None:
    z = F.normalize(torch.randn(16, 32), dim=1)
    emb = {m: z.clone() for m in MODS}
    out = ContrastiveLoss(LossConfig(), MODS)(emb, {})
    assert all(a.item() == 1.0 for a in out.pair_accuracy.values())
    assert len(out.pair_accuracy) == 20


def test_temperature_is_learned_and_capped() -> None:
    loss_fn = ContrastiveLoss(LossConfig(max_logit_scale=50.0), MODS)
    assert loss_fn.log_scale["all"].requires_grad
    loss_fn.log_scale["all"].data.fill_(10.0)
    assert loss_fn.scale(Modality.AERIAL, Modality.TEXT).item() == pytest.approx(50.0)
    fixed = ContrastiveLoss(LossConfig(learn_temperature=False), MODS)
    assert not any(p.requires_grad for p in fixed.parameters())


def test_mismatched_batch_sizes_are_rejected() -> None:
    emb = {Modality.AERIAL: torch.randn(4, 8), Modality.TEXT: torch.randn(5, 8)}
    with pytest.raises(ValueError, match="different batch sizes"):
        ContrastiveLoss(LossConfig(), MODS)(emb, {})


def test_loss_config_from_preset_builds() -> None:
    cfg = load_config("tiny")
    loss_fn = ContrastiveLoss(cfg.loss, cfg.model.modalities)
    assert len(loss_fn.pairs) == 10
