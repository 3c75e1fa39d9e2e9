"""A lean keep-alive HTTP/1.1 client for the serve benchmarks: so the client's own CPU is not counted as the service's.

On this 2-core machine ``httpx.AsyncClient`` spends ~1-1.4 ms of Python per request (an empty
uvicorn route: p50 ~1.0-1.5 ms through httpx against ~0.15-0.25 ms through this client), time
that lands in every latency the bench reports and competes with the server for the same
cores. Load generators in this field (wrk, hey, k6) are lean in the same way. This client
speaks only what the benches need: ``POST`` of a JSON body on one kept-alive connection, and a
response framed by ``Content-Length`` (what Serve's ingress, HAProxy or not, sends for these
routes); anything else is an error, never silently misread.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import orjson


class LoopbackClient:
    """One kept-alive connection to ``url``; ``await post(path, obj)`` -> ``(status, body bytes)``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://HOST:PORT[/PREFIX], got {url!r}")
        self.host, self.port, self.prefix = parts.hostname, parts.port, parts.path.rstrip("/")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> LoopbackClient:
        await self._connect()
        return self

    async def _connect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def post(self, path: str, obj: Any) -> tuple[int, bytes]:
        """One request; sent again once on a new connection if the server had closed the kept-alive one.

        A proxy may close idle connections when it reloads (HAProxy does as Serve deploys); a
        second close, or one after part of a response, is an error.
        """
        body = orjson.dumps(obj)
        head = (f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        request = head.encode() + body
        try:
            return await self._exchange(path, request)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            await self._connect()
            return await self._exchange(path, request)

    async def _exchange(self, path: str, request: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            raise RuntimeError("use the client as `async with LoopbackClient(url) as client`")
        self._writer.write(request)
        status_line, _, headers = (await self._reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError(f"{path}: {value.strip().decode()} framing: this client reads Content-Length only")
        if length is None:
            raise RuntimeError(f"{path}: the response has no Content-Length; this client cannot frame it")
        return status, await self._reader.readexactly(length)
