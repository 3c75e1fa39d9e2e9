"""Ray Serve's own per-request floor on this machine: HTTP to an ingress that calls 0, 1 or 2 deployments.

No model, no store: each route echoes a 128-float JSON body, directly (``h0``), through one
downstream deployment (``h1``) or through two in sequence (``h2``, the three-deployment
service's shape), on one kept-alive connection of :mod:`loopback_http`'s lean client. What
``bench_serve.py`` measures above these is the service's own work.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/serve_floor.py [--requests 200] [--ingress haproxy|proxy]
"""

# No `from __future__ import annotations`: FastAPI under Serve's ingress must see real body types (as in gateway.py).
import argparse
import asyncio
import time
from typing import Any

import ray
from bench_serve import start_ray, stats  # this script's directory is on sys.path
from fastapi import FastAPI
from loopback_http import LoopbackClient
from ray import serve
from unigeoclip.cluster.ingress import free_port
from unigeoclip.serve import Scaling

api = FastAPI()
LIGHT = Scaling(num_replicas=1, num_cpus=0).deployment_options()  # 2 cores: no replica may wait for a CPU


@serve.deployment(**LIGHT)
class Echo:
    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        return body


@serve.deployment(**LIGHT)
@serve.ingress(api)
class Ingress:
    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    @api.post("/h0")
    async def h0(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    @api.post("/h1")
    async def h1(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self.first.remote(body)
        return out

    @api.post("/h2")
    async def h2(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self.second.remote(await self.first.remote(body))
        return out


async def time_route(url: str, route: str, requests: int) -> dict[str, float]:
    """``bench_serve.stats`` (p50 / p99 ms) of ``requests`` posts of a 128-float body after 30 untimed ones.

    One connection, one request at a time: the wall time is the sum of the latencies.
    """
    body = {"vector": [0.1] * 128}
    latencies: list[float] = []
    async with LoopbackClient(url) as client:
        for i in range(30 + requests):
            start = time.perf_counter()
            status, answer = await client.post(route, body)
            if i >= 30:
                latencies.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"{route} answered {status}: {answer[:200]!r}")
    return stats(latencies, sum(latencies))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="timed requests per route (after 30 warm-up)")
    ap.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy", help="Serve's ingress [haproxy]")
    args = ap.parse_args()
    start_ray(args.ingress)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Ingress.bind(Echo.bind(), Echo.options(name="Echo2").bind()), name="floor", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    for route, hops in (("h0", 0), ("h1", 1), ("h2", 2)):
        timed = asyncio.run(time_route(url, f"/{route}", args.requests))
        print(f"HTTP ({args.ingress}) -> ingress + {hops} downstream call(s): "
              f"p50 {timed['p50']:.2f} ms, p99 {timed['p99']:.2f} ms")  # fmt: skip
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
