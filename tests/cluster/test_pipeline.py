"""The whole pipeline through ``ray job submit`` on the autoscaling local cluster, from zero worker nodes.

ingest -> train -> embed -> reembed -> evaluate, each job submitted with ``--working-dir`` to the head of
``ray_cluster.local.yaml`` (dashboard and job API on loopback), each checked against what it gives
without a cluster: the rows the source yields in this process, the model's own encoding of them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from unigeoclip import Modality, UniGeoCLIP, load_config
from unigeoclip.data.ingest import extract_locally
from unigeoclip.data.reader import DecodeBatch
from unigeoclip.data.sources.synthetic import SyntheticSource
from unigeoclip.data.store import SampleStore
from unigeoclip.store.versions import model_version_id

from ..helpers import expected_keys, stored_keys, stored_rows
from ..local_cluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PROBE = """
import json, sys, time
import ray
ray.init()
@ray.remote(num_cpus=1)
def first_task():
    return time.time()
print("PROBE " + json.dumps({"first_task_s": ray.get(first_task.remote()) - float(sys.argv[1])}))
"""
TRAIN = ["--steps", "20", "--workers", "2", "--set", "train.worker_resources.accelerator=1", "--set",
         "train.micro_batch=16", "--set", "train.cpus_per_worker=0.5", "--set", "train.cpus_per_decoder=0.25",
         "--set", "train.ckpt_every=10", "--set", "train.val_every=10", "--set", "train.log_every=5"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster()
    c.start()
    yield c
    c.stop()


def node_types(cluster: LocalCluster) -> list[str]:
    """The node group of every alive worker node (the fake provider labels them by resources only)."""
    return sorted("gpu_workers" if "accelerator" in n.resources_total else "cpu_workers" for n in cluster.nodes())


def test_pipeline_from_zero_worker_nodes(cluster: LocalCluster, tmp_path: Path) -> None:
    assert cluster.nodes() == [], "the cluster starts with the head only"
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.py").write_text(PROBE)
    out = cluster.submit("python", "probe.py", f"{time.time():.3f}", working_dir=probe)
    first_task_s = json.loads(out.split("PROBE ", 1)[1].splitlines()[0])["first_task_s"]
    assert node_types(cluster) == ["cpu_workers"], "one CPU node came for one CPU task"
    print(f"submission -> first task, from zero worker nodes: {first_task_s:.1f} s")

    shared = cluster.dir / "shared"  # a path every node sees: here, this machine's file system
    store, run, db = shared / "store", shared / "run", shared / "db"
    started = time.monotonic()
    cluster.submit("python", "jobs/ingest.py", "--source", "synthetic", "--config", "tiny", "--store", str(store))
    cfg = load_config("tiny")
    rows, _ = extract_locally(SyntheticSource(cfg.data.sources.synthetic, cfg.data), cfg.data,
                              SyntheticSource(cfg.data.sources.synthetic, cfg.data).plan())  # fmt: skip
    samples = SampleStore(store)
    assert sorted(samples.keys()["sample_id"].to_pylist()) == sorted(r["sample_id"] for r in rows)

    out = cluster.submit(
        "python", "jobs/train.py", "--config", "tiny", "--store", str(store), "--out", str(run), *TRAIN
    )
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20 and np.isfinite([m["loss"] for m in log if "loss" in m]).all()
    ranks = [json.loads((run / "workers" / f"rank-{r}.json").read_text()) for r in range(2)]
    gpu_nodes = {n.node_id for n in cluster.nodes() if "accelerator" in n.resources_total}
    assert {r["node_id"] for r in ranks} <= gpu_nodes and len(gpu_nodes) == 2, "training ran on the GPU group"

    cluster.submit("python", "jobs/embed.py", "--model", str(run / "model"), "--store", str(store), "--db", str(db),
                   "--batch-size", "8")  # fmt: skip
    version = model_version_id(run / "model")
    keys = stored_keys(db, version)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(samples)
    table = stored_rows(db, version)
    coords = {i: v for i, m, v in zip(table["item_id"].to_pylist(), table["modality"].to_pylist(),
                                      table["vector"].to_pylist(), strict=True) if m == "coords"}  # fmt: skip
    current = samples.samples().to_table(filter="current = true")
    model = UniGeoCLIP.from_pretrained(run / "model")
    decoded = DecodeBatch(model.config, augment=False)(current)  # the canonical inputs, as the embed job reads them
    with torch.no_grad():
        want = model.encode(Modality.COORDS, torch.from_numpy(decoded["coords"]))
    got = np.stack([coords[i] for i in current["sample_id"].to_pylist()])
    np.testing.assert_allclose(got, want.float().numpy(), atol=1e-5)

    out = cluster.submit("python", "jobs/reembed.py", "--store", str(store), "--db", str(db))
    assert re.search(r"embedded: 0 rows", out) and re.search(rf"skipped: {len(keys)} already", out), out[-2000:]

    report = shared / "report"
    cluster.submit("python", "jobs/evaluate.py", "--model", str(run / "model"), "--store", str(store), "--out",
                   str(report), "--db", str(db), "--no-geoclip", "--no-pictures")  # fmt: skip
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics and (report / "report.md").is_file()
    print(f"pipeline on the local cluster: {time.monotonic() - started:.0f} s; nodes at the end: {node_types(cluster)}")


def test_a_command_without_an_address_starts_its_own_ray_beside_a_running_cluster(cluster: LocalCluster) -> None:
    """A plain ``ray.init()`` would join any Ray running on the machine (here the 0-CPU head): the CLI's
    "default: RAY_ADDRESS, else a local Ray" must hold anyway."""
    import subprocess
    import sys

    env = {k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"}
    code = ("from unigeoclip import runtime; r = runtime.ensure_ray(num_cpus=1); "
            "print('RESULT', r.get('CPU'), runtime.can_grow())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("RESULT", 1)[1].split() == ["1.0", "False"]
