"""Connect to a Ray cluster, or start a local one: the same code runs on a laptop and on a cluster."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import ray

from ..errors import ConfigError, ResourcesUnavailableError
from ..obs.progress import warn
from . import worker_setup
from .ingress import haproxy_available, stop_own_haproxy, use_fast_serve_ingress

# Whether ensure_ray started the Ray this process uses: then no autoscaler can add nodes to it.
_started_here = False


def ensure_ray(
    address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True, data_progress: bool = True
) -> dict[str, Any]:
    """Attach to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; returns the cluster's resources.

    A no-op when Ray is already initialised (tests share one cluster per session), but for the Ray Data
    settings: ``data_progress=False`` turns Ray Data's own progress bars (and their logged form without
    a terminal) off, for a caller that prints its own progress lines (the ``unigeoclip`` command).
    """
    global _started_here
    # lance warns at every os.fork of a process that imported it; Ray's forks exec at once, so it is noise here.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
        if address:
            kwargs["address"] = address
        else:
            # "local": a Ray of our own, even where another runs on this machine (`unigeoclip serve`, `make
            # cluster-up`): a plain ray.init() would join that one. A cluster is joined only when named.
            # The dashboard serves Ray's state API, which Ray Train polls; it listens on 127.0.0.1 only.
            kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                          dashboard_host="127.0.0.1")  # fmt: skip
            if haproxy_available():  # inherited by the raylet and every worker
                use_fast_serve_ingress()
        if quiet:
            kwargs["logging_level"] = logging.WARNING
        # Every worker sets up as this process does below (the kept heap; the idle-sleeping Ray Data executor,
        # for the SplitCoordinator feeding Ray Train above all).
        kwargs["runtime_env"] = {"worker_process_setup_hook": worker_setup.HOOK}
        ray.init(**kwargs)
        _started_here = address in (None, "local")
    worker_setup.setup()
    ctx = ray.data.DataContext.get_current()
    if quiet or not data_progress:
        ctx.enable_progress_bars = data_progress
    if quiet:
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # ...except its progress: without a terminal (CI, `make demo | tee`, a Ray job's log) Ray Data
        # logs it at INFO every 10 s instead of drawing bars, and a long ingest would print nothing.
        logging.getLogger("ray.data._internal.progress.logging_progress").setLevel(logging.INFO)
    return dict(ray.cluster_resources())


def shutdown() -> None:
    """Leave Ray as this process found it: disconnect, and stop the local Ray it started, HAProxy included."""
    started = _started_here
    if ray.is_initialized():
        ray.shutdown()
    if started:
        stop_own_haproxy()


def can_grow() -> bool:
    """Whether the cluster may gain nodes: false only for the local Ray that :func:`ensure_ray` started here."""
    return not _started_here


def describe_bundles(bundles: list[dict[str, float]]) -> str:
    """``[{CPU: 1}, {CPU: 1}, {CPU: 0.5}]`` -> ``"2 x {CPU: 1} + 1 x {CPU: 0.5}"``."""
    counts: dict[str, int] = {}
    for b in bundles:
        key = "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(b.items())) + "}"
        counts[key] = counts.get(key, 0) + 1
    return " + ".join(f"{n} x {key}" for key, n in counts.items())


def missing_resources(bundles: list[dict[str, float]], have: dict[str, float]) -> dict[str, float]:
    """What ``have`` (a cluster's totals) lacks to hold every bundle at once; empty when nothing is missing."""
    want: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            want[k] = want.get(k, 0.0) + v
    return {k: v - have.get(k, 0.0) for k, v in want.items() if v > have.get(k, 0.0) + 1e-9}


def wait_for_resources(
    bundles: list[dict[str, float]],
    *,
    timeout_s: float,
    what: str,
    hint: str,
    progress_every_s: float = 30.0,
) -> float:
    """Wait until the cluster can hold every bundle at once; returns the seconds waited.

    The wait is a placement group of the bundles, which the Ray autoscaler sees as demand and meets by
    adding nodes; it is released at once, so the work that follows takes the resources. On a cluster
    that cannot grow (the local Ray started here) a plan larger than the cluster fails at once. Raises
    :class:`ResourcesUnavailableError` naming what is missing after ``timeout_s``.
    """
    from ray.util.placement_group import placement_group, remove_placement_group

    if not can_grow():
        have = dict(ray.cluster_resources())
        missing = missing_resources(bundles, have)
        if missing:
            raise ResourcesUnavailableError(
                f"{what} needs {describe_bundles(bundles)} but this local Ray has {_fmt(have, missing)}: {hint}"
            )
    start = time.monotonic()
    deadline = start + timeout_s
    pg = placement_group(bundles, strategy="PACK")
    try:
        # Ray waits in whole seconds: at least 1 s per call, so the loop never spins near the deadline.
        while not pg.wait(timeout_seconds=max(1, math.ceil(min(progress_every_s, deadline - time.monotonic())))):
            waited = time.monotonic() - start
            if time.monotonic() >= deadline:
                have = dict(ray.cluster_resources())
                raise ResourcesUnavailableError(
                    f"{what} waited {waited:.0f} s for {describe_bundles(bundles)}; the cluster has "
                    f"{_fmt(have, missing_resources(bundles, have))}: {hint}; `ray status` shows the autoscaler's view"
                )
            warn(f"{what}: waiting for {describe_bundles(bundles)} ({waited:.0f} s so far; `ray status` shows why)")
    finally:
        remove_placement_group(pg)
    return time.monotonic() - start


def _fmt(have: dict[str, float], missing: dict[str, float]) -> str:
    """``"0 CPU (2.5 CPU missing)"``, or the held CPUs "(enough in all, but not free)"."""
    held = ", ".join(f"{have.get(k, 0.0):g} {k}" for k in (sorted(missing) or ["CPU"]))
    lacking = ", ".join(f"{v:g} {k}" for k, v in missing.items())
    return held + (f" ({lacking} missing)" if lacking else " (enough in all, but not free)")


def cluster_cpus() -> int:
    """The cluster's total CPUs (not those free now), at least 1."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def actor_pool(
    min_actors: int, max_actors: int | None, work_items: int, *, needs: Mapping[str, float] | None = None
) -> ray.data.ActorPoolStrategy:
    """A Ray Data actor pool for ``work_items`` blocks of work, bounded by ``min_actors`` and ``max_actors``.

    On a cluster that can grow, the pool autoscales: it starts at ``min_actors`` and its demand makes the
    autoscaler add nodes, up to ``max_actors`` (``None``: one per work item). On the local Ray started here
    no node will join, so the pool is fixed at as many actors as the cluster's totals hold, each taking
    ``needs`` (default ``{CPU: 1}``), within the same bounds. Neither
    bound exceeds ``work_items``: an actor with nothing to do only costs its start.
    """
    high = max(1, min(max_actors or work_items, work_items))
    low = max(1, min(min_actors, high))
    if not can_grow():
        have = ray.cluster_resources()
        per_actor = needs or {"CPU": 1.0}
        fits = min((int(have.get(k, 0.0) / v + 1e-9) for k, v in per_actor.items() if v > 0), default=high)
        low = high = max(low, min(high, fits))
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def actor_device() -> str:
    """The torch device for the model of this Ray actor (a Serve replica, an embedding actor).

    ``"cuda"`` when Ray gave the actor a GPU (``num_gpus`` / ``ray_actor_options``; Ray then sets
    ``CUDA_VISIBLE_DEVICES`` so the GPU is device 0), else ``"cpu"``. A GPU that torch cannot use is an
    error rather than a silent fall back to the CPU, which would hold the GPU and run many times slower.
    """
    import torch

    if not ray.is_initialized() or not ray.get_gpu_ids():
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(
            f"Ray gave this actor GPU {ray.get_gpu_ids()} but torch {torch.__version__} cannot use CUDA: "
            "install a CUDA build of torch in the image, or run it without a GPU (num_gpus: 0)"
        )
    return "cuda"
