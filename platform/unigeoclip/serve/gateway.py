"""The HTTP gateway: a FastAPI ingress that checks requests, asks the encoder and the retriever, and answers.

Routes: ``POST /v1/embed``, ``POST /v1/search``, ``POST /v1/geolocate``, ``GET /v1/items/{sample_id}/{modality}``,
``GET /healthz``, ``GET /readyz``, ``GET /metrics``, and the map explorer: ``GET /`` (its page), ``GET /static/*``
(its scripts, Leaflet included) and ``GET /tiles/{z}/{x}/{y}.png`` (its offline base map). Bad requests get a
4xx JSON body ``{"error", "status"}``; a call that meets a dying replica is retried on another before the client
sees a 503.
"""

# No `from __future__ import annotations` here: Serve's ingress re-wraps the route methods, and FastAPI must
# see real classes (not strings it would resolve in Serve's module) to inject the Request.
import asyncio
import logging
import mimetypes
import pathlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Path
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..errors import InputError
from ..modality import Modality
from . import basemap, ensemble
from .colocated import InProcess
from .config import RETRY_AFTER_S, ServeConfig
from .decode import prepare
from .metrics import ServiceMetrics
from .offload import Offload
from .ratelimit import AuthFailures, client_address, parse_networks
from .requests import UPLOAD_FIELDS, ServiceError, check_api_key, check_bearer, error_response, json_response, parse
from .schemas import (
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    GeolocateRequest,
    GeolocateResponse,
    ItemSummary,
    Query,
    SearchRequest,
    SearchResponse,
)

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"  # Serve's own request id (the client's X-Request-ID, else one it makes)
REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError,
                DeploymentUnavailableError)  # fmt: skip
RETRIES = 4
JSON_VALUES_BESIDE_DSM = 1_000  # a request's other JSON values (k, targets, filters, years): a generous bound
RETRY_BACKOFF_S = 0.25
STATIC = pathlib.Path(__file__).parent / "static"
STATIC_FILES = {p.relative_to(STATIC).as_posix(): p for p in sorted(STATIC.rglob("*")) if p.is_file()}  # all it serves
REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "/v1/embed": EmbedRequest,
    "/v1/search": SearchRequest,
    "/v1/geolocate": GeolocateRequest,
}

api = FastAPI(
    title="UniGeoCLIP retrieval",
    version="1",
    description="Any-to-any retrieval and geolocation over one embedding space of aerial, street-level, "
    "DSM, text and coordinates. Send the API key in X-API-Key when the service has one.",
)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}


@api.exception_handler(ServiceError)
async def _service_error(request: Request, exc: ServiceError) -> Response:
    return error_response(exc)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return error_response(ServiceError(exc.status_code, str(exc.detail), "http", dict(exc.headers or {})))  # Allow


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(ServiceError(422, str(exc), "invalid"))


UPLOADED = {"ImageInput": "image_b64", "StreetInput": "image_b64", "DSMInput": "geotiff_b64"}  # what a file supplies


def _multipart_part(components: dict[str, Any], name: str) -> str:
    """Add ``<name>Part``: the JSON part of a multipart body, in which what the files supply may be left out (the
    query itself, and the image or GeoTIFF of each input). Returns its reference."""
    renamed = orjson.dumps(components[name]).decode()
    for model in ("Query", *UPLOADED):
        renamed = renamed.replace(f'"#/components/schemas/{model}"', f'"#/components/schemas/{model}Part"')
    part = orjson.loads(renamed)
    optional = {"query", UPLOADED.get(name)}
    part["required"] = [f for f in part.get("required", []) if f not in optional]
    if not part["required"]:
        del part["required"]
    components[f"{name}Part"] = part
    return f"#/components/schemas/{name}Part"


def _openapi() -> dict[str, Any]:
    """FastAPI's schema plus the request bodies (parsed by hand to serve JSON and multipart on one route)."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_BODIES.values():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    for name in ("Query", *UPLOADED):
        _multipart_part(components, name)
    for path, model in REQUEST_BODIES.items():
        upload = {"type": "object", "additionalProperties": False, "properties": {
            "request": {"$ref": _multipart_part(components, model.__name__),
                        "description": f"{model.__name__} as JSON (its query's inputs may come as the files below)"},
            **{f: {"type": "string", "format": "binary"} for f in UPLOAD_FIELDS},
        }}  # fmt: skip
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {"schema": upload, "encoding": {"request": {"contentType": "application/json"}}},
            },
        }
    api.openapi_schema = schema
    return schema


api.openapi = _openapi  # type: ignore[method-assign]


@serve.ingress(api)  # here, at import: replicas import this module and must see the same patched route signatures
class Gateway:
    """The ingress deployment: routes below, handles to the encoder and the retriever."""

    def __init__(self, cfg: ServeConfig, encoder: Any, retriever: Any) -> None:
        """``encoder`` / ``retriever``: deployment handles, or None with ``cfg.colocate`` (both live here)."""
        self.cfg, self.limits = cfg, cfg.limits
        if cfg.colocate:  # imported only here: a split gateway never loads a model or LanceDB
            from .encoder import QueryEncoder
            from .retriever import Retriever

            encoder, retriever = InProcess(QueryEncoder(cfg)), InProcess(Retriever(cfg))
        self.encoder, self.retriever = encoder, retriever
        self.api_key = cfg.resolved_api_key()
        self.metrics_token = cfg.resolved_metrics_token()
        self.auth_failures = AuthFailures(cfg.auth_failure_limit, cfg.auth_failure_window_s)
        self.trusted_proxies = parse_networks(cfg.trusted_proxies)
        self.offload = Offload(cfg.decode_workers, cfg.resolved_decode_queue())  # JSON and input decoding, off the loop
        self.max_values = cfg.limits.max_dsm_pixels + JSON_VALUES_BESIDE_DSM
        self._ready_lock = asyncio.Lock()
        self._ready: tuple[dict[str, Any] | None, float] = (None, 0.0)
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (unit tests of the class)
            replica = "local"
        self.stats = ServiceMetrics(replica)

    # -- plumbing ---------------------------------------------------------------------------------

    async def _answer(self, route: str, request: Request, work: Callable[[], Awaitable[Any]]) -> Response:
        start = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex  # Serve answers with it too
        try:
            if route.startswith("/v1/") and self.api_key is not None:
                self._authenticate(request, lambda: check_api_key(request, self.api_key))
            payload = await work()
            status, reason = 200, None
            response = payload if isinstance(payload, Response) else json_response(payload)
        except ServiceError as exc:
            status, reason, response = exc.status, exc.reason, error_response(exc, request_id)
        except InputError as exc:
            status, reason = 422, "invalid"
            response = error_response(ServiceError(422, str(exc)))
        except Exception:  # a bug: a JSON 500 the client can quote, counted, and its traceback in the log
            log.exception("request %s to %s failed unexpectedly", request_id, route)
            status, reason = 500, "internal"
            response = error_response(ServiceError(500, "internal error: the operator's logs have the details", reason),
                                      request_id)  # fmt: skip
        self.stats.observe(route, status, time.perf_counter() - start, reason)
        return response

    def _authenticate(self, request: Request, check: Callable[[], None]) -> None:
        """``check()``, unless this address failed too often lately (a 429); a 401 counts against it."""
        address = client_address(request.client.host if request.client else None,
                                 request.headers.getlist("x-forwarded-for"), self.trusted_proxies)  # fmt: skip
        now = time.monotonic()
        wait = self.auth_failures.retry_after(address, now)
        if wait is not None:
            raise ServiceError(429, f"too many wrong or missing keys from this address: retry in {wait} s",
                               "rate_limited", {"Retry-After": str(wait)})  # fmt: skip
        try:
            check()
        except ServiceError:
            self.auth_failures.failed(address, now)
            raise

    async def _call(self, deployment: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``handle.method.remote(...)``, retried on another replica when the one it reached died."""
        handle = getattr(self, deployment)
        busy = {"Retry-After": str(RETRY_AFTER_S)}
        for attempt in range(RETRIES + 1):
            try:
                answer = await asyncio.wait_for(getattr(handle, method).remote(*args, **kwargs),
                                                timeout=self.cfg.call_timeout_s)  # fmt: skip
            except BackPressureError:  # its queue is full (max_queued_requests): shed now, not later
                self.stats.upstream(deployment, "overloaded")
                raise ServiceError(503, f"the {deployment} is at capacity: retry shortly", "overloaded", busy) from None
            except TimeoutError:
                self.stats.upstream(deployment, "timeout")
                raise ServiceError(503, f"the {deployment} gave no answer in {self.cfg.call_timeout_s:g} s: retry "
                                   "shortly", "timeout", busy) from None  # fmt: skip
            except REPLICA_GONE as exc:
                if attempt == RETRIES:
                    self.stats.upstream(deployment, "unavailable")
                    raise ServiceError(
                        503, f"the {deployment} is restarting ({type(exc).__name__}); retry shortly", "unavailable"
                    ) from None
                self.stats.upstream(deployment, "retried")
                await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
                continue
            self.stats.upstream(deployment, "ok")
            return answer
        raise AssertionError("unreachable")

    async def _encode(self, query: Query) -> dict[str, Any]:
        if not query.modalities():
            raise ServiceError(422, f"query has no input: give at least one of {', '.join(m.value for m in Modality)}")
        prepared = {m.value: x for m, x in (await self.offload(prepare, query, self.limits)).items()}
        out: dict[str, Any] = await self._call("encoder", "encode", prepared)
        if "error" in out:
            raise ServiceError(out.get("status", 422), out["error"], out.get("reason", "modality_unavailable"))
        for m in prepared:
            self.stats.batch(m, out["batch"])
        self.stats.serving(out["model_version"])
        return out

    def _check_k(self, k: int) -> None:
        if k > self.limits.max_k:
            raise ServiceError(422, f"k={k} is over this service's limit of {self.limits.max_k}", "invalid")

    async def _search(self, req: SearchRequest | GeolocateRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        self._check_k(req.k)
        enc = await self._encode(req.query)
        q, norm = ensemble.mean_query(enc["vectors"])
        targets = [m.value for m in req.targets] if req.targets else None
        filters = req.filters.model_dump(exclude_none=True)
        found = await self._call("retriever", "search", q, enc["model_version"], k=req.k, targets=targets,
                                 filters=filters)  # fmt: skip
        if "error" in found:
            raise ServiceError(found.get("status", 422), found["error"], found.get("reason", "invalid"))
        return enc, ensemble.rescale(found["hits"], norm)

    # -- routes -----------------------------------------------------------------------------------

    @api.post("/v1/embed", response_model=EmbedResponse, responses=_errors(400, 401, 413, 415, 422, 429, 500, 503))
    async def embed(self, request: Request) -> Response:
        """Each modality of the query -> its unit vector in the shared space."""

        async def work() -> dict[str, Any]:
            req = await parse(request, EmbedRequest, self.limits.max_body_bytes, self.offload, self.max_values)
            enc = await self._encode(req.query)
            vectors: dict[str, np.ndarray] = enc["vectors"]
            dim = len(next(iter(vectors.values())))
            return {"model_version": enc["model_version"], "dim": dim, "embeddings": vectors}

        return await self._answer("/v1/embed", request, work)

    @api.post("/v1/search", response_model=SearchResponse, responses=_errors(400, 401, 413, 415, 422, 429, 500, 503))
    async def search(self, request: Request) -> Response:
        """The k gallery rows (of the target modalities) most similar to the query, best first."""

        async def work() -> dict[str, Any]:
            req = await parse(request, SearchRequest, self.limits.max_body_bytes, self.offload, self.max_values)
            enc, hits = await self._search(req)
            return {"model_version": enc["model_version"], "query_modalities": list(enc["vectors"]), "hits": hits}

        return await self._answer("/v1/search", request, work)

    @api.post(
        "/v1/geolocate", response_model=GeolocateResponse, responses=_errors(400, 401, 413, 415, 422, 429, 500, 503)
    )
    async def geolocate(self, request: Request) -> Response:
        """Where the query was taken: the best gallery match's place, a confidence, and the candidates."""

        async def work() -> dict[str, Any]:
            req = await parse(request, GeolocateRequest, self.limits.max_body_bytes, self.offload, self.max_values)
            enc, hits = await self._search(req)
            where = ensemble.geolocate(hits)
            return {"model_version": enc["model_version"], "query_modalities": list(enc["vectors"]), **where,
                    "candidates": hits}  # fmt: skip

        return await self._answer("/v1/geolocate", request, work)

    @api.get("/v1/items/{sample_id}", response_model=ItemSummary, responses=_errors(401, 404, 422, 429, 500, 503))
    async def item_summary(
        self, request: Request, sample_id: str = Path(max_length=128, description="a search hit's sample_id")
    ) -> Response:
        """A stored sample's place, year, text and the modalities it holds."""

        async def work() -> Any:
            return await self._item(sample_id, None, 0)

        return await self._answer("/v1/items", request, work)

    @api.get(
        "/v1/items/{sample_id}/{modality}",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "application/json": {}},
                         "description": "aerial or street: the stored image; dsm: a hillshade PNG; text, coords: JSON"},
                   **_errors(401, 404, 422, 429, 500, 503)},
    )  # fmt: skip
    async def item(
        self,
        request: Request,
        sample_id: str = Path(max_length=128, description="a search hit's sample_id"),
        modality: str = Path(description="aerial, street, dsm, text or coords"),
        view: int = QueryParam(0, ge=0, le=1_000, description="street: which of the sample's views"),
    ) -> Response:
        """One sample's stored content: what a hit points at (read from the service's sample store by id)."""

        async def work() -> Any:
            return await self._item(sample_id, modality, view)

        return await self._answer("/v1/items", request, work)

    async def _item(self, sample_id: str, modality: str | None, view: int) -> Any:
        found = await self._call("retriever", "item", sample_id, modality, view)
        if "error" in found:
            raise ServiceError(found["status"], found["error"], found.get("reason", "invalid"))
        if isinstance(found["body"], dict):
            return found["body"]
        return Response(
            found["body"], media_type=found["media_type"], headers={"Cache-Control": "private, max-age=3600"}
        )

    @api.get("/", response_class=Response, include_in_schema=False)
    async def explorer(self) -> Response:
        """The map explorer's page (it asks for the API key when the service has one)."""
        return self._static_file("index.html")

    @api.get("/explorer.json", include_in_schema=False)
    async def explorer_settings(self) -> dict[str, Any]:
        """What the explorer's page needs to know first: whether to ask for a key, the largest k, whether items read."""
        return {"api_key_required": self.api_key is not None, "max_k": self.limits.max_k,
                "items": self.cfg.store is not None}  # fmt: skip

    @api.get("/static/{name:path}", response_class=Response, include_in_schema=False)
    async def static(self, name: str) -> Response:
        """The explorer's scripts, styles and images, packaged with the library (nothing from a CDN)."""
        return self._static_file(name)

    def _static_file(self, name: str) -> Response:
        path = STATIC_FILES.get(name)
        if path is None:
            return error_response(ServiceError(404, f"no static file {name[:80]!r}: the explorer is at /", "not_found"))
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(path.read_bytes(), media_type=kind, headers={"Cache-Control": "no-cache"})

    @api.get(
        "/tiles/{z}/{x}/{y}.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "a 256 px Web Mercator tile"},
                   **_errors(422, 503)},
    )  # fmt: skip
    async def tile(
        self,
        request: Request,
        z: int = Path(ge=0, le=basemap.MAX_ZOOM),
        x: int = Path(ge=0, le=2**basemap.MAX_ZOOM - 1),
        y: int = Path(ge=0, le=2**basemap.MAX_ZOOM - 1),
    ) -> Response:
        """The explorer's offline base map: a Blue Marble tile (XYZ scheme, zoom 0 to 5; open, no key)."""

        async def work() -> Response:
            png = await self.offload(basemap.tile_png, z, x, y)
            return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

        return await self._answer("/tiles", request, work)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The gateway process answers."""
        return {"status": "ok"}

    @api.get("/readyz", responses=_errors(503))
    async def readyz(self, request: Request) -> Response:
        """Model and store loaded: the encoder and the retriever answer, on the same model version or mid-switch."""

        async def work() -> dict[str, Any]:
            return await self._readiness()

        return await self._answer("/readyz", request, work)

    async def _readiness(self) -> dict[str, Any]:
        """The last readiness answer while it is younger than ``ready_cache_s``; one fan-out refreshes it for every
        probe that waits meanwhile, so probes never multiply calls to the encoder and the retriever."""
        async with self._ready_lock:
            answer, at = self._ready
            if answer is None or time.monotonic() - at > self.cfg.ready_cache_s:
                try:
                    enc, ret = await asyncio.wait_for(
                        asyncio.gather(self._call("encoder", "ready"), self._call("retriever", "ready")), timeout=10
                    )
                    answer = {"status": "ready", "encoder": enc, "retriever": ret}
                except TimeoutError:
                    answer = {"error": "the encoder or the retriever gave no answer in 10 s"}
                except ServiceError as exc:
                    answer = {"error": exc.message}
                self._ready = (answer, time.monotonic())
        if "error" in answer:
            raise ServiceError(503, answer["error"], "unavailable")
        return answer

    @api.get("/metrics", response_class=PlainTextResponse, responses=_errors(401, 429))
    async def metrics(self, request: Request) -> Response:
        """Prometheus text format: this replica's requests, errors, latency per route, encoder batch sizes.

        The service-wide series are Ray's export of the same (``ray_unigeoclip_serve_*``, every node). With a
        scrape token configured, a scraper sends it as ``Authorization: Bearer TOKEN``.
        """
        if self.metrics_token is not None:
            token = self.metrics_token
            try:
                self._authenticate(request, lambda: check_bearer(request, token))
            except ServiceError as exc:
                return error_response(exc)
        return Response(self.stats.render(), media_type=self.stats.content_type)
