"""Serve autoscaling over time: replicas, p50 and p99 under a bounded loopback load, then quiet.

The tiny store and a tiny model on a local Ray; gateway and encoder autoscale between 1 and
``--max-replicas`` with the given delays, the retriever is fixed at one replica. Prints the timeline
and plots it (``--plot docs/serve_autoscaling.png``).

    .venv/bin/python benchmarks/bench_serve_autoscale.py [--clients 8] [--load-s 40] [--upscale-delay-s 2]
        [--downscale-delay-s 10] [--target 2] [--plot docs/serve_autoscaling.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--load-s", type=float, default=40.0)
    parser.add_argument("--quiet-s", type=float, default=60.0)
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--target", type=float, default=2.0, help="target_ongoing_requests")
    parser.add_argument("--upscale-delay-s", type=float, default=10.0)
    parser.add_argument("--downscale-delay-s", type=float, default=30.0)
    parser.add_argument("--look-back-s", type=float, default=15.0)
    parser.add_argument("--plot", default=None, help="write the timeline as a PNG here")
    args = parser.parse_args()

    from ray import serve
    from unigeoclip.cluster.ingress import free_port
    from unigeoclip.serve import Scaling, ServeConfig, start_service
    from worlds import tiny_db  # this script's directory is on sys.path

    from tests.serve_scaling import observe

    db = tiny_db("bench-autoscale-")
    auto = Scaling(min_replicas=1, max_replicas=args.max_replicas, target_ongoing_requests=args.target, num_cpus=0.25,
                   upscale_delay_s=args.upscale_delay_s, downscale_delay_s=args.downscale_delay_s,
                   look_back_period_s=args.look_back_s)  # fmt: skip
    url = start_service(ServeConfig(db=db, gateway=auto, encoder=auto,
                                    retriever=Scaling(num_replicas=1, num_cpus=0.25)),
                        port=free_port(), log_level="WARNING")  # fmt: skip
    try:
        line = observe(url, clients=args.clients, load_s=args.load_s, quiet_s=args.quiet_s,
                       until_min={"Gateway": 1, "QueryEncoder": 1})  # fmt: skip
    finally:
        serve.shutdown()
    print(
        f"{args.clients} clients for {args.load_s:g} s, target {args.target:g} ongoing, upscale delay "
        f"{args.upscale_delay_s:g} s, downscale delay {args.downscale_delay_s:g} s, look-back {args.look_back_s:g} s"
    )
    print(f"  {'t (s)':>6} {'gateway':>8} {'encoder':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for i in range(0, len(line.t), 4):
        print(f"  {line.t[i]:6.1f} {line.replicas['Gateway'][i]:8d} {line.replicas['QueryEncoder'][i]:8d} "
              f"{line.p50_ms[i]:8.1f} {line.p99_ms[i]:8.1f}")  # fmt: skip
    for d in ("Gateway", "QueryEncoder"):
        up = line.first_time(d, lambda n: n > 1)
        top = line.first_time(d, lambda n, d=d: n == max(line.replicas[d]))
        down = next((t for t, n in zip(line.t, line.replicas[d], strict=True) if t > line.load_s and n == 1), None)
        print(
            f"  {d}: 1 -> {max(line.replicas[d])} replicas; first added at {up} s, all at {top} s; "
            f"back to 1 at {down and round(down - line.load_s, 1)} s after the load stopped"
        )
    ok = sum(s == 200 for _, _, s in line.requests)
    print(f"  requests: {len(line.requests)}, {ok} answered 200")
    if args.plot:
        plot(line, Path(args.plot), args)


def plot(line: object, path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for d, label in (("Gateway", "gateway"), ("QueryEncoder", "encoder")):
        top.step(line.t, line.replicas[d], where="post", label=label)  # type: ignore[attr-defined]
    top.axvline(args.load_s, color="grey", ls="--", lw=1)
    top.set_ylabel("running replicas")
    top.legend(loc="upper right")
    top.set_title(f"{args.clients} loopback clients for {args.load_s:g} s (dashed: load stops)")
    bottom.plot(line.t, line.p50_ms, label="p50")  # type: ignore[attr-defined]
    bottom.plot(line.t, line.p99_ms, label="p99")  # type: ignore[attr-defined]
    bottom.axvline(args.load_s, color="grey", ls="--", lw=1)
    bottom.set_ylabel("latency, ms (per 0.5 s)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"  plot: {path}")


if __name__ == "__main__":
    main()
