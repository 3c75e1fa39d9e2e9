"""The demo's stages (``stages``), each the library call of one ``unigeoclip`` sub-command, on one local Ray, timed.

    ingest (earth) -> train (Ray Train + DeepSpeed) -> embed (LanceDB) -> serve + example requests
    -> evaluate (report) -> shut down

Each stage prints the command a user would type to run it alone. The demo's directory is its
own: the sample store is kept between runs (ingesting again adds nothing), the run, the
embedding store and the report are made afresh.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ...errors import UniGeoCLIPError
from ...obs.progress import clock
from ..console import Console, stop_event, wait_for
from .options import CONFIG, DemoOptions
from .stages import DemoRun, Stages, plan_ingest

DEMO_STAGES = Stages(prepare=plan_ingest)  # the ingest is planned in a process of its own while Ray starts
STAGES = len(DEMO_STAGES.steps) + 1  # and the shut-down


@dataclass
class StageClock:
    """Prints a banner per stage and keeps each stage's wall time."""

    say: Callable[[str], None] = print
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A context that prints the stage's numbered banners and records its wall time in ``seconds``."""
        number = len(self.seconds) + 1
        self.say(f"=== [{number}/{STAGES}] {name} (at {clock(time.perf_counter() - self.started)}) ===")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.say(f"=== [{number}/{STAGES}] {name}: done in {clock(self.seconds[name])} ===")

    def summary(self) -> str:
        """The table of every stage's wall time (minutes and seconds) and the total since the clock started."""
        width = max(len(name) for name in [*self.seconds, "total"])
        rows = [f"  {name:<{width}} {clock(s):>9}" for name, s in self.seconds.items()]
        total = time.perf_counter() - self.started
        return "\n".join(["stage wall times:", *rows, f"  {'total':<{width}} {clock(total):>9}"])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (as uvicorn does: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_demo(
    options: DemoOptions,
    *,
    stages: Stages = DEMO_STAGES,
    say: Callable[[str], None] = print,
    console: Console | None = None,
) -> dict[str, float]:
    """Run every stage in order; returns each stage's wall time in seconds (also written to ``OUT/timings.json``).

    ``console`` (the ``unigeoclip`` command's) gets the run's log file, ``options.log_path``, started afresh
    once the checks have passed. With ``options.keep_serving`` the service a stage left up (``run.left_up``)
    keeps serving after the last stage, until Ctrl-C or SIGTERM; the shut-down stage then stops it.
    """
    import ray

    from ...cluster.runtime import ensure_ray, shutdown
    from ...config import load_config

    if not port_is_free(options.host, options.port):
        raise UniGeoCLIPError(f"port {options.port} on {options.host} is taken: pass another (make demo PORT=8001)")
    run = DemoRun(load_config(CONFIG, overrides=options.overrides()), options, say)
    for stale in (run.run, run.db, run.report):
        shutil.rmtree(stale, ignore_errors=True)
    options.out.mkdir(parents=True, exist_ok=True)
    if console is not None:
        console.route(options.log_path, fresh=True)
    timer = StageClock(say)
    own_ray = not ray.is_initialized()
    finished = False
    try:
        if stages.prepare is not None:
            stages.prepare(run)
        ensure_ray(data_progress=options.verbose)
        for title, stage in stages.steps:
            with timer.stage(title):
                stage(run)
        if run.left_up:
            previous = signal.getsignal(signal.SIGTERM)
            stop = stop_event()  # after ray.init, as `unigeoclip serve` does
            try:
                _finish(run, timer, live=True)
                finished = True
                wait_for(stop)
            finally:
                signal.signal(signal.SIGTERM, previous)
        with timer.stage("shut down"):
            _stop_services(run)
            if own_ray:
                shutdown()
    finally:
        for prepared in run.prepared.values():  # a stage failed before it took what was prepared for it
            prepared.cancel()
        _stop_services(run, raising=False)  # a stage failed: what it raised is the error to show
        if own_ray:
            shutdown()
    (options.out / "timings.json").write_text(json.dumps(timer.seconds, indent=2))
    if not finished:
        _finish(run, timer, live=False)
    return timer.seconds


def _stop_services(run: DemoRun, *, raising: bool = True) -> None:
    """Stop what is left up and wait for what is being stopped; raise the first error of a stop (``raising``)."""
    while run.left_up:
        run.left_up.pop()[1]()
    errors = [error for error in (stopping.wait() for stopping in run.stopping) if error is not None]
    run.stopping.clear()
    if errors and raising:
        raise errors[0]


def _finish(run: DemoRun, timer: StageClock, *, live: bool) -> None:
    """The stage wall times, where everything is, and the map explorer's URL (live or not)."""
    options = run.options
    run.say(timer.summary())
    run.say(f"report: {run.report / 'report.md'}; answers: {options.out / 'examples.json'}; model: {run.model}; "
            f"embeddings: {run.db}")  # fmt: skip
    if live:
        run.say(f"explorer: {run.left_up[-1][0]}/ (live: Ctrl-C or SIGTERM stops the service)")
    else:
        run.say(f"explorer: {options.url}/ (live only with --keep-serving: make demo KEEP_SERVING=1)")
