"""Everything that needs CUDA, in one short run (a few minutes on one GPU).

1. the ``paper`` model's forward and backward pass in bf16 at batch 256 (halved until it fits, and said so),
   with the achieved TFLOP/s (counted by torch's FlopCounterMode) as a fraction of the device's peak;
2. a DeepSpeed ZeRO-2 engine step on CUDA (NCCL, world size 1), the training loop's own config;
3. device placement: the embedding job's GPU pipeline (``--gpu``: GPU actors) embeds a tiny store and
   matches the CPU encoding, and the Serve encoder loads its model on the GPU Ray gives it.

    .venv/bin/python benchmarks/gpu_check.py                                # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --config tiny --batch 8   # the logic, on a CPU

Prints one line per check and exits non-zero if one fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from unigeoclip import Modality, UniGeoCLIP, load_config
from unigeoclip.config import Config
from unigeoclip.losses import ContrastiveLoss
from unigeoclip.modality import present_key
from unigeoclip.sources.synthetic.source import SyntheticSourceConfig
from unigeoclip.train.module import TrainModule

# Dense bf16 peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by a substring of the device name.
PEAK_BF16 = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
             "L4": 121.0, "A10G": 70.0}  # fmt: skip


def batch_for(model: UniGeoCLIP, n: int, device: str) -> dict[str, torch.Tensor]:
    """``n`` random samples of every tower of ``model`` (the batch contract), on ``device``."""
    mc, g = model.config.model, torch.Generator().manual_seed(0)
    out: dict[str, torch.Tensor] = {}
    for m in model.modalities:
        if m in (Modality.AERIAL, Modality.STREET, Modality.DSM):
            size = getattr(mc, m.value).image_size
            out[m.value] = torch.rand(n, 1 if m is Modality.DSM else 3, size, size, generator=g)
        elif m is Modality.TEXT:
            out.update(model.tokenize([f"a place number {i} by the river" for i in range(n)]))
        else:
            lat, lon = torch.rand(n, generator=g) * 160 - 80, torch.rand(n, generator=g) * 360 - 180
            out["coords"] = torch.stack([lat, lon], 1)
        out[present_key(m)] = torch.ones(n, dtype=torch.bool)
    return {k: v.to(device) for k, v in out.items()}


def forward_backward(cfg: Config, batch: int, device: str, steps: int) -> str:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = UniGeoCLIP.from_config(cfg)
    module = TrainModule(model, ContrastiveLoss(cfg.loss, cfg.model.modalities)).to(device)
    if device == "cuda":
        module = module.to(torch.bfloat16)  # as DeepSpeed's bf16 mode runs it
    wanted = batch
    while True:
        try:
            inputs = batch_for(model, batch, device)
            module.zero_grad(set_to_none=True)
            with FlopCounterMode(display=False) as counter:  # one counted step (also the warm-up)
                module(inputs).total.backward()
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        module.zero_grad(set_to_none=True)
        loss = module(inputs).total
        loss.backward()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    assert torch.isfinite(loss), f"loss {loss}"
    tflops = counter.get_total_flops() / seconds / 1e12
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    share = f", {tflops / peak:.1%} of the {peak:g} TFLOP/s bf16 peak of {name}" if peak else f" on {name}"
    fitted = "" if batch == wanted else f" (batch {wanted} did not fit in memory)"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (f"{cfg.name} ({params:.1f} M parameters) forward+backward at batch {batch}{fitted}: "
            f"{seconds * 1e3:.0f} ms/step, {tflops:.3g} TFLOP/s{share}")  # fmt: skip


def deepspeed_step(cfg: Config, batch: int, device: str) -> str:
    import deepspeed
    from unigeoclip.train.deepspeed_config import deepspeed_config
    from unigeoclip.train.loop import optimizer_and_schedule

    gpu = device == "cuda"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29511"), RANK="0",
                      LOCAL_RANK="0", WORLD_SIZE="1")  # fmt: skip
    deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
    tc = cfg.train.model_copy(update={"zero_stage": 2, "micro_batch": batch, "steps": 10, "warmup_steps": 1})
    model = UniGeoCLIP.from_config(cfg)
    module = TrainModule(model, ContrastiveLoss(cfg.loss, cfg.model.modalities))
    optimizer, scheduler = optimizer_and_schedule(module, tc)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(tc, gpu=gpu))  # fmt: skip
    inputs = batch_for(model, batch, str(engine.device))
    before = next(engine.module.model.parameters()).detach().float().clone()
    losses = []
    for _ in range(3):
        out = engine(inputs)
        engine.backward(out.total)
        engine.step()
        losses.append(float(out.total))
    moved = float((next(engine.module.model.parameters()).detach().float() - before).abs().max())
    assert all(map(torch.isfinite, map(torch.tensor, losses))) and moved > 0, (losses, moved)
    dtype = next(engine.module.parameters()).dtype
    return (f"DeepSpeed ZeRO-{tc.zero_stage} engine on {engine.device} ({dtype}): 3 steps at batch {batch}, "
            f"losses {', '.join(f'{v:.3f}' for v in losses)}, weights moved by up to {moved:.2e}")  # fmt: skip


def placement(device: str) -> str:
    import numpy as np
    import pyarrow.compute as pc
    import ray
    from unigeoclip.cluster.runtime import actor_device, ensure_ray
    from unigeoclip.embed import EmbedOptions, embed
    from unigeoclip.ingest.pipeline import ingest
    from unigeoclip.preprocess.batch import DecodeBatch
    from unigeoclip.preprocess.spec import PreprocessSpec
    from unigeoclip.samples.store import SampleStore
    from unigeoclip.serve import ServeConfig
    from unigeoclip.sources.synthetic.source import SyntheticSource
    from unigeoclip.vectors import EmbeddingDB
    from unigeoclip.vectors.versions import model_version_id

    gpu = device == "cuda"
    cfg = load_config("tiny")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ensure_ray()
    store = SampleStore(work / "store")
    ingest(SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data), store, cfg.data)
    model_dir = UniGeoCLIP.from_config(cfg).eval().save_pretrained(work / "model")
    summary = embed(model_dir, store, work / "db", options=EmbedOptions(gpu=gpu, batch_size=64))
    assert summary.complete and not summary.failed, str(summary)
    rows = EmbeddingDB(work / "db").embeddings(model_version_id(model_dir)).to_lance().to_table()
    rows = rows.filter(pc.equal(rows["modality"], "aerial"))
    samples = store.samples().to_table(filter="current = true")
    model = UniGeoCLIP.from_pretrained(model_dir)
    decoded = DecodeBatch(PreprocessSpec.of(model.config), augment=False)(samples)
    index = {s: i for i, s in enumerate(samples["sample_id"].to_pylist())}
    take = [index[s] for s in rows["sample_id"].to_pylist()]
    with torch.no_grad():
        want = model.encode(Modality.AERIAL, torch.from_numpy(decoded["aerial"][take])).numpy()
    gap = float(np.abs(np.stack(rows["vector"].to_pylist()) - want).max())
    assert gap < 1e-2, f"GPU embeddings differ from the CPU encoding by {gap}"

    @ray.remote(num_gpus=1 if gpu else 0)
    def serve_encoder_device(db: str) -> tuple[str, str]:
        from unigeoclip.serve.encoder import QueryEncoder

        replica = QueryEncoder(ServeConfig(db=db))
        return actor_device(), str(next(replica.models[replica.current].parameters()).device)

    chosen, loaded = ray.get(serve_encoder_device.remote(str(work / "db")))
    assert chosen == device and loaded.startswith(device), (chosen, loaded)
    return (f"placement: the embed job ({'GPU actors' if gpu else 'CPU actors'}) wrote {summary.rows} rows, "
            f"aerial within {gap:.1e} of the CPU encoding; the Serve encoder chose {chosen} and holds its "
            f"model on {loaded}")  # fmt: skip


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ds-batch", type=int, default=None, help="DeepSpeed step batch [batch / 4]")
    parser.add_argument("--steps", type=int, default=5, help="timed forward+backward steps")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}): run this on a GPU machine, or --device cpu", flush=True)
        return 2
    cfg = load_config(args.config)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("forward+backward", lambda: forward_backward(cfg, args.batch, args.device, args.steps)),
        ("deepspeed", lambda: deepspeed_step(cfg, args.ds_batch or max(2, args.batch // 4), args.device)),
        ("placement", lambda: placement(args.device)),
    ]
    failed = 0
    for name, check in checks:
        start = time.perf_counter()
        try:
            line = check()
        except Exception:  # a script of independent checks: report each failure and go on to the next
            failed += 1
            line = "FAILED\n" + traceback.format_exc()
        print(f"[{name}, {time.perf_counter() - start:.0f} s] {line}", flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
