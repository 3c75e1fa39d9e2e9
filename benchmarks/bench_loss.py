"""All-pairs loss forward+backward against the matrix products it cannot avoid.

M = 5 modalities, B = 1024 rows per rank, D = 512, fp32 on CPU. The floor is, for each
of the M (M - 1) / 2 unordered pairs, the logits product and its two backward products.
Goal: ratio at most 1.5.

    .venv/bin/python benchmarks/bench_loss.py [--batch 1024] [--dim 512] [--repeats 15]
"""

from __future__ import annotations

import argparse
from itertools import combinations

import torch
import torch.nn.functional as F
from timing import interleaved_medians
from unigeoclip import Modality
from unigeoclip.config import LossConfig
from unigeoclip.losses import ContrastiveLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    mods = tuple(Modality)
    leaves = {m: F.normalize(torch.randn(args.batch, args.dim), dim=1).requires_grad_() for m in mods}
    masks = {m: torch.ones(args.batch, dtype=torch.bool) for m in mods}
    loss_fn = ContrastiveLoss(LossConfig(), mods)
    grad_out = torch.randn(args.batch, args.batch)

    def loss_step() -> None:
        loss_fn(leaves, masks).total.backward()

    def bare_products() -> None:
        for m, n in combinations(mods, 2):
            (leaves[m] @ leaves[n].T).backward(grad_out)

    times = interleaved_medians({"loss": loss_step, "matmuls": bare_products}, repeats=args.repeats)
    print(f"threads={torch.get_num_threads()} M={len(mods)} B={args.batch} D={args.dim} fp32 CPU")
    print(f"loss fwd+bwd          {times['loss'] * 1e3:8.1f} ms")
    print(f"bare pair matmuls f+b {times['matmuls'] * 1e3:8.1f} ms")
    print(f"ratio                 {times['loss'] / times['matmuls']:8.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    main()
