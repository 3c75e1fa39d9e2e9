"""A job's own progress lines: how far a long step is (counts, rate, ETA), for whoever runs it to print.

The library logs them at INFO on the ``unigeoclip.progress`` logger and does no printing itself: the
``unigeoclip`` command shows them on its console (``app.console``), while Ray's, Ray Data's, DeepSpeed's
and Serve's own output goes to the run's log file. Library callers that configure no logging see only
the warnings (Python's last-resort handler prints WARNING and above).

Lines are plain text (no carriage returns or bars), so they read the same in a terminal, in CI logs and
in ``ray job logs``: a :class:`Rate` prints its first line ``first_s`` seconds into the work (a rate and an
ETA to go by) and then one every ``every_s``; the step's own summary says how it ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PROGRESS_LOGGER = "unigeoclip.progress"
log = logging.getLogger(PROGRESS_LOGGER)


def say(text: str) -> None:
    """One progress line (INFO on ``unigeoclip.progress``)."""
    log.info(text)


def warn(text: str) -> None:
    """A line that must reach the console even where nothing is configured (WARNING on ``unigeoclip.progress``)."""
    log.warning(text)


def clock(seconds: float) -> str:
    """``"5 m 04 s"``: whole minutes and seconds (hours stay minutes: ``"75 m 00 s"``)."""
    minutes, rest = divmod(round(max(seconds, 0.0)), 60)
    return f"{minutes} m {rest:02d} s"


class Rate:
    """How far one counted step is: ``"ingest: 2,966/10,128 items (29%) | 29.3 items/s | eta 4 m 04 s"``.

    ``update(done)`` prints a line when one is due: the first ``first_s`` seconds after the first units
    were done, then at most one every ``every_s``. The rate is measured from those first units on, so
    the start-up before them (actors loading models and rasters) does not drag the ETA; ``total=None``
    prints counts and rate only. ``from_start=True`` counts ``first_s`` and the rate from the ``Rate``'s
    creation instead, for a step of a few slow units whose start-up is the wait (deployments coming up):
    its first line shows up even while nothing is done yet.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str,
        *,
        first_s: float = 10.0,
        every_s: float = 60.0,
        from_start: bool = False,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.first_s, self.every_s, self.clock_s = first_s, every_s, clock_s
        # when the rate is counted from, and how many units were done then
        self.base: tuple[float, int] | None = (clock_s(), 0) if from_start else None
        self.last: float | None = None  # when the last line was printed
        self.lines = 0

    def line(self, done: int, extra: str = "") -> str:
        """The progress line for ``done`` units now (``extra`` is appended as one more field)."""
        fields = [f"{self.what}: {done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"]
        if self.total:
            fields[0] += f" ({100 * done / self.total:.0f}%)"
        if self.base is not None and done > self.base[1]:
            rate = (done - self.base[1]) / max(self.clock_s() - self.base[0], 1e-9)
            fields.append(f"{rate:.1f} {self.unit}/s")
            if self.total:
                fields.append(f"eta {clock((self.total - done) / rate)}")
        return " | ".join(fields + ([extra] if extra else []))

    def update(self, done: int, extra: str = "") -> None:
        """Print the line for ``done`` units if one is due (never before anything is done, unless ``from_start``)."""
        now = self.clock_s()
        if self.base is None:
            if done > 0:
                self.base = (now, done)
            return
        since = now - (self.base[0] if self.last is None else self.last)
        if since >= (self.first_s if self.last is None else self.every_s):
            self.last = now
            self.lines += 1
            say(self.line(done, extra))


@contextmanager
def beside(name: str, loop: Callable[[threading.Event], None], *, join_s: float) -> Iterator[None]:
    """While the block runs, ``loop(stop)`` runs in a daemon thread; ``stop`` is set when the block ends, and
    the thread is waited for up to ``join_s`` seconds."""
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(stop,), name=f"unigeoclip-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=join_s)


@contextmanager
def polled(rate: Rate, read: Callable[[], tuple[int, str]], *, every_s: float = 2.0) -> Iterator[None]:
    """While the block runs, a thread calls ``read()`` (-> ``(done, extra)``) every ``every_s`` and updates ``rate``.

    For a step that blocks the calling thread (a Ray Data write) and keeps its count elsewhere (an
    actor). An error in ``read`` ends the lines with a warning and its traceback, never the step.
    """

    def poll(stop: threading.Event) -> None:
        while not stop.wait(every_s):
            try:
                done, extra = read()
            except Exception:  # the count is for the eyes only: a failed read ends the lines, not the job
                log.warning("%s: no more progress lines (reading the count failed)", rate.what, exc_info=True)
                return
            rate.update(done, extra)

    with beside(f"progress-{rate.what}", poll, join_s=every_s + 5):
        yield
