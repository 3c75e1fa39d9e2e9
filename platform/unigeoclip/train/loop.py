"""The loop each Ray Train worker runs: stream its shard, step a DeepSpeed engine, report, checkpoint.

Every worker reports at the same steps (Ray Train requires it). Checkpoints are
DeepSpeed checkpoints (each rank writes its ZeRO shard; Ray Train merges them into one
directory); a restarted worker group resumes from the latest one with the same step
count, optimizer and scheduler state. The last checkpoint also carries the exported
model directory (consolidated fp32 weights, config, tokenizer).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from safetensors.torch import save_file

from ..config import Config, TrainConfig
from ..errors import ConfigError
from ..eval.retrieval import PairRecall, format_matrix, recall_matrix
from ..losses import ContrastiveLoss
from ..losses.gather import all_reduce_mean
from ..models import UniGeoCLIP
from ..models.unigeoclip import batch_tensors
from ..obs.progress import clock
from ..reader.pipeline import batch_rows
from .deepspeed_config import deepspeed_config, skip_inference_comm_op
from .live import LiveGauges
from .module import TrainModule
from .schedule import warmup_cosine
from .step import train_step

EXPORT_DIR = "model"
PROBE_FILE = "probe.safetensors"
# What rank 0 exports while the run goes (ray_unigeoclip_train_<figure>{run}); the keys of its progress lines.
LIVE_FIGURES = {"step": "step", "loss": "loss", "samples_per_s": "samples_per_second", "lr": "lr", "val_r1": "val_r1"}
log = logging.getLogger("unigeoclip.train")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config`` = ``{"cfg": Config dict, "run_dir": str, "gpu": bool, "val": ObjectRef}``
    and optionally ``"progress"``: a ``ray.util.queue.Queue`` that rank 0 puts its progress lines on (the
    driver prints them).

    ``val`` holds the held-out split as decoded numpy batches (see ``data.reader.load_batches``).
    """
    run_dir, gpu = Path(config["run_dir"]), bool(config["gpu"])
    if not gpu:  # said, not detected: DeepSpeed's detection warns "unable to detect" a GPU on every CPU worker
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    _quiet_library_loggers()
    cfg = Config.model_validate(config["cfg"])
    tc = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _record_worker(run_dir, rank)
    live = LiveGauges("train", tuple(LIVE_FIGURES.values()), {"run": str(run_dir)}) if rank == 0 else None
    lines = config.get("progress") if rank == 0 else None
    torch.manual_seed(tc.seed)
    torch.set_num_threads(max(1, round(tc.cpus_per_worker)))  # 1.5 reserved CPUs: 2 threads
    device = ray.train.torch.get_device() if gpu else torch.device("cpu")

    model = UniGeoCLIP.from_config(cfg)
    module = TrainModule(model, ContrastiveLoss(cfg.loss, cfg.model.modalities, rank=rank, world_size=world))
    optimizer, scheduler = optimizer_and_schedule(module, tc)
    if not gpu:
        skip_inference_comm_op()
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(tc, gpu=gpu)
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(directory)
        _say(rank, f"resumed from checkpoint at step {engine.global_steps}")

    train_shard = ray.train.get_dataset_shard("train")
    val_data: list[dict[str, np.ndarray]] = ray.get(config["val"])
    meter = _Meter()
    last_val: dict[str, float] = {}
    start_step, started = engine.global_steps, time.perf_counter()
    if tc.val_every > 0 and start_step == 0:  # the untrained baseline, so progress can be read off the log
        last_val = _validate(engine.module.model, val_data, cfg, rank)
        _log_progress(live, lines, run_dir, {"step": 0, "lr": 0.0, "acc1": float("nan"), "samples_per_s": 0.0}
                      | last_val, tc.steps, start_step, started)  # fmt: skip
    while engine.global_steps < tc.steps:
        batches = 0
        batches_iter = train_shard.iter_torch_batches(
            batch_size=tc.micro_batch, drop_last=True, device=device, local_shuffle_buffer_size=4 * tc.micro_batch
        )
        for batch in batches_iter:
            batches += 1
            engine.train()
            out = train_step(engine, batch)
            meter.add(out, tc.micro_batch)
            if not engine.is_gradient_accumulation_boundary():
                continue
            step = engine.global_steps
            val_due = tc.val_every > 0 and step % tc.val_every == 0 and step < tc.steps
            if val_due:
                last_val = _validate(engine.module.model, val_data, cfg, rank)
            if step < tc.steps and (step % tc.log_every == 0 or step % tc.ckpt_every == 0 or val_due):
                metrics = meter.summary(step, float(scheduler.get_last_lr()[0]), world) | last_val
                _log_progress(live, lines, run_dir, metrics, tc.steps, start_step, started)
                if step % tc.ckpt_every == 0:
                    _report_with_checkpoint(engine, metrics, step)
                else:
                    ray.train.report(metrics)
            if step >= tc.steps:
                break
        if batches == 0:
            raise ConfigError(
                f"the train split gave worker {rank} no full batch of {tc.micro_batch}: ingest more data "
                f"or lower train.micro_batch (it needs at least workers x micro_batch training samples)"
            )
    final = _validate(engine.module.model, val_data, cfg, rank)
    metrics = meter.summary(engine.global_steps, float(scheduler.get_last_lr()[0]), world) | final
    _log_progress(live, lines, run_dir, metrics, tc.steps, start_step, started)
    _report_with_checkpoint(engine, metrics, engine.global_steps, export=(cfg, val_data, device))


def _quiet_library_loggers() -> None:
    """Our progress lines say what matters; DeepSpeed's and Ray Train's INFO lines repeat every metric."""
    names = ["DeepSpeed", "ray.train"]
    try:  # Ray Train 2.x names this logger after its file path, so the "ray.train" level does not reach it
        from ray.train.v2._internal.execution import context as train_context

        names.append(train_context.__file__)
    except ImportError:
        pass
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    # DeepSpeed's gathers call a torch API deprecated in 2.13; the warning repeats at every log period.
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor` is deprecated", category=FutureWarning)


def optimizer_and_schedule(
    module: torch.nn.Module, tc: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``module`` (no decay on flat parameters) and its per-step warmup-cosine schedule."""
    optimizer = torch.optim.AdamW(
        _param_groups(module, tc.weight_decay), lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay
    )
    schedule = partial(warmup_cosine, total=tc.steps, warmup=tc.warmup_steps, floor=tc.min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def no_weight_decay_names(module: torch.nn.Module) -> set[str]:
    """Parameters that take no weight decay: every one of fewer than two dimensions (biases, norms, the
    temperatures), and what each submodule declares with timm's ``no_weight_decay()`` (names relative to it)."""
    names = {name for name, p in module.named_parameters() if p.ndim < 2}
    for prefix, sub in module.named_modules():
        declared = getattr(sub, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{n}" if prefix else n for n in declared()}
    return names


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    flat = no_weight_decay_names(module)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if name in flat else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Meter:
    """Running sums since the last report: loss, per-pair loss and accuracy, samples/s."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.samples = 0
        self.since = time.perf_counter()

    def add(self, out: Any, samples: int) -> None:
        self.count += 1
        self.samples += samples
        self.sums["loss"] += float(out.total.detach())
        for k, v in out.pair_losses.items():
            self.sums[f"loss/{k}"] += float(v)
        for k, v in out.pair_accuracy.items():
            self.sums[f"acc1/{k}"] += float(v)

    def summary(self, step: int, lr: float, world: int) -> dict[str, float]:
        """Means over the micro-steps since the last call, averaged over ranks in one collective."""
        keys = sorted(self.sums)
        local = torch.tensor([self.sums[k] / max(self.count, 1) for k in keys] + [self.samples], dtype=torch.float64)
        mean = all_reduce_mean(local)
        elapsed = time.perf_counter() - self.since
        metrics = {k: float(v) for k, v in zip(keys, mean[:-1], strict=True)}
        metrics["acc1"] = float(np.nanmean([v for k, v in metrics.items() if k.startswith("acc1/")] or [np.nan]))
        metrics |= {"step": step, "lr": lr, "samples_per_s": float(mean[-1]) * world / max(elapsed, 1e-9)}
        metrics["samples_per_s_per_worker"] = metrics["samples_per_s"] / world
        self.reset()
        return metrics


def _validate(model: UniGeoCLIP, val_data: list[dict[str, np.ndarray]], cfg: Config, rank: int) -> dict[str, float]:
    """Recall@1 of every directed pair on the held-out split (gallery = all its samples), as metrics.

    Every rank runs the same forward passes (under ZeRO-3 a forward is collective), so
    every rank reports the same figures.
    """
    results = held_out_recall(model, val_data)
    if not results:
        return {}
    seen = sum(batch_rows(b) for b in val_data)
    _say(rank, f"validation on {cfg.train.val_split} ({seen} samples):\n{format_matrix(results)}")
    metrics = {f"val_r1/{r.key}": r.recall[1] for r in results}
    metrics["val_r1"] = float(np.mean(list(metrics.values())))
    metrics["val_gallery"] = float(seen)
    return metrics


def held_out_recall(model: UniGeoCLIP, val_data: list[dict[str, np.ndarray]]) -> list[PairRecall]:
    """Recall of every directed pair over ``val_data`` (decoded batches; gallery = all of them), in eval mode."""
    embs, present = model.encode_batches(val_data)
    return recall_matrix(embs, present) if embs else []


def _report_with_checkpoint(engine: Any, metrics: dict[str, float], step: int, export: tuple | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="unigeoclip-ckpt-") as directory:
        engine.save_checkpoint(directory, tag=f"step{step}")
        if export is not None:
            _export(engine, Path(directory), *export)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _export(
    engine: Any, directory: Path, cfg: Config, val_data: list[dict[str, np.ndarray]], device: torch.device
) -> None:
    """Rank 0 writes the consolidated model directory and a probe: the trained model's embeddings of a batch.

    The probe lets anyone check that the exported directory reproduces the trained model
    exactly. Under ZeRO-3 the weights are gathered first and the probe is computed by
    the consolidated copy (a lone rank cannot run a sharded forward).
    """
    import deepspeed

    model: UniGeoCLIP = engine.module.model
    sharded = cfg.train.zero_stage == 3
    with deepspeed.zero.GatheredParameters(list(model.parameters()), enabled=sharded):
        if ray.train.get_context().get_world_rank() != 0:
            return
        exported = UniGeoCLIP(cfg, hf_configs=model.hf_tower_configs(), tokenizer=model.tokenizer)
        # copy_ casts to each target's dtype: bf16 weights become fp32, float64 Fourier buffers stay float64
        exported.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    exported.save_pretrained(directory / EXPORT_DIR)
    batch = {k: v[:16] for k, v in batch_tensors(val_data[0], torch.device("cpu")).items()}
    reference = exported if sharded else model
    was_training = reference.training
    reference.eval()
    with torch.no_grad():
        probe = {
            f"emb/{m.value}": z.float().cpu().contiguous()
            for m, z in reference({k: v.to(device) for k, v in batch.items()}).items()
        }
    reference.train(was_training)
    save_file({**probe, **{f"in/{k}": v.contiguous() for k, v in batch.items()}}, str(directory / PROBE_FILE))


def _record_worker(run_dir: Path, rank: int) -> None:
    """``RUN_DIR/workers/rank-N.json``: which process is which rank (for operators, and the fault tests)."""
    folder = run_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    node = ray.get_runtime_context().get_node_id()  # hosts can share a name (containers, one-machine clusters)
    info = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "node_id": node, "started": time.time()}
    (folder / f"rank-{rank}.json").write_text(json.dumps(info))


def _say(rank: int, text: str) -> None:
    if rank == 0:
        _emit(text)


def _emit(text: str) -> None:
    """One console line per message: Ray Train patches ``print`` to tee stdout into its logger, which
    echoes to the console too; writing to the process's own stdout file is forwarded once."""
    print(text, file=sys.__stdout__, flush=True)


def progress_line(metrics: dict[str, float], total: int, eta_s: float | None) -> str:
    """``"train: step 50/350 | loss 4.0416 | acc@1 0.015 | val r@1 0.014 | 141.5 samples/s | lr 1.10e-03 |
    eta 5 m 36 s"``: the loss and accuracy once a step ran, the held-out recall once a validation ran."""
    fields = [f"train: step {int(metrics['step'])}/{total}"]
    loss, acc1 = metrics.get("loss", float("nan")), metrics.get("acc1", float("nan"))
    if math.isfinite(loss):
        fields.append(f"loss {loss:.4f}")
    if math.isfinite(acc1):
        fields.append(f"acc@1 {acc1:.3f}")
    if "val_r1" in metrics:
        fields.append(f"val r@1 {metrics['val_r1']:.3f}")
    if metrics.get("samples_per_s", 0.0) > 0:
        fields.append(f"{metrics['samples_per_s']:.1f} samples/s | lr {metrics['lr']:.2e}")
    fields.append(f"eta {clock(eta_s)}" if eta_s is not None else "eta -")
    return " | ".join(fields)


def _log_progress(
    live: LiveGauges | None,
    lines: Any,
    run_dir: Path,
    metrics: dict[str, float],
    total: int,
    start_step: int,
    started: float,
) -> None:
    """Rank 0 (the one holding ``live``): a progress line for the driver (on ``lines``, its queue; on this worker's
    stdout where there is no queue or it is gone), a line of ``metrics.jsonl``, the live gauges."""
    if live is None:
        return
    live.set({LIVE_FIGURES[k]: v for k, v in metrics.items() if k in LIVE_FIGURES})
    step = int(metrics["step"])
    done = step - start_step
    line = progress_line(metrics, total, (time.perf_counter() - started) / done * (total - step) if done > 0 else None)
    handed = False
    if lines is not None:
        with contextlib.suppress(ray.exceptions.RayActorError):  # the driver's queue is gone: stdout has the line
            lines.put_nowait(line)
            handed = True
    if not handed:  # once only: the driver files what it relays, and Ray forwards this stdout to the same log
        _emit(line)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"time": time.time(), **metrics}) + "\n")
