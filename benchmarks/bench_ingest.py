"""Ingest throughput: the Ray Data pipeline against the same per-cell code in one plain process.

Both render, validate and write the same cells of the synthetic world to a fresh Lance
store; runs alternate (plain, ray, plain, ray, ...) in one session and the medians are
compared. Goal: Ray Data at least 1.5x the plain process on this 2-core machine.

    .venv/bin/python benchmarks/bench_ingest.py [--cells 60] [--rounds 2] [--config small]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lance
import pyarrow as pa
from unigeoclip.cluster.runtime import cluster_cpus, ensure_ray
from unigeoclip.ingest.pipeline import extract_locally, ingest
from unigeoclip.samples.schema import SAMPLE_SCHEMA
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig
from worlds import one_city_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default="small")
    args = parser.parse_args()
    cfg = one_city_config(args.config, args.cells)
    source = SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data)
    cells = len(source.plan())
    ensure_ray()
    times: dict[str, list[float]] = {"plain": [], "ray": []}
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    for r in range(args.rounds):
        start = time.perf_counter()
        rows, _ = extract_locally(source, cfg.data, source.plan())
        lance.write_dataset(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), str(work / f"plain{r}.lance"))
        times["plain"].append(time.perf_counter() - start)
        start = time.perf_counter()
        summary = ingest(source, SampleStore(work / f"ray{r}"), cfg.data)
        times["ray"].append(time.perf_counter() - start)
        assert summary.written == len(rows), (summary.written, len(rows))
    shutil.rmtree(work)
    plain, ray_ = statistics.median(times["plain"]), statistics.median(times["ray"])
    years = len(SyntheticSourceConfig.of(cfg.data).years)
    print(f"synthetic world, {cells} cells x {years} years ({args.config} data sizes), "
          f"{cluster_cpus()} Ray CPUs, {args.rounds} alternating rounds")  # fmt: skip
    print(f"plain process  {cells / plain:6.2f} cells/s  (median {plain:.1f} s)")
    print(f"Ray Data       {cells / ray_:6.2f} cells/s  (median {ray_:.1f} s)")
    print(f"speed-up       {plain / ray_:6.2f}x  (goal >= 1.5)")


if __name__ == "__main__":
    main()
