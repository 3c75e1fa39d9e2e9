"""One writer at a time: a lease with an expiry, held in the database (or sample store) it guards.

The lease is one row in a tiny Lance dataset beside the data, ``ROOT/_leases/writer.lance``, so it
works wherever the data lives (a local disk, NFS, S3, GCS, Azure) with no lock service. Every change
to it is a compare-and-swap: the row is read at version *v*, and the new table is committed as
version *v + 1* with Lance's conflict resolution off (``max_retries=0``). Lance writes a version's
manifest with a put-if-absent (an atomic link on a local disk, a conditional PUT on an object store),
so of two writers that read *v*, exactly one commits; the other re-reads and decides again.

Semantics:

* ``acquire`` takes the lease when it is free, expired, or already this holder's; otherwise it polls
  until ``wait_s`` has passed, then raises :class:`LeaseHeld` naming the holder and its expiry.
* A held lease is renewed every ``ttl_s / 3`` by a background thread. A holder that dies stops
  renewing, and the lease is free ``ttl_s`` after its last renewal (at most): a killed job delays the
  next one, it never blocks it for good. A holder on the same host whose process is gone frees it at
  once (a rerun after a crash on one machine need not wait; a retried pod on another host does).
* A holder whose renewal finds the lease taken (it was paused past ``ttl_s``) has lost it:
  :class:`LeaseLost` is raised when its block ends, so the job fails rather than reporting success.
* Expiry compares wall clocks of different hosts: keep them in sync (NTP) to well under ``ttl_s``.
* Only this module may write the lease dataset: any other commit there (a plain overwrite) could
  erase a held lease.

Measured on pylance 14: 600 two-process races, each with exactly one winner (notes/issue23.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import lance
import pyarrow as pa
from lance.commit import CommitConflictError

from .errors import UniGeoCLIPError

log = logging.getLogger(__name__)
LEASE_DIR = "_leases"
SCHEMA = pa.schema([("holder", pa.string()), ("host", pa.string()), ("pid", pa.int64()), ("token", pa.string()),
                    ("expires_at", pa.float64())])  # fmt: skip
ATTEMPTS = 16  # CAS rounds per decision: each lost round means another writer committed in between


class LeaseHeld(UniGeoCLIPError):
    """Another run holds the lease."""


class LeaseLost(UniGeoCLIPError):
    """This run's lease expired and was taken while it ran: what it wrote may interleave with another run."""


def lease_uri(root: str) -> str:
    """Where the writer lease of ``root`` lives: ``ROOT/_leases/writer.lance``."""
    return f"{str(root).rstrip('/')}/{LEASE_DIR}/writer.lance"


def describe(holder: str, expires_at: float) -> str:
    """The holder and the seconds its lease has left (or that it has expired), for messages."""
    left = expires_at - time.time()
    return f"{holder} (expires in {left:.0f} s)" if left > 0 else f"{holder} (expired)"


def _commit(uri: str, read_version: int, row: dict[str, Any] | None) -> None:
    """Replace the lease table with ``row`` iff nobody committed since ``read_version`` (else CommitConflictError,
    or ``OSError`` when two writers create it)."""
    frags = [lance.fragment.LanceFragment.create(uri, pa.Table.from_pylist([row], SCHEMA))] if row else []
    lance.LanceDataset.commit(uri, lance.LanceOperation.Overwrite(SCHEMA, frags), read_version=read_version,
                              max_retries=0)  # fmt: skip


def _open(uri: str) -> lance.LanceDataset:
    try:
        return lance.dataset(uri)
    except ValueError:  # not there yet: create it empty, as strictly as every other change
        with contextlib.suppress(OSError):  # CommitConflictError is an OSError too: another writer created it first
            _commit(uri, 0, None)
        return lance.dataset(uri)


def _swap(uri: str, decide: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> dict[str, Any] | None:
    """Read the row, ask ``decide`` for its replacement, commit it by CAS (re-reading after a lost round).

    Returns the row committed, or None when ``decide`` declined (returned None) for the row it read."""
    for attempt in range(ATTEMPTS):
        ds = _open(uri)
        rows = ds.to_table().to_pylist()
        current = rows[0] if rows else None
        new = decide(current)
        if new is None:
            return None
        try:
            _commit(uri, ds.version, new)
            return new
        except CommitConflictError:
            time.sleep(0.01 * (attempt + 1))
    raise LeaseHeld(f"the lease at {uri} changed {ATTEMPTS} times while this run tried to take it: retry")


def _alive(row: dict[str, Any]) -> bool:
    """Whether the lease in ``row`` still binds: held, unexpired, and not by a process of this host that is gone."""
    if not row["holder"] or row["expires_at"] <= time.time():
        return False
    if row["host"] == socket.gethostname():
        try:
            os.kill(row["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
    return True


def current_holder(root: str) -> dict[str, Any] | None:
    """The row of the lease at ``root`` while it binds (see :func:`_alive`), else None."""
    rows = _open(lease_uri(root)).to_table().to_pylist()
    return rows[0] if rows and _alive(rows[0]) else None


@dataclass
class Lease:
    """A held lease; see the module docstring. Use :func:`held` rather than these methods where you can."""

    root: str
    holder: str
    ttl_s: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lost: bool = False

    @property
    def uri(self) -> str:
        """The lease dataset's URI under ``root``."""
        return lease_uri(self.root)

    def _mine(self, row: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
        return row is not None and row["token"] == self.token

    def _row(self) -> dict[str, Any]:
        return {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "expires_at": time.time() + self.ttl_s}  # fmt: skip

    def try_acquire(self) -> dict[str, Any] | None:
        """None when taken; else the row of the run that holds it."""
        seen: list[dict[str, Any]] = []

        def decide(row: dict[str, Any] | None) -> dict[str, Any] | None:
            seen[:] = [row] if row else []
            if row and _alive(row) and not self._mine(row):
                return None
            return self._row()

        return None if _swap(self.uri, decide) is not None else seen[0]

    def renew(self) -> bool:
        """Push the expiry ``ttl_s`` on; False (and ``lost``) when the lease is no longer this run's."""
        renewed = _swap(self.uri, lambda row: {**row, "expires_at": time.time() + self.ttl_s}
                        if self._mine(row) else None)  # fmt: skip
        self.lost = self.lost or renewed is None
        return renewed is not None

    def release(self) -> None:
        """Give the lease up if it is still this run's, then prune the lease dataset's versions older than an hour."""
        _swap(self.uri, lambda row: {**row, "holder": "", "token": "", "expires_at": 0.0} if self._mine(row) else None)
        try:  # every change is a version: keep the lease dataset small
            lance.dataset(self.uri).cleanup_old_versions(older_than=timedelta(hours=1))
        except (OSError, RuntimeError) as exc:  # another writer's commit raced the clean-up: the next one does it
            log.info("lease clean-up of %s skipped: %s", self.uri, exc)


def holder_name(job: str) -> str:
    """Who holds the lease, for people reading it: ``job``, host, pid and the UTC start time."""
    return f"{job} on {socket.gethostname()} pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


@contextmanager
def held(root: str, job: str, *, ttl_s: float = 300.0, wait_s: float = 0.0, poll_s: float = 5.0) -> Iterator[Lease]:
    """Hold the writer lease of ``root`` (a LanceDB directory or a sample store) for the block's duration.

    Waits up to ``wait_s`` for another holder, then raises :class:`LeaseHeld` naming it; renews every
    ``ttl_s / 3`` meanwhile; releases at the end, and raises :class:`LeaseLost` if it was lost meanwhile.
    """
    lease = Lease(str(root).rstrip("/"), holder_name(job), ttl_s)
    deadline = time.monotonic() + wait_s
    while (other := lease.try_acquire()) is not None:
        if time.monotonic() >= deadline:
            raise LeaseHeld(
                f"another run is writing to {lease.root}: {describe(other['holder'], other['expires_at'])}. Wait "
                f"for it to finish, or pass --wait-for-lease SECONDS; a run that died frees it when it expires"
            )
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())) or poll_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            if not lease.renew():
                log.error("the writer lease of %s was lost (this run was paused past %s s)", lease.root, ttl_s)
                return

    renewer = threading.Thread(target=renew, name="lease-renew", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        if not lease.lost:
            lease.release()
    if lease.lost:
        raise LeaseLost(
            f"this run's writer lease of {lease.root} expired and another run took it while this one was paused: "
            "check the data it wrote and run it again"
        )
