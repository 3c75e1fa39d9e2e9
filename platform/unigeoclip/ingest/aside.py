"""A source's plan made in a process of its own, while this one starts Ray.

Planning is the driver's own work before any extraction (the earth source parses GeoNames and
thins its places: seconds), and ``ray.init`` spends most of its time waiting for the processes it
starts. In a thread beside ``ray.init`` the plan only takes the GIL from it (both took as long as
one after the other; notes/issue25.md), so :class:`PlanAside` plans in a fresh interpreter on the
other core (``python -m unigeoclip.ingest.aside``: never a re-import of the caller's ``__main__``,
as multiprocessing's spawn would do). That process hands back the items and the package data it
read (``geodata.once``: GeoNames' points), which this process adopts, so later work here (the
evaluation's population target) does not read them again.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import traceback
from typing import Any

from ..errors import UniGeoCLIPError
from ..geodata import once
from ..sources.base import Source


class PlanAside:
    """``source.plan()`` started at once in a process of its own; :meth:`items` waits for it."""

    def __init__(self, source: Source) -> None:
        self.source = source
        # stdin: the pickled source; stdout: the pickled outcome; stderr: this process's (the command's log)
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )  # fmt: skip
        assert self._process.stdin is not None
        with self._process.stdin as pipe:  # this process's import path first, so the source unpickles there too
            pipe.write(pickle.dumps(sys.path) + pickle.dumps(source))

    def items(self) -> list[dict[str, Any]]:
        """The plan, or what planning raised, raised here; this process adopts the package data it read."""
        assert self._process.stdout is not None
        with self._process.stdout as pipe:
            outcome = pipe.read()
        code = self._process.wait()
        if code != 0 or not outcome:
            raise UniGeoCLIPError(
                f"planning the {self.source.name} source in a process of its own failed (exit code {code}): its "
                "error is above, or in the command's log file"
            )
        kind, value, read = pickle.loads(outcome)
        if kind == "error":
            raise value
        once.adopt(once.known(read))  # a loader the plan imported that this process never did: not needed here
        return list(value)

    def cancel(self) -> None:
        """Stop planning: nothing will ask for the plan (the run failed before it did)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def _main() -> None:
    """The planning process: a pickled source on stdin -> ``("items", plan, once values)`` or ``("error", exc,
    None)`` pickled on stdout."""
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever planning prints goes to stderr, never into the result
    sys.path[:] = pickle.load(sys.stdin.buffer)
    source = pickle.load(sys.stdin.buffer)
    try:
        outcome: tuple[str, Any, Any] = ("items", source.plan(), once.held_values())
    except Exception as exc:  # handed over whole: the caller raises it as the source raised it
        if not isinstance(exc, UniGeoCLIPError):  # a bug: where it happened, since the traceback stays here
            exc.add_note(f"(planning in a process of its own)\n{traceback.format_exc()}")
        outcome = ("error", exc, None)
    with result:
        pickle.dump(outcome, result)


if __name__ == "__main__":
    _main()
