"""CPU per process over one earth ingest of the whole preset plan on a fresh local Ray (notes/issue25.md)."""

import os
import tempfile
import time
from pathlib import Path

import psutil
from unigeoclip import load_config
from unigeoclip.cluster.runtime import ensure_ray
from unigeoclip.ingest.pipeline import ingest
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.registry import make_source


def busy():
    with open("/proc/stat") as stat:
        v = stat.readline().split()[1:]
    v = list(map(int, v))
    idle = v[3] + v[4]
    return (sum(v) - idle) / os.sysconf("SC_CLK_TCK"), sum(v) / os.sysconf("SC_CLK_TCK")


def procs():
    out = {}
    for pr in psutil.process_iter(["name"]):
        try:
            t = pr.cpu_times()
            out[(pr.pid, pr.info["name"])] = t.user + t.system
        except psutil.Error:  # a process gone meanwhile
            pass
    return out


cfg = load_config("earth")
t0 = time.perf_counter()
ensure_ray()
print(f"ensure_ray {time.perf_counter() - t0:.2f}")
work = Path(tempfile.mkdtemp())
b0, p0 = busy(), procs()
s = time.perf_counter()
summ = ingest(make_source("earth", cfg), SampleStore(work / "s"), cfg.data, plan=cfg.ingest)
w = time.perf_counter() - s
b1, p1 = busy(), procs()
print(summ)
print(f"wall {w:.1f} s; machine busy {b1[0] - b0[0]:.1f} core-s of {b1[1] - b0[1]:.1f}")
d = sorted(((p1[k] - p0.get(k, 0.0), k) for k in p1), reverse=True)
print("CPU by process:", "; ".join(f"{k[1]}:{k[0]} {v:.1f}" for v, k in d[:10] if v > 0.1))
