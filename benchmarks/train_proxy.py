"""A quick stand-in for a full training run, for what-if experiments on model and loss settings.

The same model, loss, AdamW, warmup-cosine schedule, clipping, global batch and colour
jitter as ``unigeoclip train``, in one process on the store's samples decoded once
beforehand, without the geometric augmentation (which ``small`` turns off) and without Ray
Train, DeepSpeed or streaming: ~6 minutes for 450 steps of ``small`` on 2 cores, and no
start-up to wait for. It reproduced the distributed run within run-to-run noise
(0.436 against 0.419 mean held-out recall@1 at 450 steps; notes/issue4.md). Use it to
rank settings, then confirm the winner with ``unigeoclip train``.

    .venv/bin/python benchmarks/train_proxy.py --store /work/data/world1k [--config small] [--steps 450]
        [--modalities text,coords] [--set model.text.hidden_size=64 ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from unigeoclip import UniGeoCLIP, load_config
from unigeoclip.cluster.runtime import ensure_ray
from unigeoclip.config import Config, parse_overrides
from unigeoclip.eval.retrieval import format_matrix
from unigeoclip.losses import ContrastiveLoss
from unigeoclip.modality import INPUT_KEYS, Modality, present_key
from unigeoclip.preprocess.batch import DecodeBatch
from unigeoclip.preprocess.spec import PreprocessSpec
from unigeoclip.reader.pipeline import batch_rows, load_batches
from unigeoclip.train.loop import held_out_recall, optimizer_and_schedule
from unigeoclip.train.module import TrainModule
from unigeoclip.train.step import PlainEngine, train_step

Tensors = dict[str, torch.Tensor]


def decoded_split(cfg: Config, store: str, split: str, modalities: list[Modality]) -> Tensors:
    """A whole split, un-augmented, as one tensor per batch key of ``modalities`` (to draw batches from)."""
    keys = [k for m in modalities for k in (*INPUT_KEYS[m], present_key(m))]
    batches = load_batches(cfg, store, split)
    return {k: torch.from_numpy(np.concatenate([b[k] for b in batches])) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--config", default="small")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps [the config's train.steps]")
    parser.add_argument("--modalities", default=None, help="comma-separated towers to train [the config's]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-every", type=int, default=150)
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    if args.modalities:
        overrides.setdefault("model", {})["modalities"] = args.modalities.split(",")
    if args.steps:
        overrides.setdefault("train", {})["steps"] = args.steps
    cfg = load_config(args.config, overrides=overrides)
    tc, modalities = cfg.train, list(cfg.model.modalities)
    batch = tc.micro_batch * tc.workers * tc.grad_accum  # the distributed run's global batch
    torch.manual_seed(tc.seed)
    torch.set_num_threads(args.threads)
    ensure_ray(num_cpus=args.threads)
    started = time.perf_counter()
    train = decoded_split(cfg, args.store, "train", modalities)
    val = load_batches(cfg, args.store, tc.val_split)  # what the training loop validates on
    rows = len(next(iter(train.values())))
    print(f"decoded {rows} train and {sum(batch_rows(b) for b in val)} held-out samples in "
          f"{time.perf_counter() - started:.0f} s; global batch {batch}", flush=True)  # fmt: skip

    jitter = DecodeBatch(
        PreprocessSpec.of(cfg), augment=True, seed=tc.seed
    )  # only its per-epoch jitter: the rest is decoded above
    model = UniGeoCLIP.from_config(cfg)
    module = TrainModule(model, ContrastiveLoss(cfg.loss, modalities))
    engine = PlainEngine(module, *optimizer_and_schedule(module, tc), grad_clip=tc.grad_clip)
    order, generator, cursor = torch.empty(0, dtype=torch.long), torch.Generator().manual_seed(tc.seed), rows
    started = time.perf_counter()
    for step in range(1, tc.steps + 1):
        if cursor + batch > rows:  # a new epoch in a new order, as the streamed reader does
            order, cursor = torch.randperm(rows, generator=generator), 0
        picked = order[cursor : cursor + batch]
        cursor += batch
        drawn = jitter.jitter({k: v[picked].numpy() for k, v in train.items()})  # the reader's jitter
        out = train_step(engine, {k: torch.from_numpy(v) for k, v in drawn.items()})
        if step % args.report_every == 0 or step == tc.steps:
            results = held_out_recall(model, val)
            mean = float(np.mean([r.recall[1] for r in results]))
            print(f"step {step} | loss {float(out.total.detach()):.3f} | {time.perf_counter() - started:.0f} s of "
                  f"training | held-out mean recall@1 {mean:.3f}", flush=True)  # fmt: skip
    print(format_matrix(results))


if __name__ == "__main__":
    main()
