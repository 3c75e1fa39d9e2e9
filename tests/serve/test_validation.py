"""The retrieval service's request checks, input decoding and ensembling, without Ray or a server."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError
from starlette.requests import Request
from unigeoclip import load_config
from unigeoclip.errors import InputError
from unigeoclip.geo.s2 import parent_token
from unigeoclip.modality import Modality
from unigeoclip.preprocess.batch import DecodeBatch
from unigeoclip.preprocess.spec import PreprocessSpec
from unigeoclip.serve import Limits, Scaling, ServeConfig
from unigeoclip.serve.decode import model_input, prepare
from unigeoclip.serve.ensemble import geolocate, mean_query, rescale
from unigeoclip.serve.memory import MemorySnapshot
from unigeoclip.serve.requests import ServiceError, check_api_key, parse
from unigeoclip.serve.schemas import Query, SearchRequest
from unigeoclip.vectors import EmbeddingStore

LIMITS = Limits(max_image_pixels=64 * 64, max_dsm_pixels=16 * 16, max_text_chars=20, max_body_bytes=10_000)


def b64png(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def request(body: bytes, headers: dict[str, str] | None = None) -> Request:
    """A real ASGI request carrying ``body`` (what Starlette builds from the wire)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        out = {"type": "http.request", "body": b"" if sent else body, "more_body": False}
        sent = True
        return out

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""}, receive)


def parsed(body: bytes, **headers: str) -> SearchRequest:
    return asyncio.run(parse(request(body, headers), SearchRequest, LIMITS.max_body_bytes))


def refusal(body: bytes, **headers: str) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        parsed(body, **headers)
    return info.value


def test_a_valid_request_parses_with_defaults() -> None:
    req = parsed(b'{"query": {"text": "harbour", "coords": {"lat_deg": 52.3, "lon_deg": 4.9}}}')
    assert req.k == 10 and req.targets is None and req.query.modalities() == [Modality.TEXT, Modality.COORDS]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"query": {"lidar": {}}}', 422, "unknown modality 'lidar' in query; expected one of: aerial"),
        (b'{"query": {"text": "a"}, "file": "/etc/passwd"}', 422, "unknown field 'file'"),
        (b'{"query": {"coords": {"lat_deg": 95, "lon_deg": 0}}}', 422, "query.coords.lat_deg"),
        (b'{"query": {"coords": {"lat_deg": NaN, "lon_deg": 0}}}', 422, "query.coords.lat_deg"),
        (b'{"query": {"text": "a"}, "filters": {"year": 3000}}', 422, "1800..2200"),
        (b'{"query": {"text": "a"}, "targets": []}', 422, "targets"),
        (b'{"query": ', 400, "not valid JSON"),
        (b"[]", 422, "body"),
        (b"x" * 10_001, 413, "over the limit of 10000 bytes"),
        # no coercion (found by schemathesis): false is not a height of 0 m, "5" or 5.0 is not k=5
        (b'{"query": {"dsm": {"heights": [[false, false]]}}}', 422, "query.dsm.heights"),
        (b'{"query": {"text": "a"}, "k": "5"}', 422, "k: Input should be a valid integer"),
        (b'{"query": {"text": "a"}, "k": 5.0}', 422, "k: Input should be a valid integer"),
        (b'{"query": {"coords": {"lat_deg": "52", "lon_deg": 4}}}', 422, "query.coords.lat_deg"),
    ],
)
def test_refusals_say_what_was_wrong(body: bytes, status: int, words: str) -> None:
    err = refusal(body)
    assert err.status == status and words in err.message


def test_content_type_and_declared_length_are_checked() -> None:
    assert refusal(b"{}", **{"content-type": "text/csv"}).status == 415
    assert refusal(b"{}", **{"content-length": "99999999"}).status == 413


def multipart(request_json: bytes, png: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body of a ``request`` JSON part and an ``aerial`` PNG upload, with its content type."""
    parts = [
        (b'Content-Disposition: form-data; name="request"\r\n\r\n', request_json),
        (b'Content-Disposition: form-data; name="aerial"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n', png),
    ]
    body = b"".join(b"--b0undary\r\n" + h + v + b"\r\n" for h, v in parts) + b"--b0undary--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=b0undary"}


def test_multipart_files_join_the_query() -> None:
    png = base64.b64decode(b64png(8, 8))
    body, headers = multipart(b'{"k": 3, "query": {"text": "quay"}}', png)
    req = parsed(body, **headers)
    assert req.k == 3 and req.query.text == "quay" and req.query.aerial is not None
    assert base64.b64decode(req.query.aerial.image_b64) == png


def test_an_input_given_both_in_the_json_and_as_a_file_is_refused() -> None:
    """Found by schemathesis: the upload silently replaced the image_b64 of the JSON part, valid or not."""
    body, headers = multipart(b'{"query": {"aerial": {"image_b64": "iVBORw0KGgo="}}}', base64.b64decode(b64png(8, 8)))
    err = refusal(body, **headers)
    assert err.status == 422 and "query.aerial.image_b64 is given both as JSON and as an upload" in err.message


def test_api_key() -> None:
    check_api_key(request(b""), None)  # no key configured: nothing asked
    check_api_key(request(b"", {"X-API-Key": "s3cret"}), "s3cret")
    for headers in ({}, {"X-API-Key": "nope"}):
        with pytest.raises(ServiceError) as info:
            check_api_key(request(b"", headers), "s3cret")
        assert info.value.status == 401 and "X-API-Key" in info.value.message


def test_api_key_comes_from_the_config_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIGEOCLIP_API_KEY", "from-env")
    assert ServeConfig(db="d").resolved_api_key() == "from-env"
    assert ServeConfig(db="d", api_key="given").resolved_api_key() == "given"
    monkeypatch.delenv("UNIGEOCLIP_API_KEY")
    assert ServeConfig(db="d").resolved_api_key() is None
    assert "given" not in repr(ServeConfig(db="d", api_key="given"))  # a secret never shows in logs


def query(**inputs: object) -> Query:
    return Query.model_validate(inputs)


def test_prepare_checks_limits() -> None:
    with pytest.raises(InputError, match="exceeds the limit of 4096 pixels"):
        prepare(query(aerial={"image_b64": b64png(65, 64)}), LIMITS)
    with pytest.raises(InputError, match="over the limit of 20"):
        prepare(query(text="x" * 21), LIMITS)
    with pytest.raises(InputError, match="over the limit of 256"):
        prepare(query(dsm={"heights": [[1.0] * 17] * 16}), LIMITS)
    with pytest.raises(InputError, match="infinite"):
        prepare(query(dsm={"heights": [[1.0, float("inf")], [1.0, 1.0]]}), LIMITS)
    with pytest.raises(InputError, match="not a TIFF"):
        prepare(query(dsm={"geotiff_b64": base64.b64encode(b"/etc/passwd").decode()}), LIMITS)
    out = prepare(query(dsm={"heights": [[1.0, None], [3.0, 4.0]]}, coords={"lat_deg": 1, "lon_deg": 2}), LIMITS)
    assert np.isnan(out[Modality.DSM][0, 1]) and out[Modality.COORDS].tolist() == [1.0, 2.0]


def test_model_input_shapes_each_modality_for_the_model() -> None:
    cfg = load_config("tiny")
    prepared = prepare(
        query(aerial={"image_b64": b64png(64, 48)}, street={"image_b64": b64png(40, 30), "fov_deg": 70},
              dsm={"heights": [[5.0] * 16] * 16}, text="canal"),
        Limits(),
    )  # fmt: skip
    assert model_input(Modality.AERIAL, prepared[Modality.AERIAL], PreprocessSpec.of(cfg)).shape == (3, 32, 32)
    street = model_input(Modality.STREET, prepared[Modality.STREET], PreprocessSpec.of(cfg))
    assert street.shape == (3, 32, 32) and street.min() >= 0 and street.max() <= 1
    assert model_input(Modality.DSM, prepared[Modality.DSM], PreprocessSpec.of(cfg)).shape == (1, 32, 32)
    assert model_input(Modality.TEXT, prepared[Modality.TEXT], PreprocessSpec.of(cfg)) == "canal"


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("projection", ["equirectangular", "perspective"])
def test_the_service_feeds_a_model_exactly_what_the_embedding_job_does(projection: str) -> None:
    """One preprocessing: a stored row decoded canonically (the embedding job's path) and the same content sent
    to the service (``prepare`` + ``model_input``) give identical arrays, bit for bit."""
    spec = PreprocessSpec.of(load_config("tiny"))
    rng = np.random.default_rng(7)
    aerial = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    street = rng.integers(0, 256, (48, 96, 3) if projection == "equirectangular" else (40, 60, 3), dtype=np.uint8)
    fov = 360.0 if projection == "equirectangular" else 70.0
    heading = 123.0 if projection == "equirectangular" else 0.0  # a client's photo has no heading: the view's own
    dsm = rng.normal(40, 8, (16, 16)).astype(np.float16)
    dsm[3, 4] = np.nan
    view = {"image": png_bytes(street), "lat_deg": 1.0, "lon_deg": 2.0, "heading_deg": heading,
            "projection": projection, "fov_deg": fov, "capture_date": "2024-01-01", "source_id": "v"}  # fmt: skip
    table = pa.table(
        {
            "sample_id": ["s"],
            "lat_deg": [1.0],
            "lon_deg": [2.0],
            "aerial": [png_bytes(aerial)],
            "street": [[view]],
            "dsm": pa.array([dsm.ravel().tolist()], pa.list_(pa.float16())),
            "dsm_px": pa.array([16], pa.int16()),
            "text": ["x"],
            **{f"{m.value}_present": [True] for m in Modality},
        }
    )
    pixels = (Modality.AERIAL, Modality.STREET, Modality.DSM)
    stored = DecodeBatch(PreprocessSpec.of(load_config("tiny"), modalities=pixels), augment=False)(table)
    sent = prepare(
        query(aerial={"image_b64": base64.b64encode(png_bytes(aerial)).decode()},
              street={"image_b64": base64.b64encode(png_bytes(street)).decode(), "projection": projection,
                      "fov_deg": fov},
              dsm={"heights": [[None if np.isnan(v) else float(v) for v in row] for row in dsm]}),
        Limits(),
    )  # fmt: skip
    for m in pixels:
        np.testing.assert_array_equal(model_input(m, sent[m], spec), stored[m.value][0], err_msg=m.value)


def test_ensemble_score_is_the_mean_cosine() -> None:
    rng = np.random.default_rng(0)
    q = {m: v / np.linalg.norm(v) for m, v in zip("abc", rng.normal(size=(3, 16)), strict=True)}
    gallery = rng.normal(size=(5, 16))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    mean, norm = mean_query(q)
    cos_with_mean = gallery @ mean / norm  # what the store reports
    hits = rescale([{"score": s} for s in cos_with_mean], norm)
    want = np.mean([gallery @ v for v in q.values()], axis=0)
    np.testing.assert_allclose([h["score"] for h in hits], want, atol=1e-6)
    with pytest.raises(InputError, match="cancel out"):
        mean_query({"a": q["a"], "b": -q["a"]})


def test_geolocate_confidence_is_the_weight_near_the_best_hit() -> None:
    near = {"lat_deg": 52.0, "lon_deg": 4.0, "cell_token": "47c6", "score": 0.9}
    close = {"lat_deg": 52.0005, "lon_deg": 4.0, "cell_token": "47c6", "score": 0.9}  # 56 m away
    far = {"lat_deg": 10.0, "lon_deg": 4.0, "cell_token": "1", "score": 0.9}
    assert geolocate([near, close])["confidence"] == pytest.approx(1.0)
    got = geolocate([near, close, far])
    assert got["confidence"] == pytest.approx(2 / 3) and (got["lat_deg"], got["cell_token"]) == (52.0, "47c6")
    with pytest.raises(InputError, match="no gallery item"):
        geolocate([])


def test_scaling_options() -> None:
    auto = Scaling(min_replicas=1, max_replicas=3, target_ongoing_requests=2).deployment_options()
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
                                          "upscale_delay_s": 10.0, "downscale_delay_s": 120.0,
                                          "look_back_period_s": 15.0}  # fmt: skip
    from ray.serve.config import AutoscalingConfig

    AutoscalingConfig(**auto["autoscaling_config"])  # Ray accepts every key
    fixed = Scaling(num_replicas=2, num_gpus=1).deployment_options()
    assert fixed["num_replicas"] == 2 and fixed["ray_actor_options"]["num_gpus"] == 1
    assert "autoscaling_config" not in fixed


def test_an_encoder_that_cannot_hold_a_full_batch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_ongoing_requests \(16\) is below max_batch_size \(32\)"):
        ServeConfig(db="x", max_batch_size=32, encoder=Scaling(max_ongoing_requests=16))
    ServeConfig(db="x", max_batch_size=32, encoder=Scaling(max_ongoing_requests=16), colocate=True)  # no encoder


def test_the_in_memory_snapshot_searches_exactly_like_the_store(tmp_path: Path) -> None:
    from ..helpers import DB_DIM, db_with, embedding_rows

    db, _ = db_with(tmp_path, embedding_rows(1200, "v1"))
    db.publish("v1")
    store = EmbeddingStore.open(db)
    memory = MemorySnapshot(store)
    queries = np.random.default_rng(3).standard_normal((4, DB_DIM)).astype(np.float32)
    paris = store.scan(columns=["cell_token"], modality="text")["cell_token"][0].as_py()
    for filters in [
        {},
        {"modality": ["text"]},
        {"bbox": (48.0, 2.0, 49.5, 3.0), "year": [2021, 2023]},
        {"bbox": (-40.0, 150.0, -30.0, -170.0)},  # crosses the antimeridian
        {"cell_prefix": parent_token(paris, 8), "split": "train"},
        {"year": 1999},
    ]:
        for q in queries:
            want = store.search(q * 3, k=7, **filters).to_pylist()  # any norm: cosine
            got = memory.search(q * 3, k=7, **filters)
            assert [(h["sample_id"], h["modality"]) for h in got] == [(h["sample_id"], h["modality"]) for h in want]
            np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in want], atol=1e-5)
    with pytest.raises(InputError, match="not a valid S2 cell token"):
        memory.search(queries[0], k=3, cell_prefix="47e66")


def test_the_retriever_searches_small_snapshots_on_the_loop_and_the_rest_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same hits from the loop (small in-memory snapshot), a worker thread (big one) and LanceDB (memory off)."""
    from unigeoclip.serve import retriever as retriever_module

    from ..helpers import DB_DIM, db_with, embedding_rows

    db, _ = db_with(tmp_path, embedding_rows(600, "v1"))
    db.publish("v1")
    q = np.random.default_rng(5).standard_normal(DB_DIM).astype(np.float32)
    filters = {"bbox": [40.0, -10.0, 60.0, 20.0]}

    async def search(retriever: retriever_module.Retriever) -> tuple[list[tuple[str, str]], bool]:
        threads: list[int] = []
        inner = retriever._search

        def recorded(*args: Any, **kwargs: Any) -> dict[str, Any]:
            threads.append(threading.get_ident())
            return inner(*args, **kwargs)

        monkeypatch.setattr(retriever, "_search", recorded)
        found = await retriever.search(q, "v1", k=5, targets=["text"], filters=filters)
        bad = await retriever.search(q, "v1", k=5, targets=None, filters={"cell_prefix": "47e66"})
        assert "not a valid S2 cell token" in bad["error"]
        assert found["model_version"] == "v1" and len(found["hits"]) == 5
        return [(h["sample_id"], h["modality"]) for h in found["hits"]], set(threads) == {threading.get_ident()}

    def run(memory_rows: int) -> tuple[list[tuple[str, str]], bool]:
        retriever = retriever_module.Retriever(ServeConfig(db=str(db.uri), memory_rows=memory_rows, refresh_s=60))
        try:
            return asyncio.run(search(retriever))
        finally:
            retriever.watcher.stop()

    on_loop, on_loop_ran_there = run(memory_rows=10_000)
    monkeypatch.setattr(retriever_module, "INLINE_SEARCH_VALUES", 0)  # every snapshot is now "big"
    in_thread, in_thread_ran_on_loop = run(memory_rows=10_000)
    lancedb, lancedb_ran_on_loop = run(memory_rows=0)
    assert on_loop_ran_there and not in_thread_ran_on_loop and not lancedb_ran_on_loop
    assert on_loop == in_thread == lancedb


def test_an_empty_api_key_is_a_configuration_error_not_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from unigeoclip.errors import ConfigError

    monkeypatch.setenv("UNIGEOCLIP_API_KEY", "")
    with pytest.raises(ConfigError, match=r"\$UNIGEOCLIP_API_KEY is set but empty"):
        ServeConfig(db="x").resolved_api_key()
    monkeypatch.setenv("UNIGEOCLIP_API_KEY", "   ")
    with pytest.raises(ConfigError, match="set but empty"):
        ServeConfig(db="x").resolved_api_key()
    with pytest.raises(ConfigError, match="api_key is set but empty"):
        ServeConfig(db="x", api_key="").resolved_api_key()
    monkeypatch.delenv("UNIGEOCLIP_API_KEY")
    assert ServeConfig(db="x").resolved_api_key() is None
    with pytest.raises(ConfigError, match="requires an API key"):
        ServeConfig(db="x", require_api_key=True).resolved_api_key()
    monkeypatch.setenv("UNIGEOCLIP_API_KEY", "s3cret")
    assert ServeConfig(db="x", require_api_key=True).resolved_api_key() == "s3cret"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_serving_beyond_loopback_without_a_key_is_refused(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from unigeoclip.errors import ConfigError

    monkeypatch.delenv("UNIGEOCLIP_API_KEY", raising=False)
    cfg = ServeConfig(db="x")
    with pytest.raises(ConfigError, match="--allow-unauthenticated"):
        cfg.check_exposure(host)
    cfg.check_exposure(host, allow_unauthenticated=True)
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        cfg.check_exposure(loopback)
    monkeypatch.setenv("UNIGEOCLIP_API_KEY", "s3cret")
    cfg.check_exposure(host)


def test_the_cli_refuses_an_open_keyless_service_before_starting_anything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from unigeoclip.app.cli import main
    from unigeoclip.cluster import runtime

    started: list[object] = []  # a spy, not a stub: Ray may already run in this process (other tests started it)
    monkeypatch.setattr(runtime, "ensure_ray", lambda *a, **k: started.append(a) or {})
    monkeypatch.delenv("UNIGEOCLIP_API_KEY", raising=False)
    assert main(["serve", "--db", "nowhere", "--host", "0.0.0.0"]) == 2
    assert "--allow-unauthenticated" in capsys.readouterr().err
    assert started == [], "the CLI reached Ray before refusing the keyless exposure"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_only_the_documented_image_formats_reach_a_decoder(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, format=fmt)
    with pytest.raises(InputError, match="not a PNG, JPEG or WEBP image"):
        prepare(query(aerial={"image_b64": base64.b64encode(buf.getvalue()).decode()}), LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_documented_image_formats_decode(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, format=fmt)
    out = prepare(query(aerial={"image_b64": base64.b64encode(buf.getvalue()).decode()}), LIMITS)
    assert out[Modality.AERIAL].shape == (16, 16, 3)


def _geotiff(data: np.ndarray, **profile: object) -> str:
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                      dtype=data.dtype, **profile) as ds:  # fmt: skip
            ds.write(data)
        return base64.b64encode(mem.read()).decode()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_dsm_geotiff_is_one_band_of_real_heights_in_bounded_blocks() -> None:
    ok = prepare(query(dsm={"geotiff_b64": _geotiff(np.full((1, 8, 8), 12.5, np.float32))}), LIMITS)
    assert ok[Modality.DSM].shape == (8, 8)
    with pytest.raises(InputError, match="has 3 bands"):
        prepare(query(dsm={"geotiff_b64": _geotiff(np.zeros((3, 8, 8), np.float32))}), LIMITS)
    with pytest.raises(InputError, match="holds complex64 values"):
        prepare(query(dsm={"geotiff_b64": _geotiff(np.zeros((1, 8, 8), np.complex64))}), LIMITS)
    # 64 x 64 pixels that declare one 2048 x 2048 tile: reading it would allocate the whole tile
    huge_tile = _geotiff(np.full((1, 64, 64), 7, np.uint8), tiled=True, blockxsize=2048, blockysize=2048)
    with pytest.raises(InputError, match="blocks of 2048x2048"):
        prepare(query(dsm={"geotiff_b64": huge_tile}), Limits(max_dsm_pixels=64 * 64))


def test_a_server_without_the_files_extra_refuses_a_geotiff_with_a_422_that_names_both_fixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    tiff = _geotiff(np.full((1, 8, 8), 12.5, np.float32))  # made while rasterio is there
    for name in [m for m in sys.modules if m == "rasterio" or m.startswith("rasterio.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(InputError, match=r"send dsm\.heights instead.*pip install 'unigeoclip\[files\]'"):
        prepare(query(dsm={"geotiff_b64": tiff}), LIMITS)


def test_the_default_pixel_limit_is_what_the_model_can_use() -> None:
    assert Limits().max_image_pixels == 2048 * 2048


def test_the_decode_pool_sheds_load_with_a_503_and_retry_after() -> None:
    """Two workers, one queue slot: a fourth concurrent job is refused at once, not queued."""
    from unigeoclip.serve.offload import Offload

    gate = threading.Event()

    async def scenario() -> tuple[list[Any], ServiceError]:
        pool = Offload(workers=2, queue=1)
        held = [asyncio.ensure_future(pool(gate.wait, 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceError) as refused:
            await pool(lambda: None)
        gate.set()
        done = await asyncio.gather(*held)
        assert pool.running == 0 and await pool(lambda: "again") == "again"  # admitted once the jobs are done
        return done, refused.value

    done, refused = asyncio.run(scenario())
    assert done == [True, True, True]
    assert refused.status == 503 and refused.headers == {"Retry-After": "1"} and "retry" in refused.message


def test_every_deployment_has_a_bounded_queue() -> None:
    for scaling in (Scaling(), Scaling(num_replicas=2), ServeConfig(db="x").gateway):
        opts = scaling.deployment_options()
        assert 0 < opts["max_queued_requests"] <= 1024, opts
        assert opts["backpressure_config"] == {"status_code": 503, "retry_after_s": 1}, opts
    assert ServeConfig(db="x").call_timeout_s <= 30


def test_the_decode_pool_admits_every_request_its_replica_admits() -> None:
    """Shedding is Serve's bounded queue: a pool of 2 threads must not refuse what the gateway let in."""
    cfg = ServeConfig(db="x")
    assert cfg.decode_workers + cfg.resolved_decode_queue() >= cfg.gateway.max_ongoing_requests
    assert ServeConfig(db="x", decode_queue=3).resolved_decode_queue() == 3


def test_a_dsm_array_past_the_limit_is_refused_before_any_parse() -> None:
    """A body of a million heights: 413 from a count of its separators, before JSON or pydantic build a list."""
    heights = "[" + ",".join(["[" + ",".join(["1"] * 1000) + "]"] * 1000) + "]"
    body = ('{"query": {"dsm": {"heights": ' + heights + "}}}").encode()

    async def go() -> ServiceError:
        with pytest.raises(ServiceError) as info:
            await parse(request(body), SearchRequest, 10 * len(body), max_values=16 * 16 + 1000)
        return info.value

    refused = asyncio.run(go())
    assert refused.status == 413 and "more than 1256 values" in refused.message


# -- failed-auth rate limit ----------------------------------------------------------------------------


def test_an_address_is_blocked_after_its_limit_of_failures_until_the_oldest_leaves_the_window() -> None:
    from unigeoclip.serve.ratelimit import AuthFailures

    limiter = AuthFailures(limit=3, window_s=60)
    for t in (0.0, 10.0, 20.0):
        assert limiter.retry_after("198.51.100.7", t) is None
        limiter.failed("198.51.100.7", t)
    assert limiter.retry_after("198.51.100.7", 21.0) == 39  # the failure at 0 s leaves the window at 60 s
    assert limiter.retry_after("198.51.100.8", 21.0) is None  # another address is not affected
    assert limiter.retry_after("198.51.100.7", 60.0) is None  # two failures left in the window
    limiter.failed("198.51.100.7", 61.0)
    assert limiter.retry_after("198.51.100.7", 61.5) == 9  # now the one at 10 s is the oldest
    assert AuthFailures(limit=0, window_s=60).retry_after("x", 0) is None


def test_the_limiter_forgets_the_least_recently_failing_addresses_past_its_bound() -> None:
    from unigeoclip.serve.ratelimit import AuthFailures

    limiter = AuthFailures(limit=1, window_s=60, max_addresses=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
    assert limiter.retry_after("10.0.3.231", 1.0) == 59 and limiter.retry_after("10.0.0.0", 1.0) is None


def test_the_counted_address_is_the_peer_unless_a_trusted_proxy_forwarded_the_request() -> None:
    from unigeoclip.serve.ratelimit import client_address, parse_networks

    proxies = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    assert client_address("203.0.113.9", ["1.2.3.4"], proxies) == "203.0.113.9"  # an untrusted peer's header is ignored
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address("10.1.2.3", ["203.0.113.9"], proxies) == "203.0.113.9"
    # the client wrote the left hops itself; the last untrusted one is what the proxy saw
    assert client_address("10.1.2.3", ["6.6.6.6, 203.0.113.9, 10.4.4.4"], proxies) == "203.0.113.9"
    assert client_address("10.1.2.3", ["6.6.6.6", "203.0.113.9"], proxies) == "203.0.113.9"  # two header lines
    assert client_address("127.0.0.1", [], parse_networks([])) == "127.0.0.1"
    with pytest.raises(ValueError, match=r"'10\.0\.0/33' is not an IP address or CIDR"):
        parse_networks(["10.0.0/33"])
    with pytest.raises(ValidationError, match="not an IP address or CIDR"):
        ServeConfig(db="x", trusted_proxies=("proxy.local",))
