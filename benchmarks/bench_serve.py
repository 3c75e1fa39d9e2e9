"""The retrieval service over loopback HTTP against the same search called in-process, same store, same run.

A model (``--preset``, random init: only the cost of encoding matters here) and a LanceDB
store of ``--items`` items x 5 modalities (unit vectors, written through the store's own
write API and published as the serving version) are built in a temporary directory. Then,
for each query kind (``coords``, ``text``, and the 3-modality ``ensemble`` aerial + text +
coords), bounded loops of ``--requests`` queries measure p50 / p99 latency and requests/s:

* in-process: the retriever's own path without Serve: decode, ``model.encode`` of each modality,
  mean, exact search of the snapshot (in memory, as the retriever holds a snapshot of at most
  ``memory_rows`` rows; ``--lancedb`` searches the LanceDB table instead, the path of bigger
  stores), rows to Python dicts, at concurrency 1 and 8 (threads);
* service: ``POST /v1/search`` with the same query through Ray Serve on 127.0.0.1 (proxy ->
  gateway -> encoder -> retriever), at concurrency 1 and 8 (asyncio clients, one kept-alive
  connection each: :mod:`loopback_http`'s lean client, or ``--client httpx``, whose ~1 ms of
  Python per request on these 2 cores is then counted as service latency);
* the same service deployed ``colocate``d beside it (proxy -> gateway, which holds the encoder
  and the retriever in its own process), same loops.

"proxy" is Serve's ingress in front of the gateway: HAProxy by default (``--ingress haproxy``,
the setting a local Ray gets from ``runtime.ensure_ray``), or Serve's Python proxy actor
(``--ingress proxy``). Serve reads this when the cluster starts, so one run measures one.

Goals: service p50 <= 3x in-process p50; >= 100 requests/s at concurrency 8 on 2 cores.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/bench_serve.py [--preset small] [--items 4000] [--requests 300]
        [--ingress haproxy|proxy] [--client lean|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import ray
import torch
from loopback_http import LoopbackClient  # this script's directory is on sys.path
from PIL import Image
from ray import serve
from unigeoclip import UniGeoCLIP, load_config
from unigeoclip.cluster.ingress import FAST_SERVE_INGRESS, free_port, use_fast_serve_ingress
from unigeoclip.geo.s2 import cell_id
from unigeoclip.modality import Modality
from unigeoclip.serve import Scaling, ServeConfig, start_service
from unigeoclip.serve.app import build_app
from unigeoclip.vectors import EmbeddingDB, EmbeddingStore
from unigeoclip.vectors.schema import embedding_schema
from unigeoclip.vectors.versions import model_fingerprint, model_version_id
from unigeoclip.vectors.writer import upsert

CENTRE = (52.37, 4.89)  # one city, as benchmarks/worlds.py builds


def build_store(model: UniGeoCLIP, model_dir: Path, db_uri: Path, items: int, seed: int = 0) -> str:
    """``items`` places x every modality of ``model``, random unit vectors, published as the serving version."""
    rng = np.random.default_rng(seed)
    version = model_version_id(model_dir)
    db = EmbeddingDB(db_uri)
    dim = model.embed_dim
    mods = [m.value for m in model.modalities]
    table = db.register_version(version, fingerprint=model_fingerprint(model_dir), model_dir=str(model_dir),
                                embed_dim=dim, modalities=mods)  # fmt: skip
    lat = CENTRE[0] + rng.uniform(-0.05, 0.05, items)
    lon = CENTRE[1] + rng.uniform(-0.08, 0.08, items)
    cells = [cell_id(float(a), float(o)) for a, o in zip(lat, lon, strict=True)]
    n = items * len(mods)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = {
        "sample_id": [f"{c.to_token()}-{2020 + i % 4}-{i:06d}" for i, c in enumerate(cells) for _ in mods],
        "modality": mods * items,
        "model_version": [version] * n,
        "content_hash": [f"{i:032x}" for i in range(n)],
        "cell_token": [c.to_token() for c in cells for _ in mods],
        "cell_id": [c.id() for c in cells for _ in mods],
        "lat_deg": np.repeat(lat, len(mods)),
        "lon_deg": np.repeat(lon, len(mods)),
        "year": [2020 + i % 4 for i in range(items) for _ in mods],
        "split": ["train"] * n,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "embed_run": ["bench"] * n,
        "written_at": [datetime.now(UTC)] * n,
    }
    upsert(table, pa.table(rows, schema=embedding_schema(dim)))
    db.mark_complete(version, n)
    db.publish(version)
    return version


def png_b64(size: int, seed: int) -> str:
    rgb = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def queries(kind: str, n: int, aerial_px: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    words = ["harbour", "market", "tower", "park", "canal", "station", "bakery", "mill"]
    out = []
    for i in range(n):
        coords = {"lat_deg": CENTRE[0] + float(rng.uniform(-0.05, 0.05)),
                  "lon_deg": CENTRE[1] + float(rng.uniform(-0.08, 0.08))}  # fmt: skip
        text = f"{words[i % 8]} street {i}, near the {words[(i * 3) % 8]}"
        if kind == "coords":
            out.append({"coords": coords})
        elif kind == "text":
            out.append({"text": text})
        else:
            out.append({"aerial": {"image_b64": png_b64(aerial_px, i % 16)}, "text": text, "coords": coords})
    return out


class InProcess:
    """The same search without Serve: decode, encode each modality, average, search, rows to dicts."""

    def __init__(self, model: UniGeoCLIP, db: Path, *, lancedb: bool) -> None:
        from unigeoclip.serve import Limits
        from unigeoclip.serve.decode import model_input, prepare
        from unigeoclip.serve.ensemble import mean_query, rescale
        from unigeoclip.serve.memory import MemorySnapshot
        from unigeoclip.serve.retriever import HIT_COLUMNS
        from unigeoclip.serve.schemas import Query

        self.model, self.store = model, EmbeddingStore.open(db)
        self.memory = None if lancedb else MemorySnapshot(self.store)
        self._prepare, self._input, self._mean, self._rescale = prepare, model_input, mean_query, rescale
        self._query, self._limits, self._columns = Query, Limits(), HIT_COLUMNS

    def __call__(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        prepared = self._prepare(self._query.model_validate(query), self._limits)
        vectors = {}
        with torch.inference_mode():
            for m, x in prepared.items():
                item = self._input(m, x, self.model.preprocess_spec())
                inputs = [item] if m is Modality.TEXT else torch.from_numpy(item[None])
                vectors[m.value] = self.model.encode(m, inputs)[0].numpy()
        q, norm = self._mean(vectors)
        if self.memory is not None:
            return self._rescale(self.memory.search(q, k=10), norm)
        hits = self.store.search(q, k=10).select(self._columns).to_pylist()
        return self._rescale(hits, norm)


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    return {"p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "rps": len(ms) / wall}


def run_threads(fn: Callable[[dict[str, Any]], object], qs: list[dict[str, Any]], conc: int) -> dict[str, float]:
    lat: list[float] = []
    it = iter(range(len(qs)))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            t = time.perf_counter()
            fn(qs[i])
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(conc)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return stats(lat, time.perf_counter() - start)


async def run_http(url: str, qs: list[dict[str, Any]], conc: int, client: str = "lean") -> dict[str, float]:
    """``conc`` connections posting ``/v1/search`` in turn; ``client`` "lean" (:mod:`loopback_http`) or "httpx"."""
    lat: list[float] = []
    errors = 0
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for q in qs:
        queue.put_nowait({"query": q, "k": 10})

    async def worker(post: Callable[[dict[str, Any]], Awaitable[int]]) -> None:
        nonlocal errors
        while not queue.empty():
            body = queue.get_nowait()
            t = time.perf_counter()
            status = await post(body)
            lat.append(time.perf_counter() - t)
            errors += status != 200

    start = time.perf_counter()
    if client == "lean":

        async def lean_worker() -> None:
            async with LoopbackClient(url) as conn:

                async def lean_post(body: dict[str, Any]) -> int:
                    return (await conn.post("/v1/search", body))[0]

                await worker(lean_post)

        await asyncio.gather(*(lean_worker() for _ in range(conc)))
    else:
        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as pool:

            async def httpx_post(body: dict[str, Any]) -> int:
                return (await pool.post("/v1/search", json=body)).status_code

            await asyncio.gather(*(worker(httpx_post) for _ in range(conc)))
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return stats(lat, wall)


def start_ray(ingress: str) -> None:
    """A 2-CPU local Ray whose Serve uses ``ingress`` ("haproxy" or "proxy"): read when Serve starts."""
    for name in FAST_SERVE_INGRESS:
        os.environ[name] = "1" if ingress == "haproxy" else "0"
    use_fast_serve_ingress()  # HAProxy's side ports: free ones if another Serve holds the defaults
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--requests", type=int, default=300, help="queries per loop")
    ap.add_argument("--kinds", default="coords,text,ensemble")
    ap.add_argument("--lancedb", action="store_true", help="search LanceDB, not the in-memory snapshot, both sides")
    ap.add_argument("--batch-wait-s", type=float, default=None, help="the encoders' batch_wait_timeout_s [default]")
    ap.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy", help="Serve's ingress [haproxy]")
    ap.add_argument("--client", choices=("lean", "httpx"), default="lean",
                    help="the load generator: loopback_http's lean client, or httpx.AsyncClient [lean]")  # fmt: skip
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    cfg = load_config(args.preset)
    model = UniGeoCLIP.from_config(cfg).eval()
    model_dir = model.save_pretrained(tmp / "model")
    version = build_store(model, model_dir, tmp / "db", args.items)
    local = InProcess(model, tmp / "db", lancedb=args.lancedb)
    where = "in LanceDB" if args.lancedb else "in memory"
    print(f"store: {len(local.store)} rows ({args.items} items x {len(model.modalities)} modalities, "
          f"D={model.embed_dim}, exact search {where}), model {version}")  # fmt: skip

    start_ray(args.ingress)
    print(f"Serve ingress: {args.ingress}; client: {args.client}")
    one = Scaling(num_replicas=1, num_cpus=0, max_ongoing_requests=64)
    wait = {} if args.batch_wait_s is None else {"batch_wait_timeout_s": args.batch_wait_s}
    service = ServeConfig(db=str(tmp / "db"), gateway=one, encoder=one, retriever=one,
                          memory_rows=0 if args.lancedb else 200_000, **wait)  # fmt: skip
    url = start_service(service, port=free_port(), log_level="WARNING")
    colocated = f"{url}/colocated"  # the same service as one deployment (`colocate`), beside it
    serve.run(build_app(service.model_copy(update={"colocate": True})), name="colocated", route_prefix="/colocated")
    print(f"{'':<14} | {'in-process':^30} | {'service: 3 deployments':^30} | {'service: colocated':^30}")
    print(f"{'query':<9} {'conc':>4} | {'p50/p99 ms':>20} {'req/s':>8} | {'p50/p99 ms':>17} {'req/s':>6} {'ratio':>5} "
          f"| {'p50/p99 ms':>17} {'req/s':>6} {'ratio':>5}")  # fmt: skip
    for kind in args.kinds.split(","):
        qs = queries(kind, args.requests, cfg.model.aerial.image_size)
        run_threads(local, qs[:20], 1)  # warm-up, every side
        asyncio.run(run_http(url, qs[:20], 2, args.client))
        asyncio.run(run_http(colocated, qs[:20], 2, args.client))
        for conc in (1, 8):
            inproc = run_threads(local, qs, conc)
            row = f"{kind:<9} {conc:>4} | {inproc['p50']:>9.2f} / {inproc['p99']:>8.2f} {inproc['rps']:>8.1f}"
            for base in (url, colocated):
                served = asyncio.run(run_http(base, qs, conc, args.client))
                row += (f" | {served['p50']:>7.2f} / {served['p99']:>7.2f} {served['rps']:>6.1f} "
                        f"{served['p50'] / inproc['p50']:>4.1f}x")  # fmt: skip
            print(row, flush=True)
    metrics = httpx.get(f"{url}/metrics").text
    sums = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines() if "batch_size_sum" in ln or
            "batch_size_count" in ln}  # fmt: skip
    for m in ("coords", "text", "aerial"):
        s, c = sums.get(f'unigeoclip_serve_encoder_batch_size_sum{{modality="{m}"}}'), sums.get(
            f'unigeoclip_serve_encoder_batch_size_count{{modality="{m}"}}')  # fmt: skip
        if s is not None and c:
            print(f"mean encoder batch seen by a {m} query: {s / c:.2f}")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
