"""``GET /healthz`` while clients send the largest images the service accepts; the gateway's peak RSS.

The tiny store and model on a local Ray, the three deployments with one replica each. ``--clients``
threads post 2048 x 2048 JPEGs of noise (at ``max_image_pixels``, under ``max_body_bytes``) to
``/v1/embed`` for ``--seconds``; a prober times ``GET /healthz`` every 50 ms meanwhile, and the gateway
replica's resident memory is sampled. Prints the probe's p50 / p99, the embed answers by status (503s
are the decode pool shedding load), and the peak RSS.

    .venv/bin/python benchmarks/bench_decode_load.py [--clients 16] [--seconds 30]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def big_jpeg(side: int) -> str:
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    import httpx
    from ray import serve
    from unigeoclip.cluster.ingress import free_port
    from unigeoclip.cluster.runtime import shutdown
    from unigeoclip.serve import Limits, Scaling, ServeConfig, start_service
    from worlds import replica_rss_mib, tiny_db  # this script's directory is on sys.path

    db = tiny_db("bench-decode-")
    one = Scaling(num_replicas=1, num_cpus=0.25)
    limits = Limits()
    url = start_service(ServeConfig(db=db, gateway=one, encoder=one, retriever=one),
                        port=free_port(), log_level="WARNING")  # fmt: skip
    side = int(limits.max_image_pixels**0.5)
    body = {"query": {"aerial": {"image_b64": big_jpeg(side)}}}
    assert len(str(body)) < limits.max_body_bytes, "the image must fit the body limit"
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    probes: list[float] = []
    rss: list[float] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                try:
                    statuses[http.post("/v1/embed", json=body).status_code] += 1
                except httpx.TransportError:
                    statuses[0] += 1

    def prober() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/healthz")
                probes.append(time.perf_counter() - started)
                time.sleep(0.05)

    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            while http.get("/readyz").status_code != 200:
                time.sleep(0.5)
        quiet = replica_rss_mib()["Gateway"]
        threads = [threading.Thread(target=client) for _ in range(args.clients)] + [threading.Thread(target=prober)]
        for t in threads:
            t.start()
        end = time.time() + args.seconds
        while time.time() < end:
            rss.append(replica_rss_mib()["Gateway"])
            time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=120)
    finally:
        serve.shutdown()
        shutdown()
    p = np.array(probes) * 1e3
    print(f"{args.clients} clients x {side}x{side} JPEG ({len(body['query']['aerial']['image_b64']) / 2**20:.1f} MiB "
          f"base64) to /v1/embed for {args.seconds:.0f} s; answers by status: {dict(statuses)}")  # fmt: skip
    p50, p99 = np.percentile(p, 50), np.percentile(p, 99)
    print(f"GET /healthz meanwhile: {len(p)} probes, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {p.max():.1f} ms")
    print(f"gateway replica RSS: {quiet:.0f} MiB idle, peak {max(rss):.0f} MiB under load")


if __name__ == "__main__":
    main()
