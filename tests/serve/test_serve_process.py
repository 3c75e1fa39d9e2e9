"""``unigeoclip serve`` as an operator runs it: its sockets, and a SIGTERM that leaves nothing behind.

Measured with ``ss -ltnp`` (iproute2): every socket the service's HAProxy listens on is on loopback (the
stats page and the exporter included, which Ray binds to every interface), its admin socket is private,
and after SIGTERM the command exits, no HAProxy it started is left, and the service port is closed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from unigeoclip.cluster.ingress import free_port, haproxy_dir
from unigeoclip.embed import EmbedOptions, embed
from unigeoclip.ingest.pipeline import IngestSummary
from unigeoclip.samples.store import SampleStore

from ..helpers import train_tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def listeners() -> list[tuple[str, str, int]]:
    """``(local address, process name, pid)`` of every listening TCP socket (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            found.append((fields[3], name, int(pid)))
    return found


def own_haproxy(serve_pid: int) -> list[int]:
    marker = str(haproxy_dir(serve_pid)).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(marker) for a in argv):
                pids.append(int(entry.name))
    return pids


def test_serve_binds_haproxy_to_loopback_and_sigterm_stops_everything_it_started(
    ray_cluster: dict, tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: object, tmp_path: Path
) -> None:
    model = train_tiny(tiny_world_cfg, tmp_path / "model", steps=2, seed=3)  # type: ignore[arg-type]
    embed(model, tiny_store[0], tmp_path / "db", options=EmbedOptions(batch_size=32, actors=1))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    proc = subprocess.Popen([sys.executable, "-m", "unigeoclip.app.cli", "serve", "--db", str(tmp_path / "db"),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the service never became ready"
            time.sleep(1.0)
        haproxies = own_haproxy(proc.pid)
        assert haproxies, "the local Ray serves through HAProxy"
        sockets = [(addr, name) for addr, name, pid in listeners() if pid in haproxies]
        assert len(sockets) >= 3, sockets  # the service, the stats page, the exporter
        assert all(addr.startswith(("127.0.0.1:", "[::1]:")) for addr, _ in sockets), sockets
        (admin,) = [p for p in haproxy_dir(proc.pid).rglob("admin.sock")]
        assert admin.stat().st_mode & 0o077 == 0, oct(admin.stat().st_mode)

        started = time.time()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        print(f"\nSIGTERM -> exit in {time.time() - started:.1f} s")
        assert proc.returncode == 0 and "stopped" in out, out[-3000:]
        assert not own_haproxy(proc.pid), "no HAProxy outlives the command that started it"
        assert all(not addr.endswith(f":{port}") for addr, _, _ in listeners()), "the service port is closed"
        assert not haproxy_dir(proc.pid).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
