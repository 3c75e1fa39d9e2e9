"""Earth ingest throughput: one place at a time, batched in one process, and the Ray Data pipeline.

Issue 25's baseline: the earth source ingested 38 items/s through Ray on 2 cores while one plain process
extracted 53 items/s. This measures, side by side in one run with rounds alternating, the same work
(extract, validate, write a fresh Lance store) from the same plan (made once, its time printed apart):

* ``one at a time``: ``extract(item)`` per item, validation, a Lance write (the old per-item path);
* ``batched``: the same work through ``extract_items`` (blocks of ``--batch`` items), one process;
* ``Ray Data``: ``ingest`` into a fresh store, ``ingest.items_per_batch = --batch`` (default: the
  earth preset's);
* ``Ray Data, 2 items``: the same for two items, one block: what a run costs before any work (actor
  start, Ray Data start, the ledger, the commit), so the big run splits into that fixed cost and a
  cost per item.

Goals (issue 25): Ray >= 1.5x the one process, and >= 5x 38 items/s. The machine's load averages are
printed before and after: others' work on a shared machine slows every path, Ray's most.

    .venv/bin/python benchmarks/bench_ingest_earth.py [--places 300] [--landscape 300] [--batch N] [--rounds 2]
    .venv/bin/python benchmarks/bench_ingest_earth.py --demo     # the earth preset's whole plan, as `make demo`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lance
import pyarrow as pa
import ray
from unigeoclip import load_config
from unigeoclip.cluster.runtime import cluster_cpus, ensure_ray
from unigeoclip.config import IngestConfig
from unigeoclip.geodata.rasters import blue_marble, globe_tile_g, pvlib_altitude
from unigeoclip.ingest.pipeline import extract_locally, ingest, share_source_data
from unigeoclip.samples.schema import SAMPLE_SCHEMA
from unigeoclip.samples.store import SampleStore
from unigeoclip.samples.validate import check_sample
from unigeoclip.sources.base import RawSample
from unigeoclip.sources.earth import EarthSource, EarthSourceConfig

BASELINE_ITEMS_PER_S = 38.0  # issue 25: the Ray pipeline on 2 cores before batching


class PlannedEarth(EarthSource):
    """The earth source with its plan given, so the Ray path starts from the same items as the others."""

    def __init__(self, cfg: EarthSourceConfig, data: object, items: list[dict]) -> None:
        super().__init__(cfg, data)  # type: ignore[arg-type]
        self.items = items

    def plan(self) -> list[dict]:
        """The items given (planned once, outside every timing)."""
        return list(self.items)


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


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--places", type=int, default=300)
    parser.add_argument("--landscape", type=int, default=300)
    parser.add_argument("--batch", type=int, default=None, help="items per block (default: the earth preset's)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="the earth preset's whole plan (10,128 items), as the demo")
    args = parser.parse_args()
    load_before = load()
    earth = {} if args.demo else {"max_places": args.places, "landscape_max": args.landscape}
    cfg = load_config("earth", overrides={"data": {"sources": {"earth": earth}}})
    batch = args.batch or cfg.ingest.items_per_batch
    source_cfg = EarthSourceConfig.of(cfg.data)
    source = EarthSource(source_cfg, cfg.data)
    start = time.perf_counter()
    items = source.plan()
    plan_s = time.perf_counter() - start
    for loader in (blue_marble, globe_tile_g, pvlib_altitude):
        loader()  # the rasters read once in this process, as a long-lived worker has them
    ensure_ray()
    start = time.perf_counter()
    ray.get(share_source_data(source))  # what each Ray run shares first (put from here: this process holds it)
    put_s = time.perf_counter() - start
    everything, two = PlannedEarth(source_cfg, cfg.data, items), PlannedEarth(source_cfg, cfg.data, items[:2])
    names = ("one at a time", "batched", "Ray Data", "Ray Data, 2 items")
    times: dict[str, list[float]] = {name: [] for name in names}
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_earth_"))
    plan = IngestConfig(items_per_batch=batch)
    for r in range(args.rounds):
        start = time.perf_counter()
        n = one_at_a_time(source, cfg.data, items, work / f"one{r}.lance")
        times["one at a time"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rows: list[dict] = []
        for s in range(0, len(items), batch):
            rows += extract_locally(source, cfg.data, items[s : s + batch])[0]
        lance.write_dataset(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), str(work / f"batched{r}.lance"))
        times["batched"].append(time.perf_counter() - start)
        start = time.perf_counter()
        summary = ingest(everything, SampleStore(work / f"ray{r}"), cfg.data, plan=plan)
        times["Ray Data"].append(time.perf_counter() - start)
        assert summary.written == n == len(rows), (summary.written, n, len(rows))
        start = time.perf_counter()
        assert ingest(two, SampleStore(work / f"two{r}"), cfg.data, plan=plan).written == 2
        times["Ray Data, 2 items"].append(time.perf_counter() - start)
    shutil.rmtree(work)
    what = "the earth preset's whole plan" if args.demo else f"{args.places} places + {args.landscape} landscape"
    print(f"earth source, {len(items)} items ({what}), "
          f"{cluster_cpus()} Ray CPUs, blocks of {batch}, {args.rounds} alternating rounds")  # fmt: skip
    print(f"load averages: {load_before} before, {load()} after")
    print(f"plan (once, the same for every path, in no figure below)  {plan_s:.2f} s")
    print(f"shared rasters put in the object store (each Ray run)  {put_s:.2f} s")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name in names[:3]:
        t, each = medians[name], ", ".join(f"{x:.2f}" for x in times[name])
        print(f"{name:14s} {len(items) / t:7.1f} items/s  (median {t:.2f} s; rounds {each})")
    fixed, ray_ = medians["Ray Data, 2 items"], medians["Ray Data"]
    per_item = (ray_ - fixed) / (len(items) - 2)
    print(f"Ray Data's parts: {fixed:.2f} s fixed (a 2-item run) + {1000 * per_item:.2f} ms/item "
          f"({1 / per_item:.0f} items/s once running)")  # fmt: skip
    one = medians["one at a time"]
    print(f"Ray / one process (one at a time)  {one / ray_:5.2f}x  (goal >= 1.5)")
    print(f"Ray / batched process              {medians['batched'] / ray_:5.2f}x")
    rate = len(items) / ray_
    print(f"Ray items/s / {BASELINE_ITEMS_PER_S:.0f} (before)        {rate / BASELINE_ITEMS_PER_S:5.2f}x  (goal >= 5)")


if __name__ == "__main__":
    main()
