"""The driver side of training: a Ray Train ``TorchTrainer`` over the sample store, and the run directory.

``RUN_DIR`` layout::

    unigeoclip.yaml    the full config of the run (the resume reference; the name a model directory uses)
    ray/train/         Ray Train storage: checkpoints (DeepSpeed shards of every rank), run state
    metrics.jsonl      one line per report (rank 0)
    unigeoclip_train.prom  the run's last figures for Prometheus (unless pushed to a Pushgateway)
    workers/           rank-N.json: pid and host of each worker
    model/             the exported model (UniGeoCLIP.from_pretrained) once the run completes
    probe.safetensors  a batch and the trained model's embeddings of it (export self-check)
    feature_cache.json locked towers: contents wanted, cached and computed, the cache's size and place
    logs/              unigeoclip-train.log: what Ray, Ray Train and DeepSpeed printed (``unigeoclip train``)

Resuming relaunches the same Ray Train run (same name and storage): the workers pick
the latest checkpoint up with ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import atomic
from ..cluster.runtime import wait_for_resources
from ..config import Config, load_config
from ..errors import CheckpointError, ConfigError, UniGeoCLIPError
from ..models.unigeoclip import CONFIG_FILE
from ..obs.metrics import push_run_metrics
from ..obs.progress import beside, say, warn
from ..reader.pipeline import build_dataset, load_batches
from ..samples.store import SampleStore
from .frozen import ensure_features
from .loop import EXPORT_DIR, PROBE_FILE, train_loop_per_worker

RUN_NAME = "train"
RUN_CONFIG = CONFIG_FILE  # one name for a saved config, in a run directory as in a model directory
LEGACY_RUN_CONFIG = "config.yaml"  # what run directories started before the rename hold


def run_config(run_dir: Path) -> Path:
    """The run's saved config: ``unigeoclip.yaml``, or ``config.yaml`` in a run started before the rename."""
    legacy = run_dir / LEGACY_RUN_CONFIG
    return legacy if legacy.is_file() and not (run_dir / RUN_CONFIG).is_file() else run_dir / RUN_CONFIG


RUN_FIGURES = ("step", "loss", "acc1", "samples_per_s", "val_r1")  # of the last report, pushed at the end


@dataclass
class TrainResult:
    """A finished run: its directory, the exported model, its last metrics and checkpoint."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    checkpoint: str

    def summary(self, val_split: str) -> str:
        """``"model: DIR (final mean recall@1 on test_year: 0.032)"``, the recall when a validation ran."""
        val = self.metrics.get("val_r1")
        recall = f" (final mean recall@1 on {val_split}: {val:.3f})" if val is not None else ""
        return f"model: {self.model_dir}{recall}"


def has_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that ``resume=True`` can continue (its config and its Ray Train state)."""
    run_dir = Path(run_dir)
    return run_config(run_dir).is_file() and (run_dir / "ray" / RUN_NAME).exists()


def prepare_run(cfg: Config, run_dir: Path, *, resume: bool) -> Config:
    """Validate the run directory against ``resume`` and return the config the run uses.

    A fresh run refuses a directory that already holds one (resuming is explicit). A
    resumed run keeps its saved config; only ``train.steps`` may be raised.
    """
    saved = run_config(run_dir)
    if resume:
        if not has_run(run_dir):
            raise ConfigError(f"nothing to resume in {run_dir}: start a run there without --resume first")
        check_run_dir_trust(run_dir)  # before anything in it is read: DeepSpeed unpickles its checkpoints
        previous = load_config(saved)
        # data.sources only tell ingest where samples come from: a run reads the store, so they may differ
        read = {"sources"}
        if (previous.model != cfg.model or previous.loss != cfg.loss
                or previous.data.model_dump(exclude=read) != cfg.data.model_dump(exclude=read)):  # fmt: skip
            raise ConfigError(
                f"{run_dir} was trained with another model, loss or data config; resume with the same config "
                f"(only train.steps and the ingest-only data.sources may change) or start a new --out"
            )
        cfg = previous.updated({"train": {"steps": cfg.train.steps}})
    elif (run_dir / "ray" / RUN_NAME).exists() or (run_dir / EXPORT_DIR).exists():
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(saved)
    return cfg


def check_run_dir_trust(run_dir: Path) -> None:
    """Refuse to resume from a run directory someone else could have written: checkpoints are a trust boundary.

    Resuming unpickles DeepSpeed's checkpoint files (``torch.load`` of optimizer and model states), so
    whoever can write the run directory can run code in the training job. Every file and folder under
    it must belong to this process's user and not be world-writable.
    """
    me = os.geteuid()
    for path in [run_dir, *run_dir.rglob("*")]:
        st = path.lstat()
        if st.st_mode & stat.S_IWOTH and not stat.S_ISLNK(st.st_mode):
            raise CheckpointError(
                f"{path} is writable by every user, and resuming unpickles the checkpoints under {run_dir}: "
                f"make the run directory writable by the training job only (chmod -R o-w {run_dir})"
            )
        if st.st_uid != me:
            raise CheckpointError(
                f"{path} belongs to user {st.st_uid}, not to this job's user {me}, and resuming unpickles the "
                f"checkpoints under {run_dir}: resume as the user that wrote the run, or chown -R it after checking it"
            )


def resource_plan(tc: Any, gpu: bool) -> list[dict[str, float]]:
    """The bundles a run holds at once: one per training worker, then one per decoder (reader actor)."""
    worker = {"CPU": tc.cpus_per_worker} | ({"GPU": 1.0} if gpu else {}) | dict(tc.worker_resources)
    return [worker] * tc.workers + [{"CPU": tc.cpus_per_decoder}] * tc.decoder_count


def _wait_for_cluster(tc: Any, gpu: bool) -> None:
    """Ask the cluster for the whole plan and wait for it, so an autoscaling cluster starting at zero
    workers grows instead of the run failing; on a local Ray a plan it cannot hold fails at once."""
    wait_for_resources(
        resource_plan(tc, gpu),
        timeout_s=tc.resource_timeout_s,
        what=f"training ({tc.workers} workers + {tc.decoder_count} decoders)",
        hint="lower train.workers / train.cpus_per_worker / train.cpus_per_decoder, check train.worker_resources "
        "against the cluster's node types, or raise train.resource_timeout_s",
    )


@contextmanager
def relay_lines(lines: Any, *, poll_s: float = 1.0) -> Iterator[None]:
    """While the block runs (``trainer.fit()``), a thread prints what the workers put on the ``lines`` queue
    as progress lines of this process; the rest is taken once the block ends.

    Training runs in Ray Train's worker processes, whose stdout reaches this process only through
    Ray's log forwarding (which the ``unigeoclip`` command sends to its log file): rank 0 hands its
    lines over the queue instead, and here they are lines like any other stage's.
    """
    from ray.exceptions import RayActorError
    from ray.util.queue import Empty

    def relay(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                say(lines.get(timeout=poll_s))
            except Empty:
                continue
            except RayActorError:  # the queue's actor is gone: the lines stay in the log file, training goes on
                warn("training progress lines stopped (their queue's actor died); the log file has them")
                return

    with beside("train-progress", relay, join_s=poll_s + 30):
        yield
    try:  # after a clean end only: a failure keeps its own error
        rest = lines.get_nowait_batch(lines.qsize())
    except RayActorError:
        rest = []
    for line in rest:
        say(line)


def train(
    cfg: Config,
    store: SampleStore | str,
    run_dir: str | Path,
    *,
    gpu: bool = False,
    resume: bool = False,
    train_dataset: Any = None,
) -> TrainResult:
    """Train on the current Ray cluster (see :func:`unigeoclip.cluster.runtime.ensure_ray`); returns where the model is.

    ``train_dataset`` replaces the streamed, augmented train split with any Ray dataset in
    the batch contract (the benchmarks feed pre-decoded tensors to isolate the input
    pipeline's cost); validation still reads ``store``.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    cfg = prepare_run(cfg, run_dir, resume=resume)
    tc = cfg.train
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    train_count = store.count("train")
    if train_count < tc.workers * tc.micro_batch:
        raise ConfigError(
            f"{store.root} has {train_count} training samples, fewer than workers x micro_batch = "
            f"{tc.workers} x {tc.micro_batch}: ingest more data or lower train.micro_batch / train.workers"
        )
    if store.count(tc.val_split) < 2:
        raise ConfigError(f"{store.root} has fewer than 2 samples in the validation split {tc.val_split!r}")
    _wait_for_cluster(tc, gpu)  # after every check of the store: the wait can be long
    features, cache_stats = ensure_features(cfg, store)  # locked towers: their features once, not every step
    if cache_stats:
        (run_dir / "feature_cache.json").write_text(json.dumps([asdict(c) | {"hit_rate": c.hit_rate}
                                                                 for c in cache_stats], indent=1))  # fmt: skip
    # Inside training, the progress lines of the loop say how far it is; Ray Data's bars, redrawn from every
    # worker, would only bury them.
    ray.data.DataContext.get_current().enable_progress_bars = False
    # The held-out split is small and fixed: decode it once, before training reserves the CPUs, and keep it in
    # the object store from this driver, on the head. Held by a task on a worker node instead, it was lost
    # with that node, and rebuilding it while the restarted workers held the CPUs stalled the run.
    val_ref = ray.put(load_batches(cfg, store, tc.val_split, max_samples=tc.val_max_samples, features=features))
    if train_dataset is None:  # every epoch of the run in one stream: a pipeline restart per epoch costs seconds
        epochs = math.ceil(tc.steps * tc.grad_accum * tc.micro_batch * tc.workers / train_count)
        train_dataset = build_dataset(
            cfg,
            store,
            "train",
            decoders=tc.decoder_count,
            cpus_per_decoder=tc.cpus_per_decoder,
            seed=tc.seed,
            epochs=epochs,
            cache_mb=tc.decode_cache_mb,
            features=features,
        )
    datasets: dict[str, Any] = {"train": train_dataset}
    resources = resource_plan(tc, gpu)[0]
    # rank 0's progress lines, printed here (see relay_lines); on this driver's node, so that losing a worker
    # node (which Ray Train survives) never takes the queue with it
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    lines = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "run_dir": str(run_dir),
            "gpu": gpu,
            "val": val_ref,
            "progress": lines,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=tc.workers, use_gpu=gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=RUN_NAME,
            storage_path=str(run_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=tc.keep_checkpoints),
        ),
        datasets=datasets,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
    )
    try:
        with relay_lines(lines):
            result = trainer.fit()
    finally:
        lines.shutdown()
    if result.checkpoint is None:
        raise UniGeoCLIPError(f"training finished without a checkpoint; see {run_dir / 'ray'}")
    model_dir = run_dir / EXPORT_DIR
    with result.checkpoint.as_directory() as directory:
        # Never rewritten in place (a resumed run exports again): written whole beside it, then swapped in at once.
        staged = atomic.staging_dir(model_dir)
        shutil.copytree(Path(directory) / EXPORT_DIR, staged)
        atomic.replace_dir(staged, model_dir)
        shutil.copy2(Path(directory) / PROBE_FILE, run_dir / PROBE_FILE)
    metrics = dict(result.metrics or {})
    figures = {k: float(metrics[k]) for k in RUN_FIGURES if isinstance(metrics.get(k), int | float)}
    push_run_metrics("train", figures | {"seconds": time.perf_counter() - started}, labels={"run": str(run_dir)},
                     default_textfile=run_dir / "unigeoclip_train.prom")  # fmt: skip
    return TrainResult(run_dir, model_dir, metrics, result.checkpoint.path)
