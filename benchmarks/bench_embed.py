"""Embedding throughput: the Ray Data job against bare ``model.encode`` on the same batches in one process.

A synthetic store is ingested once (``--cells`` cells x the preset's years) and its rows
are replicated (``--copies``, new sample ids, same payloads) so the job runs long enough
for a steady state. Per modality, and for all five at once, two things are timed
side by side, alternating, in one run:

* bare: the same batches, decoded beforehand (not timed), through ``model.encode`` in
  this process with every core's threads: the model's own speed, nothing else;
* job: ``unigeoclip.embed.embed`` end to end (plan, actor start-up, reading from Lance,
  decoding, encoding, upserting into LanceDB, compaction) on 2 single-thread CPU actors;
  and its steady rate once the actors run (rows / time from the first returned batch to
  the last: start-up excluded, the first batch's work included).

Goal: the job at least 0.8 of bare per modality on this 2-core machine.

    .venv/bin/python benchmarks/bench_embed.py [--config small] [--cells 40] [--copies 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from unigeoclip import Modality, UniGeoCLIP
from unigeoclip.cluster.runtime import cluster_cpus, ensure_ray
from unigeoclip.embed import EmbedOptions, embed
from unigeoclip.embed.plan import plan_embedding
from unigeoclip.embed.rows import DecodeRows
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSourceConfig
from unigeoclip.vectors import EmbeddingDB
from worlds import ingest_world, one_city_config


def replicate(store: SampleStore, copies: int) -> None:
    """Append ``copies - 1`` copies of every row with new sample ids (same payloads: same work per row)."""
    rows = store.samples().to_table()
    for c in range(1, copies):
        ids = pc.binary_join_element_wise(rows["sample_id"], pa.scalar(f"copy{c}"), "-")
        lance.write_dataset(rows.set_column(0, "sample_id", ids), store.samples_uri, mode="append")


def bare_encode(model: UniGeoCLIP, batches: list[dict[str, np.ndarray]], m: Modality) -> int:
    n = 0
    with torch.inference_mode():
        for b in batches:
            rows = np.flatnonzero(b[f"want_{m.value}"])
            if m is Modality.TEXT:
                model.encode(m, [str(t) for t in b["text"][rows]])
            else:
                model.encode(m, torch.from_numpy(np.ascontiguousarray(b[m.value][rows])))
            n += len(rows)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    cfg = one_city_config(args.config, args.cells)
    ensure_ray()
    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    store = SampleStore(work / "store")
    ingest_world(cfg, store)
    replicate(store, args.copies)
    torch.manual_seed(0)
    model_dir = UniGeoCLIP.from_config(cfg).save_pretrained(work / "model")
    model = UniGeoCLIP.from_pretrained(model_dir)

    # The job's own batches, decoded once here for the bare baseline.
    plan = plan_embedding(store, EmbeddingDB(work / "plan").register_version(
        "plan", fingerprint="-", model_dir=str(model_dir), embed_dim=cfg.model.embed_dim,
        modalities=[m.value for m in model.modalities]), model.modalities, batch_size=args.batch_size)  # fmt: skip
    decode = DecodeRows(samples_uri=plan.samples_uri, samples_version=plan.samples_version, model_dir=str(model_dir),
                        modalities=[m.value for m in model.modalities])  # fmt: skip
    batches = [decode({"rows": [c["rows"]], "want": [c["want"]]}) for c in plan.chunks]
    print(f"{store.count()} samples ({args.cells} cells x {len(SyntheticSourceConfig.of(cfg.data).years)} years x "
          f"{args.copies} copies), {args.config} model, batches of {args.batch_size}, {cluster_cpus()} Ray CPUs, "
          f"{torch.get_num_threads()} torch threads for bare encode")  # fmt: skip

    results: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for m in [*model.modalities, None]:
            name = m.value if m else "all five"
            mods = [m] if m else list(model.modalities)
            start = time.perf_counter()
            rows = sum(bare_encode(model, batches, x) for x in mods)
            bare = rows / (time.perf_counter() - start)
            start = time.perf_counter()
            summary = embed(model_dir, store, work / "db", model_version=f"bench-{name.replace(' ', '')}-{r}",
                            options=EmbedOptions(modalities=tuple(mods), batch_size=args.batch_size, publish=False,
                                                 metrics_textfile=str(work / "m.prom")))  # fmt: skip
            job = sum(summary.embedded.values()) / (time.perf_counter() - start)
            assert sum(summary.embedded.values()) == rows, (summary.embedded, rows)
            results.setdefault(name, {"bare": [], "job": [], "steady": [], "rows": [rows]})
            results[name]["bare"].append(bare)
            results[name]["job"].append(job)
            results[name]["steady"].append(rows / summary.stream_seconds)

    print(
        f"\n{'modality':<10} {'rows':>6} {'bare encode':>12} {'job':>12} {'job/bare':>9} {'job steady':>12} "
        f"{'steady/bare':>12}   (medians of {args.rounds}; goal >= 0.8)"
    )
    for name, res in results.items():
        bare, job, steady = (statistics.median(res[k]) for k in ("bare", "job", "steady"))
        print(f"{name:<10} {int(res['rows'][0]):>6} {bare:>8.0f} r/s {job:>8.0f} r/s {job / bare:>9.2f} "
              f"{steady:>8.0f} r/s {steady / bare:>12.2f}")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
