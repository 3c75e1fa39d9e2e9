"""Reader throughput against what a training step consumes.

Reads the train split of a synthetic store through ``build_dataset`` (decode, augment,
tokenise) and, in the same run, times forward + backward + AdamW steps of the model on
batches from that reader. Reports both in samples/s: the reader keeps training fed when
its rate is above the step's (on a real cluster the two run on different cores).

    .venv/bin/python benchmarks/bench_reader.py [--config small] [--cells 40] [--batch 64] [--decoders 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from unigeoclip import UniGeoCLIP
from unigeoclip.cluster.runtime import ensure_ray
from unigeoclip.losses import ContrastiveLoss
from unigeoclip.reader.pipeline import build_dataset
from unigeoclip.samples.store import SampleStore
from worlds import ingest_world, one_city_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--decoders", type=int, default=1)
    parser.add_argument("--store", default=None, help="an existing store (default: ingest a fresh synthetic one)")
    args = parser.parse_args()
    cfg = one_city_config(args.config, args.cells)
    ensure_ray()
    store = SampleStore(args.store or Path(tempfile.mkdtemp(prefix="bench_reader_")) / "store")
    if not store.has_samples():
        ingest_world(cfg, store)
    n_train = store.count("train")

    # 1. the reader alone, as training reads it: every epoch in one stream (steady state: the first
    #    batch pays for start-up)
    ds = build_dataset(cfg, store, "train", decoders=args.decoders, cpus_per_decoder=0.5, epochs=3)
    batches, start, seen = [], 0.0, 0
    for batch in ds.iter_torch_batches(batch_size=args.batch, drop_last=True):
        if not batches:
            start = time.perf_counter()
        else:
            seen += len(batch["coords"])
        if len(batches) < 3:
            batches.append(batch)
    reader_rate = seen / (time.perf_counter() - start)

    # 2. what a training step consumes, on batches from that reader
    torch.manual_seed(0)
    model = UniGeoCLIP.from_config(cfg).train()
    loss_fn = ContrastiveLoss(cfg.loss, cfg.model.modalities)
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-4)
    times = []
    for i in range(8):
        batch = batches[i % len(batches)]
        t = time.perf_counter()
        out = loss_fn(model(batch), {m: batch[f"{m.value}_present"] for m in model.modalities})
        opt.zero_grad()
        out.total.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step_rate = args.batch / statistics.median(times)

    print(f"{args.config}: {n_train} train samples, batch {args.batch}, {args.decoders} decoder actor(s), "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"reader (build_dataset)     {reader_rate:8.1f} samples/s")
    print(f"training step consumes     {step_rate:8.1f} samples/s  (fwd+bwd+AdamW, one process)")
    print(f"reader / step              {reader_rate / step_rate:8.2f}x")


if __name__ == "__main__":
    main()
