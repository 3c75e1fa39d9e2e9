"""Parameters and encode throughput of the ``paper`` coordinate encoder at depth 0, 4 and 12.

Width 768, 12 heads, sigmas 2^0..2^12 (K = 4 tokens) + 4 registers; eval mode, no grad,
fp32 on CPU. Depths run interleaved in one process.

    .venv/bin/python benchmarks/bench_coords.py [--batch 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved_medians
from unigeoclip import load_config
from unigeoclip.models.coords import build_location_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 4, 12])
    args = parser.parse_args()
    torch.manual_seed(0)
    coords = torch.stack((torch.rand(args.batch) * 180 - 90, torch.rand(args.batch) * 360 - 180), dim=1)
    encoders = {}
    for depth in args.depths:
        cfg = load_config("paper", overrides={"model": {"coords": {"depth": depth}}}).model
        encoders[depth] = build_location_encoder(cfg.coords, cfg.coords_width, cfg.embed_dim).eval()

    def runner(enc: torch.nn.Module):
        def run() -> None:
            with torch.inference_mode():
                enc(coords)

        return run

    times = interleaved_medians({str(d): runner(e) for d, e in encoders.items()}, repeats=args.repeats, warmup=1)
    print(f"paper coords encoder, batch {args.batch}, threads={torch.get_num_threads()}, fp32 CPU")
    print(f"{'depth':>5} {'parameters':>12} {'locations/s':>12}")
    for depth, enc in encoders.items():
        n = sum(p.numel() for p in enc.parameters())
        print(f"{depth:>5} {n:>12,} {args.batch / times[str(depth)]:>12,.0f}")


if __name__ == "__main__":
    main()
