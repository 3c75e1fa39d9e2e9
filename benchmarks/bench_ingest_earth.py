"""Earth ingest throughput: one place at a time, batched in one process, and the Ray Data pipeline.

Issue 25's baseline: the earth source ingested 38 items/s through Ray on 2 cores while one plain process
extracted 53 items/s, each place costing a numpy grid and a raster lookup of its own. Places are now cut
in batches (``EarthSource.extract_batch``: one grid and one lookup per raster for a block of items); this
measures, side by side in one run with rounds alternating:

* ``one at a time``: ``extract(item)`` per item, validation, a Lance write (the old per-item path);
* ``batched``: the same work through ``extract_items`` (blocks of ``--batch`` items), one process;
* ``Ray Data``: ``ingest`` into a fresh store, ``ingest.items_per_batch = --batch``.

Goals (issue 25): Ray >= 1.5x the one process, and >= 5x 38 items/s.

    .venv/bin/python benchmarks/bench_ingest_earth.py [--places 300] [--landscape 300] [--batch 32] [--rounds 2]
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
from unigeoclip import load_config
from unigeoclip.cluster.runtime import cluster_cpus, ensure_ray
from unigeoclip.config import IngestConfig
from unigeoclip.ingest.pipeline import extract_locally, ingest
from unigeoclip.samples.schema import SAMPLE_SCHEMA
from unigeoclip.samples.store import SampleStore
from unigeoclip.samples.validate import check_sample
from unigeoclip.sources.base import RawSample
from unigeoclip.sources.earth import EarthSource, EarthSourceConfig

BASELINE_ITEMS_PER_S = 38.0  # issue 25: the Ray pipeline on 2 cores before batching


def one_at_a_time(source: EarthSource, cfg_data: object, items: list[dict], out: Path) -> int:
    rows = []
    for item in items:
        for p in source.extract(item):
            if isinstance(p, RawSample):
                checked = check_sample(p, cfg_data, "bench")  # type: ignore[arg-type]
                if checked.row is not None:
                    rows.append(checked.row)
    lance.write_dataset(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), str(out))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--places", type=int, default=300)
    parser.add_argument("--landscape", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    earth = {"max_places": args.places, "landscape_max": args.landscape}
    cfg = load_config("earth", overrides={"data": {"sources": {"earth": earth}}})
    source = EarthSource(EarthSourceConfig.of(cfg.data), cfg.data)
    items = source.plan()
    source.extract(items[0])  # rasters loaded once in this process, as a long-lived worker has them
    ensure_ray()
    times: dict[str, list[float]] = {"one at a time": [], "batched": [], "Ray Data": []}
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_earth_"))
    plan = IngestConfig(items_per_batch=args.batch)
    for r in range(args.rounds):
        start = time.perf_counter()
        n = one_at_a_time(source, cfg.data, items, work / f"one{r}.lance")
        times["one at a time"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rows: list[dict] = []
        for s in range(0, len(items), args.batch):
            rows += extract_locally(source, cfg.data, items[s : s + args.batch])[0]
        lance.write_dataset(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), str(work / f"batched{r}.lance"))
        times["batched"].append(time.perf_counter() - start)
        start = time.perf_counter()
        summary = ingest(source, SampleStore(work / f"ray{r}"), cfg.data, plan=plan)
        times["Ray Data"].append(time.perf_counter() - start)
        assert summary.written == n == len(rows), (summary.written, n, len(rows))
    shutil.rmtree(work)
    print(f"earth source, {len(items)} items ({args.places} places + {args.landscape} landscape), "
          f"{cluster_cpus()} Ray CPUs, batches of {args.batch}, {args.rounds} alternating rounds")  # fmt: skip
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in medians.items():
        print(f"{name:14s} {len(items) / t:7.1f} items/s  (median {t:.1f} s)")
    one, ray_ = medians["one at a time"], medians["Ray Data"]
    print(f"Ray / one process (one at a time)  {one / ray_:5.2f}x  (goal >= 1.5)")
    print(f"Ray / batched process              {medians['batched'] / ray_:5.2f}x")
    rate = len(items) / ray_
    print(f"Ray items/s / {BASELINE_ITEMS_PER_S:.0f} (before)        {rate / BASELINE_ITEMS_PER_S:5.2f}x  (goal >= 5)")


if __name__ == "__main__":
    main()
