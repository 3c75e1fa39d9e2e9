"""HTTP request handling that does not depend on Ray: body limits, JSON or multipart parsing, error bodies, API key.

Every refusal is a :class:`ServiceError` with a 4xx status and a message that says what was
wrong; the gateway turns it into ``{"error": ..., "status": ...}``.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import UniGeoCLIPError
from .schemas import MODALITY_NAMES

M = TypeVar("M", bound=BaseModel)
API_KEY_HEADER = "x-api-key"
UPLOAD_FIELDS = ("aerial", "street", "dsm")  # multipart file fields; everything else goes in the "request" field


class ServiceError(UniGeoCLIPError):
    """A request the service refuses: ``status`` (4xx, or 503 while a replica restarts) and the reason."""

    def __init__(
        self, status: int, message: str, reason: str = "bad_request", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def json_response(payload: Any, status: int = 200) -> Response:
    """``payload`` as an ``application/json`` response (serialised by orjson, NumPy arrays included)."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def error_response(exc: ServiceError, request_id: str | None = None) -> Response:
    """``{"error", "status"}``; a 5xx also carries the ``request_id`` its log lines are filed under."""
    body: dict[str, Any] = {"error": exc.message, "status": exc.status}
    if exc.status >= 500 and request_id is not None:
        body["request_id"] = request_id
    response = json_response(body, exc.status)
    response.headers.update(exc.headers)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'ApiKey header="X-API-Key"'
    return response


def check_api_key(request: Request, expected: str | None) -> None:
    """Refuse with 401 a missing or wrong ``X-API-Key`` (constant-time compare); ``expected`` None: no key needed."""
    if expected is None:
        return
    got = request.headers.get(API_KEY_HEADER)
    if got is None:
        raise ServiceError(401, "this service needs an API key: send it in the X-API-Key header", "unauthorized")
    if not hmac.compare_digest(got.encode(), expected.encode()):
        raise ServiceError(401, "the API key in X-API-Key is not valid", "unauthorized")


def check_bearer(request: Request, expected: str) -> None:
    """``Authorization: Bearer <expected>`` (Prometheus's ``authorization``), compared in constant time."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ServiceError(401, "this endpoint needs the scrape token: send Authorization: Bearer TOKEN",
                           "unauthorized")  # fmt: skip
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ServiceError(401, "the scrape token in Authorization is not valid", "unauthorized")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ServiceError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise ServiceError(413, f"request body of {size} bytes is over the limit of {limit} bytes", "too_large")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ServiceError(413, f"request body is over the limit of {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as one line per problem, ``where: what``; unknown query keys named as modalities."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "body"
        if err["type"] == "extra_forbidden" and len(loc) == 2 and loc[0] == "query":
            lines.append(f"unknown modality {loc[1]!r} in query; expected one of: {', '.join(MODALITY_NAMES)}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"unknown field {where!r}")
        elif err["type"] == "json_invalid":
            lines.append(f"the body is not valid JSON ({err['msg']})")
        else:
            lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines[:10]) + (f"; and {len(lines) - 10} more" if len(lines) > 10 else "")


def validate(model: type[M], data: bytes | dict[str, Any]) -> M:
    """``data`` (raw JSON bytes or a dict) validated strictly as ``model``: 400 for bad or empty JSON, else 422."""
    try:
        if isinstance(data, bytes | bytearray):
            if not data.strip():
                raise ServiceError(400, f"empty body: send a JSON {model.__name__} object", "bad_json")
            return model.model_validate_json(data)
        return model.model_validate_json(orjson.dumps(data))  # one (strict, JSON) mode for both forms of a body
    except ValidationError as exc:
        broken = any(e["type"] == "json_invalid" for e in exc.errors())
        raise ServiceError(400 if broken else 422, describe(exc), "bad_json" if broken else "invalid") from None


async def parse_multipart(request: Request, body: bytes, max_bytes: int) -> dict[str, Any]:
    """``request`` (a JSON text field) plus file fields ``aerial``, ``street``, ``dsm`` (GeoTIFF) -> a request dict.

    Uploaded files join the query as the base64 inputs a JSON client would send, so both forms
    meet the same validation.
    """
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        n = len(UPLOAD_FIELDS)
        form = await replay.form(max_files=n, max_fields=n + 1, max_part_size=max_bytes)
    except Exception as exc:  # starlette raises its own MultiPartException / HTTPException for malformed forms
        raise ServiceError(400, f"malformed multipart body ({exc})", "bad_multipart") from None
    data: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key == "request":
            if not isinstance(value, str):
                raise ServiceError(422, "the 'request' field must be a text field holding JSON", "invalid")
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ServiceError(400, f"the 'request' field is not valid JSON ({exc})", "bad_json") from None
            if not isinstance(data, dict):
                raise ServiceError(422, "the 'request' field must hold a JSON object", "invalid")
    query = data.setdefault("query", {})
    if not isinstance(query, dict):
        raise ServiceError(422, "query must be an object", "invalid")
    for key, value in form.multi_items():
        if key == "request":
            continue
        if key not in UPLOAD_FIELDS:
            raise ServiceError(422, f"unknown multipart field {key!r}: use 'request' (JSON) and files "
                                    f"{', '.join(UPLOAD_FIELDS)}", "invalid")  # fmt: skip
        if isinstance(value, str):
            raise ServiceError(422, f"multipart field {key!r} must be a file upload", "invalid")
        slot = "geotiff_b64" if key == "dsm" else "image_b64"
        if key in query and (not isinstance(query[key], dict) or slot in query[key]):
            where = f"query.{key}" if not isinstance(query[key], dict) else f"query.{key}.{slot}"
            raise ServiceError(422, f"{where} is given both as JSON and as an upload: send one", "invalid")
        encoded = base64.b64encode(await value.read()).decode()
        query[key] = {**query.get(key, {}), slot: encoded}
    return data


async def parse(
    request: Request,
    model: type[M],
    max_bytes: int,
    offload: Callable[..., Awaitable[Any]] | None = None,
    max_values: int | None = None,
) -> M:
    """The request body as ``model``: JSON, or multipart with uploads; 400/413/415/422 otherwise.

    ``offload(fn, *args)`` runs the validation (the CPU part) off the event loop (:class:`.offload.Offload`).
    ``max_values`` bounds a JSON body's array values (a DSM's heights above all) before anything is parsed:
    the number of commas is an upper bound of them, counted in C over the raw bytes.
    """

    async def run(data: bytes | dict[str, Any]) -> M:
        if offload is None:
            return validate(model, data)
        result: M = await offload(validate, model, data)
        return result

    body = await read_body(request, max_bytes)
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind in ("application/json", ""):
        if max_values is not None and body.count(b",") > max_values:
            raise ServiceError(413, f"the body holds more than {max_values} values (a DSM of at most the "
                               "service's max_dsm_pixels, and little else): send fewer", "too_large")  # fmt: skip
        return await run(body)
    if kind == "multipart/form-data":
        return await run(await parse_multipart(request, body, max_bytes))
    raise ServiceError(415, f"content type {kind!r} is not accepted: send application/json or multipart/form-data",
                       "unsupported_media")  # fmt: skip
