"""The writer lease on real Lance datasets: races between processes, waiting, expiry, a dead holder, a lost lease."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import threading
import time
from pathlib import Path

import lance
import pytest
from unigeoclip.lease import Lease, LeaseHeld, current_holder, held, lease_uri


def _racer(roots: list[str], barrier: mp.synchronize.Barrier, won: mp.Queue) -> None:  # type: ignore[name-defined]
    for root in roots:
        barrier.wait()
        lease = Lease(root, f"racer {mp.current_process().name}", ttl_s=600)
        if lease.try_acquire() is None:
            won.put((root, lease.token))


def test_of_two_processes_racing_for_each_lease_exactly_one_wins(tmp_path: Path) -> None:
    """Both read the same version and commit; Lance's put-if-absent of the next manifest lets one through."""
    roots = [str(tmp_path / f"db{i}") for i in range(25)]  # half start with no lease dataset, half with a free one
    for root in roots[::2]:
        with held(root, "warm-up"):
            pass
    ctx = mp.get_context("spawn")
    barrier, won = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(roots, barrier, won), name=f"p{i}") for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    winners: dict[str, list[str]] = {}
    while not won.empty():
        root, token = won.get()
        winners.setdefault(root, []).append(token)
    assert {r: len(w) for r, w in winners.items()} == dict.fromkeys(roots, 1), "a lease with no or two holders"
    for root, (token,) in winners.items():  # (the racers have exited: their leases no longer bind)
        (row,) = lance.dataset(lease_uri(root)).to_table().to_pylist()
        assert row["token"] == token


def test_a_held_lease_is_refused_naming_its_holder_then_waited_for(tmp_path: Path) -> None:
    root = str(tmp_path / "db")
    release = threading.Event()

    def first() -> None:
        with held(root, "embed"):
            release.wait(30)

    t = threading.Thread(target=first)
    t.start()
    while current_holder(root) is None:
        time.sleep(0.01)
    refused = r"another run is writing to .*db: embed on .* pid \d+ .*expires in"
    with pytest.raises(LeaseHeld, match=refused), held(root, "reembed"):
        pass
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with held(root, "reembed", wait_s=30, poll_s=0.1) as lease:
        assert time.monotonic() - started >= 0.4, "it waited for the first run to let go"
        assert current_holder(root)["token"] == lease.token  # type: ignore[index]
    t.join()
    assert current_holder(root) is None, "released at the end of the block"


def test_an_expired_lease_is_taken_and_its_old_holder_knows_it_lost_it(tmp_path: Path) -> None:
    root = str(tmp_path / "db")
    old = Lease(root, "paused job", ttl_s=0.3)
    assert old.try_acquire() is None
    assert Lease(root, "next job", ttl_s=60).try_acquire() is not None, "held until it expires"
    time.sleep(0.4)
    new = Lease(root, "next job", ttl_s=60)
    assert new.try_acquire() is None
    assert not old.renew() and old.lost
    old.release()  # not its lease any more: must not free the new holder's
    assert current_holder(root)["token"] == new.token  # type: ignore[index]


def test_a_holder_process_that_died_on_this_host_frees_the_lease_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "db")
    code = f"from unigeoclip.lease import Lease; assert Lease({root!r}, 'killed job', ttl_s=3600).try_acquire() is None"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # exits holding it, as a kill would
    with held(root, "rerun") as lease:
        assert current_holder(root)["token"] == lease.token  # type: ignore[index]
