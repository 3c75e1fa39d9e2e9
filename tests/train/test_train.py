"""Distributed training end to end: 2 CPU workers (gloo), real DeepSpeed, the tiny store, real process kills."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
from safetensors.torch import load_file
from unigeoclip import Config, Modality, UniGeoCLIP
from unigeoclip.errors import CheckpointError, ConfigError
from unigeoclip.ingest.pipeline import IngestSummary
from unigeoclip.obs.progress import PROGRESS_LOGGER
from unigeoclip.samples.store import SampleStore
from unigeoclip.train.checkpoint import kept_steps, load_checkpoint
from unigeoclip.train.trainer import train

from ..helpers import tiny_train_cfg

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


PROGRESS = re.compile(
    r"train: step (\d+)/(\d+) \| loss [\d.]+ \| acc@1 [\d.]+ \| (val r@1 [\d.]+ \| )?[\d.]+ samples/s \| lr \S+ \| "
    r"eta \d+ m \d\d s"
)


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stage_trains_two_workers_loss_falls_recall_rises_and_export_reproduces(
    stage: int,
    tiny_store: tuple[SampleStore, IngestSummary],
    tiny_world_cfg: Config,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, _ = tiny_store
    caplog.set_level(logging.INFO, logger=PROGRESS_LOGGER)
    # two checkpoints, not ten: checkpointing is the resume and killed-worker tests' subject; each costs a
    # DeepSpeed save of every rank's optimizer state and Ray Train's copy of it
    cfg = tiny_train_cfg(tiny_world_cfg, zero_stage=stage, steps=100, val_every=25, ckpt_every=50)
    result = train(cfg, store, tmp_path / "run")
    log = metrics(tmp_path / "run")
    # every progress line of rank 0 reached this process (the driver), in order, the last one included
    lines = [r.getMessage() for r in caplog.records if r.name == PROGRESS_LOGGER]
    assert len(lines) == len(log) and lines[0].startswith("train: step 0/100 | val r@1 "), lines
    matched = [PROGRESS.fullmatch(line) for line in lines[1:]]
    assert [int(m[1]) if m else None for m in matched] == [m["step"] for m in log[1:]], lines
    assert all("val r@1" in line for line in lines[1:]), "the last held-out recall rides along on every line"
    losses = [m["loss"] for m in log if "loss" in m]
    recalls = [m["val_r1"] for m in log if "val_r1" in m]
    assert log[0]["step"] == 0 and log[-1]["step"] == 100
    assert losses[-1] < 0.7 * losses[0], losses
    assert recalls[-1] > recalls[0] + 0.1, recalls
    assert result.metrics["step"] == 100 and result.model_dir.is_dir()
    assert all(f"val_r1/{m.value}->{n.value}" in result.metrics for m in Modality for n in Modality if m != n)
    # the exported directory reproduces the trained model's embeddings of the probe batch exactly
    probe = load_file(str(tmp_path / "run" / "probe.safetensors"))
    batch = {k[3:]: v for k, v in probe.items() if k.startswith("in/")}
    with torch.no_grad():
        out = UniGeoCLIP.from_pretrained(result.model_dir)(batch)
    assert set(out) == set(Modality)
    for m, z in out.items():
        assert torch.equal(z, probe[f"emb/{m.value}"]), m


def test_a_killed_worker_leaves_a_run_that_finishes_its_steps(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_train_cfg(tiny_world_cfg, steps=40, val_every=0, max_failures=2)
    killed: dict[str, int] = {}

    def kill_rank_1_after_a_checkpoint() -> None:
        deadline = time.time() + 600
        while time.time() < deadline:
            steps = [m["step"] for m in metrics(run_dir)] if (run_dir / "metrics.jsonl").exists() else []
            if steps and max(steps) >= 15 and (run_dir / "workers" / "rank-1.json").exists():
                pid = json.loads((run_dir / "workers" / "rank-1.json").read_text())["pid"]
                killed["pid"], killed["step"] = pid, max(steps)
                os.kill(pid, signal.SIGKILL)  # a real process death, not an exception
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_rank_1_after_a_checkpoint, daemon=True)
    killer.start()
    result = train(cfg, tiny_store[0], run_dir)  # fit() must stay on the main thread (it installs signal handlers)
    killer.join(timeout=5)
    assert killed, "the worker was never killed: the test did not exercise a failure"
    restarted = json.loads((run_dir / "workers" / "rank-1.json").read_text())["pid"]
    assert restarted != killed["pid"]
    assert result.metrics["step"] == 40
    steps = [m["step"] for m in metrics(run_dir)]
    assert steps[-1] == 40 and max(steps) == 40
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_resume_after_a_stopped_run_continues_at_the_right_step(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config, tmp_path: Path
) -> None:
    """Stop a run by killing its driver process after a checkpoint, then `--resume` it from this process."""
    run_dir = tmp_path / "run"
    cfg = tiny_train_cfg(tiny_world_cfg, steps=200, val_every=0, ckpt_every=10)
    config_file = tmp_path / "cfg.yaml"
    cfg.save(config_file)
    env = os.environ | {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = ["jobs/train.py", "--config", str(config_file), "--store", tiny_store[0].root, "--out", str(run_dir)]
    console = (tmp_path / "console.txt").open("w")  # what the `unigeoclip train` command printed
    driver = subprocess.Popen(
        [sys.executable, *command], env=env, cwd=Path(__file__).resolve().parents[2],
        stdout=console, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None:
            ckpts = (
                list((run_dir / "ray" / "train").glob("checkpoint_*")) if (run_dir / "ray" / "train").exists() else []
            )
            if len(ckpts) >= 2:
                break
            time.sleep(0.5)
        assert driver.poll() is None, "the run ended before it could be stopped"
    finally:
        driver.kill()
        driver.wait()
        console.close()
    # the command's console: where its log is, then its own progress lines; Ray Train's and DeepSpeed's output
    # (the workers' stdout, forwarded by Ray) is in the log file
    printed = (tmp_path / "console.txt").read_text().splitlines()
    assert printed[0].startswith(f"log: {run_dir / 'logs' / 'unigeoclip-train.log'} "), printed
    steps = [int(m[1]) for line in printed[1:] if (m := PROGRESS.fullmatch(line))]
    assert steps and steps == sorted(steps) and not [line for line in printed if "pid=" in line], printed
    filed = (run_dir / "logs" / "unigeoclip-train.log").read_text()
    assert "(RayTrainWorker pid=" in filed and "(TrainController pid=" in filed
    # each progress line is filed once, as the command printed it, not again from rank 0's forwarded stdout
    step_lines = [line for line in filed.splitlines() if "train: step " in line]
    assert step_lines and len(step_lines) == len(set(step_lines)), step_lines
    assert not [line for line in step_lines if "pid=" in line], step_lines
    stopped_at = max(m["step"] for m in metrics(run_dir))
    assert stopped_at < 200
    tags = [
        (d / "latest").read_text().strip()
        for d in (run_dir / "ray" / "train").glob("checkpoint_*")
        if (d / "latest").exists()
    ]
    checkpoint_step = max(int(t.removeprefix("step")) for t in tags)

    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tiny_store[0], run_dir)  # a second fresh run must not silently continue
    lines_before = len(metrics(run_dir))
    target = stopped_at + 25
    result = train(
        tiny_train_cfg(tiny_world_cfg, steps=target, val_every=0, ckpt_every=10), tiny_store[0], run_dir, resume=True
    )
    resumed = [m["step"] for m in metrics(run_dir)[lines_before:]]
    assert resumed[0] == checkpoint_step + 5  # the next log step after the checkpoint: not 5, not stopped_at + 5
    assert resumed == sorted(resumed) and resumed[-1] == target == result.metrics["step"]

    # every kept checkpoint loads through DeepSpeed's consolidation: the last one is the exported model (fp32
    # on CPU, so exactly), an earlier one is not; a step it did not keep is refused with the ones it has
    kept = kept_steps(run_dir)
    assert max(kept) == target and 1 < len(kept) <= cfg.train.keep_checkpoints, kept
    exported = UniGeoCLIP.from_pretrained(result.model_dir).state_dict()
    last, first = load_checkpoint(run_dir).state_dict(), load_checkpoint(run_dir, min(kept)).state_dict()
    assert last.keys() == exported.keys()
    assert all(torch.equal(last[k], exported[k]) for k in exported)
    assert not all(torch.equal(first[k], exported[k]) for k in exported)
    with pytest.raises(CheckpointError, match=re.escape(f"kept no checkpoint of step 3; it has steps {sorted(kept)}")):
        load_checkpoint(run_dir, 3)
