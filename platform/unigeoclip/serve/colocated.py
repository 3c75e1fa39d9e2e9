"""The encoder and the retriever inside the gateway's own process (``ServeConfig.colocate``).

``InProcess(obj).method.remote(...)`` is awaitable like a ``DeploymentHandle`` call, so the
gateway's code is the same in both topologies. A coroutine method is awaited on the gateway's
event loop (the encoder's ``@serve.batch`` still batches concurrent requests; the retriever's
search picks loop or thread itself); a plain method runs in a worker thread (LanceDB and numpy
release the GIL), so it never blocks the loop. On one machine this saves the two Ray hops of a
request, which cost more than the route's own work on a small CPU host (``benchmarks/serve_floor.py``
measures them; docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any


class InProcess:
    """A deployment's object called in this process through the handle interface: ``.method.remote(...)``."""

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self._target, name))


class _Method:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        if inspect.iscoroutinefunction(self._fn):
            result: Awaitable[Any] = self._fn(*args, **kwargs)
            return result
        return asyncio.to_thread(self._fn, *args, **kwargs)
