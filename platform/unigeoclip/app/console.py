"""The ``unigeoclip`` command's console: its own lines on stdout, what Ray and the libraries print in a log file.

A command's console shows its progress lines, summaries and errors (the ``unigeoclip.progress``
logger, see :mod:`unigeoclip.obs.progress`, and any library warning). Once the command starts its
work (:meth:`Console.route`), everything else this process prints goes to the run's log file
instead: file descriptors 1 and 2 themselves point there, so the log holds what Ray forwards from
its workers (Ray Train's, DeepSpeed's and Serve's actors, ``log_to_driver``), the raylet's notices,
Ray's and Ray Data's loggers, Python warnings and the C++ core worker's lines alike, and so do the
processes a local Ray starts from here. It is one switch rather than a filter per message: the
benign lines (Ray Data's progress blocks, "N PYTHON worker processes have been started ... the
maximum expected startup concurrency", "constructor arguments in the object store and
max_restarts > 0", Serve's throughput banner and its controller's "graceful_shutdown failed ...
killed by ray.kill" at every shutdown, Ray Train's DatasetManager deprecation warning) come from
Ray's own code, which this project cannot change; whatever a failure leaves there is one path away,
printed at the start and next to the error. ``--verbose`` leaves them on the console, as Ray
prints them, and writes no log file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from ..obs.progress import PROGRESS_LOGGER, say

LIBRARY_LOGGER = "unigeoclip"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_log_file(root: str | Path | None, command: str) -> Path:
    """``ROOT/logs/unigeoclip-<command>.log`` beside a local output directory (the sample store, the LanceDB
    and the run directories ignore the folder); for an object-store URI or none, a file in the temp directory."""
    if root is not None and "://" not in str(root):
        return Path(root) / "logs" / f"unigeoclip-{command}.log"
    return Path(tempfile.gettempdir()) / "unigeoclip-logs" / f"{command}-{time.strftime('%Y%m%dT%H%M%S')}.log"


def _open_log(path: Path, *, fresh: bool) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w" if fresh else "a", buffering=1, encoding="utf-8")  # closed by Console.close


class _ForTheConsole(logging.Filter):
    """Progress lines, and any library warning or error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == PROGRESS_LOGGER or record.levelno >= logging.WARNING


class Console:
    """One command's console and log file (see the module docstring); ``close`` puts the process back as it was."""

    def __init__(self, command: str, *, verbose: bool = False) -> None:
        self.command, self.verbose = command, verbose
        self.log_file: Path | None = None
        self._log: TextIO | None = None
        self._streams: list[TextIO] = []  # the console made here (on a duplicate of fd 1), closed by close()
        self._saved_fds: dict[int, int] = {}
        self._logger = logging.getLogger(LIBRARY_LOGGER)
        self._saved_logger = (self._logger.level, self._logger.propagate)
        self._out: TextIO = sys.stdout
        self._to_console = logging.StreamHandler(self._out)
        self._to_console.addFilter(_ForTheConsole())
        self._to_console.setFormatter(logging.Formatter("%(message)s"))
        self._to_file: logging.Handler | None = None
        self._logger.addHandler(self._to_console)
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False  # its records are shown here and filed below, not again by the root's handlers

    def say(self, text: str) -> None:
        """A line for the console (and the log file)."""
        say(text)

    def route(self, log_file: Path, *, fresh: bool = False) -> Path:
        """From now on, this process's output other than the console's goes to ``log_file`` (appended to,
        or started afresh with ``fresh``); prints its path. With ``verbose``, nothing moves and no file is
        written. Returns ``log_file``."""
        if self.verbose or self._log is not None:
            return log_file
        try:
            self._log = _open_log(log_file, fresh=fresh)
        except OSError as exc:  # e.g. a cluster path this machine cannot write: the output still needs a home
            fallback = default_log_file(None, self.command)
            say(f"cannot write the log file {log_file} ({exc.strerror}): using {fallback}")
            log_file, self._log = fallback, _open_log(fallback, fresh=fresh)
        self._log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} unigeoclip {self.command} (pid {os.getpid()})\n")
        self.log_file = log_file
        say(f"log: {log_file} (Ray, Ray Data, Ray Train, DeepSpeed and Serve; --verbose shows them here)")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._out = self._detached(sys.stdout, 1)
        self._to_console.setStream(self._out)
        self._to_file = logging.StreamHandler(self._log)
        self._to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        self._logger.addHandler(self._to_file)
        for fd in (1, 2):
            self._saved_fds[fd] = os.dup(fd)
            os.dup2(self._log.fileno(), fd)
        return log_file

    def _detached(self, stream: TextIO, fd: int) -> TextIO:
        """``stream`` if it does not write to ``fd`` (a test's capture), else a new stream on a duplicate of ``fd``."""
        try:
            on_fd = stream.fileno() == fd
        except (AttributeError, OSError, io.UnsupportedOperation):
            on_fd = False
        if not on_fd:
            return stream
        copy = open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",  # noqa: SIM115
                    errors="backslashreplace")  # fmt: skip
        self._streams.append(copy)
        return copy

    def filed(self, text: str) -> None:
        """Write ``text`` to the log file only (an error's full message, before it is printed on stderr)."""
        if self._log is not None:
            self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR {LIBRARY_LOGGER}: {text}\n")

    def error_hint(self) -> str:
        """Where to look after an error: ``"\\n  log: PATH"``, or nothing without a log file."""
        return f"\n  log of Ray and the libraries: {self.log_file}" if self.log_file else ""

    def close(self) -> None:
        """Restore stdout, stderr and the ``unigeoclip`` logger; close the log file (idempotent)."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a stream closed under us: nothing left to flush
                stream.flush()
        for fd, saved in self._saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._saved_fds.clear()
        self._logger.removeHandler(self._to_console)
        if self._to_file is not None:
            self._logger.removeHandler(self._to_file)
            self._to_file = None
        self._logger.setLevel(self._saved_logger[0])
        self._logger.propagate = self._saved_logger[1]
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_event() -> threading.Event:
    """An event that SIGTERM (a service manager's stop, or a pod's) sets from now on; install it after
    ``ray.init``, which installs its own handler."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def wait_for(stop: threading.Event) -> None:
    """Block until ``stop`` is set (:func:`stop_event`) or Ctrl-C."""
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
