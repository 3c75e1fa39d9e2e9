"""The pipeline on the autoscaling local cluster against a local Ray, side by side, on the same data.

The cluster is ``ray_cluster.local.yaml`` started from zero worker nodes (``tests/local_cluster.py``, as
``make cluster-up`` starts it); each job goes through ``ray job submit --working-dir``. The local runs are
the same commands without ``RAY_ADDRESS`` (each starts its own local Ray, as on a laptop). Also measured:
submission -> first running task from zero workers, and the autoscaler's time to add a node.

    .venv/bin/python benchmarks/bench_cluster.py [--steps 20]

On one machine the cluster's nodes share its cores: the ratio is the cost of the cluster's machinery
(job submission, node start-up, object transfer between raylets), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.local_cluster import LocalCluster  # noqa: E402  (the harness the cluster tests use)

PROBE = """
import json, sys, time
import ray
ray.init()
@ray.remote(num_cpus=1)
def first_task():
    return time.time()
print("PROBE " + json.dumps({"first_task": ray.get(first_task.remote())}))
"""


def jobs(shared: Path, steps: int, *, cluster: bool) -> list[tuple[str, list[str]]]:
    store, run, db = str(shared / "store"), str(shared / "run"), str(shared / "db")
    pin = ["--set", "train.worker_resources.accelerator=1"] if cluster else []
    return [
        ("ingest", ["jobs/ingest.py", "--source", "synthetic", "--config", "tiny", "--store", store]),
        ("train", ["jobs/train.py", "--config", "tiny", "--store", store, "--out", run, "--steps", str(steps),
                   "--set", "train.micro_batch=16", "--set", "train.cpus_per_worker=0.5",
                   "--set", "train.cpus_per_decoder=0.25", "--set", "train.val_every=10", *pin]),
        ("embed", ["jobs/embed.py", "--model", f"{run}/model", "--store", store, "--db", db, "--batch-size", "8"]),
        ("reembed", ["jobs/reembed.py", "--store", store, "--db", db]),
        ("evaluate", ["jobs/evaluate.py", "--model", f"{run}/model", "--store", store, "--out", f"{shared}/report",
                      "--db", db, "--no-geoclip", "--no-pictures"]),
    ]  # fmt: skip


def run_local(shared: Path, steps: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    times = {}
    for name, args in jobs(shared, steps, cluster=False):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True)
        times[name] = time.perf_counter() - start
    return times


def run_cluster(shared: Path, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    cluster = LocalCluster()
    try:
        head_s = cluster.start()
        probe = cluster.dir / "probe"
        probe.mkdir()
        (probe / "probe.py").write_text(PROBE)
        joined: dict[str, float] = {}

        def watch() -> None:
            cluster.wait_for(lambda: cluster.nodes(), 300, "worker node", every_s=0.1)
            joined["at"] = time.time()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        submitted = time.time()
        out = cluster.submit("python", "probe.py", working_dir=probe)
        first = json.loads(out.split("PROBE ", 1)[1].splitlines()[0])["first_task"]
        watcher.join(timeout=60)
        scale = {"head start": head_s, "submit -> first task (0 workers)": first - submitted,
                 "submit -> node alive": joined["at"] - submitted}  # fmt: skip
        times = {}
        for name, args in jobs(shared, steps, cluster=True):
            start = time.perf_counter()
            cluster.submit("python", *args)
            times[name] = time.perf_counter() - start
        return times, scale
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        cluster, scale = run_cluster(work / "cluster", args.steps)
        local = run_local(work / "local", args.steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"tiny synthetic world, {args.steps} training steps, {os.cpu_count()} cores")
    for k, v in scale.items():
        print(f"  {k:<36} {v:6.1f} s")
    print(f"  {'job':<10} {'cluster':>9} {'local':>9} {'ratio':>7}")
    for name in cluster:
        print(f"  {name:<10} {cluster[name]:8.1f}s {local[name]:8.1f}s {cluster[name] / local[name]:7.2f}")
    total_c, total_l = sum(cluster.values()), sum(local.values())
    print(f"  {'pipeline':<10} {total_c:8.1f}s {total_l:8.1f}s {total_c / total_l:7.2f}")


if __name__ == "__main__":
    main()
