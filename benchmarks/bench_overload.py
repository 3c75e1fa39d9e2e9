"""Overload: the service's capacity, then an open loop at ``--factor`` times it; what it answered, and its memory.

The tiny store and model on a local Ray, the three deployments with one replica each and the shipped
queue bounds (``Scaling`` defaults, or ``--queue``). A closed loop of ``--clients`` measures the
capacity (200s a second) of text searches; then requests are sent at ``--factor`` x that rate for
``--seconds`` whatever the answers. Prints the status mix, the accepted requests' p50 / p99, the
refusals' p99 and how many said ``Retry-After``, and the peak RSS of every replica (sampled each 0.5 s).

    .venv/bin/python benchmarks/bench_overload.py [--factor 3] [--seconds 20] [--queue 32]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients measuring the capacity")
    parser.add_argument("--queue", type=int, default=None, help="max_queued_requests of every deployment")
    args = parser.parse_args()

    from ray import serve
    from unigeoclip.cluster.ingress import free_port
    from unigeoclip.cluster.runtime import shutdown
    from unigeoclip.serve import Scaling, ServeConfig, start_service
    from worlds import replica_rss_mib, tiny_db  # this script's directory is on sys.path

    from tests.overload import capacity, open_loop, summary

    queue = {} if args.queue is None else {"max_queued_requests": args.queue}
    one = Scaling(num_replicas=1, num_cpus=0.25, **queue)
    db = tiny_db("bench-overload-")
    url = start_service(ServeConfig(db=db, gateway=one, encoder=one, retriever=one), port=free_port(),
                        log_level="WARNING")  # fmt: skip
    body = {"query": {"text": "a harbour street by the market"}, "k": 5}
    peaks: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, mib in replica_rss_mib().items():
                peaks[name] = max(peaks.get(name, 0.0), mib)
            time.sleep(0.5)

    try:
        rate = capacity(url, "/v1/search", body, headers={}, clients=args.clients, seconds=5)
        idle = replica_rss_mib()
        sampler = threading.Thread(target=sample)
        sampler.start()
        answers = open_loop(url, "/v1/search", body, headers={}, rate=args.factor * rate, seconds=args.seconds)
        stop.set()
        sampler.join()
    finally:
        serve.shutdown()
        shutdown()
    mix = summary(answers)
    print(f"capacity: {rate:.1f} searches/s ({args.clients} closed-loop clients, 5 s); queues: max_ongoing_requests "
          f"{one.max_ongoing_requests}, max_queued_requests {one.max_queued_requests}")  # fmt: skip
    print(f"open loop at {args.factor:g}x = {args.factor * rate:.1f}/s for {args.seconds:g} s: {len(answers)} sent, "
          f"answers by status {mix['statuses']}")  # fmt: skip
    print(f"accepted p50 {mix['accepted_p50_ms']:.0f} ms, p99 {mix['accepted_p99_ms']:.0f} ms; refused p99 "
          f"{mix['refused_p99_ms'] or 0:.0f} ms, {mix['refused_with_retry_after']} of "
          f"{mix['statuses'].get(503, 0)} with Retry-After")  # fmt: skip
    print("replica RSS, idle -> peak (MiB): " + ", ".join(f"{n} {idle.get(n, 0):.0f} -> {p:.0f}"
                                                         for n, p in sorted(peaks.items())))  # fmt: skip


if __name__ == "__main__":
    main()
