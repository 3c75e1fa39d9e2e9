"""Distributed training throughput: 1 vs 2 workers, and the input pipeline's share of step time.

Four short Ray Train + DeepSpeed runs in one process, back to back on the same store:
{1, 2} workers x {the real streamed pipeline (take, decode, augment), the same samples
decoded beforehand and materialised in the object store}. Rates are the median of the
steady-state reports (the first report, which pays for start-up, is dropped).

    .venv/bin/python benchmarks/bench_train.py --store /work/data/world1k [--config small] [--steps 40]

Pipeline overhead = 1 - (real rate / pre-materialised rate) at the same worker count: the
share of step time lost to reading and decoding. On this 2-core machine decoding competes
with the workers for the same cores; on a cluster the decoders run on their own CPUs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import ray
from unigeoclip import load_config
from unigeoclip.cluster.runtime import cluster_cpus, ensure_ray
from unigeoclip.config import Config
from unigeoclip.reader.pipeline import build_dataset
from unigeoclip.samples.store import SampleStore
from unigeoclip.train.trainer import train


def steady_rate(run_dir: Path) -> float:
    """Median samples/s over the run's progress reports, the first (start-up) one excluded."""
    reports = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in reports if r["step"] > 0][1:]
    if not rates:
        raise RuntimeError(f"{run_dir} has too few progress reports: raise --steps")
    return statistics.median(rates)


def run_config(base: Config, workers: int, steps: int) -> Config:
    cpus = cluster_cpus()
    decoder_cpus = base.train.cpus_per_decoder
    return base.updated(
        {
            "train": {
                "workers": workers,
                "steps": steps,
                "cpus_per_worker": round((cpus - decoder_cpus) / workers, 2),
                "decoders": 1,  # the budget above holds one decoder
                "val_every": 0,
                "val_max_samples": 64,
                "ckpt_every": steps,
                "log_every": max(2, steps // 8),
            }
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="a sample store (e.g. from `unigeoclip ingest`)")
    parser.add_argument("--config", default="small")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    ensure_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    store = SampleStore(args.store)
    base = load_config(args.config)
    results: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for workers in (1, 2):
            cfg = run_config(base, workers, args.steps)
            tc = cfg.train
            epochs = math.ceil(tc.steps * tc.micro_batch * tc.workers / store.count("train"))
            pre = build_dataset(cfg, store, "train", epochs=epochs, seed=tc.seed).materialize()
            for feed, dataset in (("pipeline", None), ("pre-decoded", pre)):
                run_dir = Path(tmp) / f"{workers}-{feed}"
                train(cfg, store, run_dir, train_dataset=dataset)
                results[(workers, feed)] = steady_rate(run_dir)
            del pre
    print(
        f"\n{args.config}: micro_batch {base.train.micro_batch} per worker, {args.steps} steps, {cluster_cpus()} CPUs"
    )
    print(f"{'workers':>7} {'feed':>12} {'samples/s':>10} {'per worker':>11}")
    for (workers, feed), rate in results.items():
        print(f"{workers:>7} {feed:>12} {rate:>10.1f} {rate / workers:>11.1f}")
    for workers in (1, 2):
        overhead = 1.0 - results[(workers, "pipeline")] / results[(workers, "pre-decoded")]
        print(f"pipeline overhead, {workers} worker(s): {overhead:.0%} of step time (goal <= 20%)")
    print(f"2 workers / 1 worker (pipeline): {results[(2, 'pipeline')] / results[(1, 'pipeline')]:.2f}x")


if __name__ == "__main__":
    main()
