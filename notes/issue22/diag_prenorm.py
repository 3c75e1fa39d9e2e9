"""Probe a model's coordinate encoder on its unit embeddings and on the same vectors before the L2 norm.

python notes/issue22/diag_prenorm.py MODEL_DIR STORE
GeoCLIP's location encoder is probed on its raw (unnormalised) output: this says what the norm costs ours.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from unigeoclip.eval.peers import batched
from unigeoclip.eval.probes import probe, spatial_blocks
from unigeoclip.eval.suite import probe_points, store_locations
from unigeoclip.eval.targets import location_targets
from unigeoclip.models import UniGeoCLIP
from unigeoclip.samples.store import SampleStore


def main(model_dir: str, store_dir: str) -> None:
    model = UniGeoCLIP.from_pretrained(model_dir)
    points = probe_points(store_locations(SampleStore(store_dir), landscape=False), 5000)
    targets = location_targets(points[:, 0], points[:, 1])
    split = spatial_blocks(points)
    tower = model.tower("coords")
    head = tower.head
    captured: list[torch.Tensor] = []
    hook = head.linear.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    unit = batched(lambda x: model.encode("coords", x), points)
    hook.remove()
    raw = torch.cat(captured).float().numpy()
    assert torch.allclose(F.normalize(torch.from_numpy(raw), dim=-1), torch.from_numpy(unit), atol=1e-5)
    for name, feats in (("unit embedding", unit), ("before the L2 norm", raw)):
        print(f"{name:>20}: probe mean R^2 {probe(name, feats, targets, split).mean_r2:.3f}")


def tokens_probe(model_dir: str, store_dir: str) -> None:
    """Also: the K frequency tokens after the blocks, concatenated (K x W), and their mean (W), before the head."""
    model = UniGeoCLIP.from_pretrained(model_dir)
    points = probe_points(store_locations(SampleStore(store_dir), landscape=False), 5000)
    targets = location_targets(points[:, 0], points[:, 1])
    split = spatial_blocks(points)
    tower = model.tower("coords")
    seen: list[torch.Tensor] = []
    hook = tower.norm.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
    batched(lambda x: model.encode("coords", x), points)
    hook.remove()
    mean = torch.cat(seen).float().numpy()
    print(f"{'token mean (W)':>20}: probe mean R^2 {probe('mean', mean, targets, split).mean_r2:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    tokens_probe(sys.argv[1], sys.argv[2])
