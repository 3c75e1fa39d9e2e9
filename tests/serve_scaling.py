"""Serve autoscaling, observed: a bounded loopback load, then quiet, with replica counts and latencies over time.

Used by ``tests/cluster/test_multinode.py`` (the replicas scale up and back down) and by
``benchmarks/bench_serve_autoscale.py`` (the timeline, plotted). Runs in a process that is a driver
of the cluster Serve runs on (replica counts come from ``serve.status()``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
from ray import serve
from unigeoclip.serve.app import APP_NAME

DEPLOYMENTS = ("Gateway", "QueryEncoder", "Retriever")


@dataclass
class Timeline:
    """Every ``poll_s``: the time, the replicas of each deployment, and the requests that ended since.

    ``replicas`` counts the running ones; ``wanted`` every one not stopping (running, starting, recovering),
    which moves as soon as the autoscaler decides: on 2 busy cores a new replica can take 30 s to start.
    """

    load_s: float
    t: list[float] = field(default_factory=list)
    replicas: dict[str, list[int]] = field(default_factory=lambda: {d: [] for d in DEPLOYMENTS})
    wanted: dict[str, list[int]] = field(default_factory=lambda: {d: [] for d in DEPLOYMENTS})
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    requests: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, seconds, status)

    def first_time(self, deployment: str, predicate: object) -> float | None:
        """The first sample time at which ``predicate(replicas)`` held, or None."""
        for t, n in zip(self.t, self.replicas[deployment], strict=True):
            if predicate(n):  # type: ignore[operator]
                return t
        return None


def replica_counts() -> tuple[dict[str, int], dict[str, int]]:
    """(running, not stopping) replicas of each deployment."""
    app = serve.status().applications[APP_NAME]
    states = {d: app.deployments[d].replica_states for d in DEPLOYMENTS}
    running = {d: int(s.get("RUNNING", 0)) for d, s in states.items()}
    wanted = {d: sum(int(n) for state, n in s.items() if state != "STOPPING") for d, s in states.items()}
    return running, wanted


def observe(url: str, *, clients: int, load_s: float, quiet_s: float, until_min: dict[str, int] | None = None,
            poll_s: float = 0.5, body: dict | None = None) -> Timeline:  # fmt: skip
    """``clients`` sequential loopback clients for ``load_s``, then none for up to ``quiet_s`` (or until every
    deployment is back at ``until_min``)."""
    body = body or {"query": {"text": "a harbour street by the market"}, "k": 5}
    line = Timeline(load_s=load_s)
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    status = http.post("/v1/search", json=body).status_code
                except httpx.TransportError:
                    status = 0
                with lock:
                    line.requests.append((sent, time.perf_counter() - sent, status))

    start = time.perf_counter()
    pool = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in pool:
        th.start()
    seen = 0
    while True:
        now = time.perf_counter() - start
        if now >= load_s and not stop.is_set():
            stop.set()
        counts, wanted = replica_counts()
        with lock:
            recent = [d for s, d, _ in line.requests[seen:]]
            seen = len(line.requests)
        line.t.append(now)
        for d in DEPLOYMENTS:
            line.replicas[d].append(counts[d])
            line.wanted[d].append(wanted[d])
        line.p50_ms.append(float(np.percentile(recent, 50) * 1e3) if recent else float("nan"))
        line.p99_ms.append(float(np.percentile(recent, 99) * 1e3) if recent else float("nan"))
        back = until_min is not None and all(wanted[d] <= n for d, n in until_min.items())
        if now >= load_s + quiet_s or (now >= load_s and back):
            break
        time.sleep(poll_s)
    for th in pool:
        th.join(timeout=30)
    line.requests = [(s - start, d, st) for s, d, st in line.requests]
    return line
