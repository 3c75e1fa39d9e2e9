"""A gateway replica's bounded pool for the CPU work of a request: JSON validation and input decoding.

The event loop only moves bytes and awaits: parsing an 8 MiB JSON body or decoding a large image there
would hold every other request, ``/healthz`` included. ``Offload`` runs that work in ``workers``
threads (Pillow, NumPy and pydantic-core release the GIL for most of it) and admits at most
``workers + queue`` jobs at once; one more is refused at once with a 503 and ``Retry-After`` (load
shedding), instead of waiting behind a queue that only grows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .config import RETRY_AFTER_S
from .requests import ServiceError

T = TypeVar("T")


class Offload:
    """A bounded thread pool for decoding off the event loop: refuses with 503 past workers + queue."""

    def __init__(self, workers: int, queue: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self.capacity = workers + queue
        self.running = 0

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run in the pool and awaited; a 503 :class:`ServiceError` past ``workers + queue`` at once."""
        if self.running >= self.capacity:  # checked and counted on the loop thread: no race
            raise ServiceError(
                503, f"the server is decoding {self.running} requests, its limit: retry in {RETRY_AFTER_S} s",
                "overloaded", headers={"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.running -= 1
