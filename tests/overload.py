"""Overload on loopback: the service's capacity (closed loop), then an open loop at a multiple of it.

An open loop sends at a fixed rate whatever the answers (as users do), for a bounded time; a closed
loop waits for each answer (as a benchmark client does), so it can never overload anything. Used by
``tests/serve/test_serve.py`` (what an overloaded service answers) and
``benchmarks/bench_overload.py`` (the status mix, the accepted requests' p99, the gateway's memory).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np


@dataclass(frozen=True)
class Answer:
    sent: float  # seconds after the loop started
    seconds: float
    status: int  # 0: no HTTP answer (connection refused, reset, or the client's timeout)
    retry_after: str | None
    json: bool


async def _send(client: httpx.AsyncClient, path: str, body: dict[str, Any], t0: float) -> Answer:
    start = time.perf_counter()
    try:
        r = await client.post(path, json=body)
    except httpx.TransportError:
        return Answer(start - t0, time.perf_counter() - start, 0, None, False)
    kind = r.headers.get("content-type", "")
    return Answer(start - t0, time.perf_counter() - start, r.status_code, r.headers.get("retry-after"),
                  kind.startswith("application/json"))  # fmt: skip


def _client(url: str, headers: dict[str, str], timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s,
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))  # fmt: skip


def capacity(url: str, path: str, body: dict[str, Any], *, headers: dict[str, str], clients: int,
             seconds: float, warmup_s: float = 2.0) -> float:  # fmt: skip
    """Requests per second answered 200 by ``clients`` closed-loop clients over ``seconds``, after ``warmup_s``
    of the same load (first batches, lazy initialisation) that is not counted."""

    async def run() -> float:
        async with _client(url, headers, 60) as client:
            t0 = time.perf_counter()
            counted = t0 + warmup_s
            done = 0

            async def loop() -> None:
                nonlocal done
                while (now := time.perf_counter()) - counted < seconds:
                    ok = (await _send(client, path, body, t0)).status == 200
                    done += ok and now >= counted

            await asyncio.gather(*(loop() for _ in range(clients)))
            return done / (time.perf_counter() - counted)

    return asyncio.run(run())


def open_loop(url: str, path: str, body: dict[str, Any], *, headers: dict[str, str], rate: float, seconds: float,
              timeout_s: float = 60) -> list[Answer]:  # fmt: skip
    """``rate`` requests a second for ``seconds``, each sent on time whether or not earlier ones were answered."""

    async def run() -> list[Answer]:
        async with _client(url, headers, timeout_s) as client:
            t0 = time.perf_counter()
            tasks = []
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(_send(client, path, body, t0)))
            return list(await asyncio.gather(*tasks))

    return asyncio.run(run())


def summary(answers: list[Answer]) -> dict[str, Any]:
    """The status mix, the accepted requests' p50 / p99, the refused ones' p99, and how many refusals said when."""
    ok = np.array([a.seconds for a in answers if a.status == 200]) * 1e3
    shed = [a for a in answers if a.status == 503]
    return {
        "statuses": dict(sorted(Counter(a.status for a in answers).items())),
        "accepted_p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
        "accepted_p99_ms": float(np.percentile(ok, 99)) if len(ok) else None,
        "refused_p99_ms": float(np.percentile([a.seconds * 1e3 for a in shed], 99)) if shed else None,
        "refused_with_retry_after": sum(a.retry_after is not None for a in shed),
    }
