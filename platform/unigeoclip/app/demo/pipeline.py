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
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ...errors import UniGeoCLIPError
from .options import CONFIG, DemoOptions
from .stages import DemoRun, Stages

DEMO_STAGES = Stages()
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
        self.say(f"\n=== [{number}/{STAGES}] {name} (at {_clock(time.perf_counter() - self.started)}) ===")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.say(f"=== [{number}/{STAGES}] {name}: done in {_clock(self.seconds[name])} ===")

    def summary(self) -> str:
        """The table of every stage's wall time (minutes and seconds) and the total since the clock started."""
        rows = [f"  {name:<42} {_clock(s):>8}" for name, s in self.seconds.items()]
        total = time.perf_counter() - self.started
        return "\n".join(["stage wall times:", *rows, f"  {'total':<42} {_clock(total):>8}"])


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} m {rest:02d} s"


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (as uvicorn does: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_demo(options: DemoOptions, *, stages: Stages = DEMO_STAGES, say: Callable[[str], None] = print
             ) -> dict[str, float]:  # fmt: skip
    """Run every stage in order; returns each stage's wall time in seconds (also written to ``OUT/timings.json``)."""
    import ray

    from ...cluster.runtime import ensure_ray, shutdown
    from ...config import load_config

    if not port_is_free(options.host, options.port):
        raise UniGeoCLIPError(f"port {options.port} on {options.host} is taken: pass another (make demo PORT=8001)")
    run = DemoRun(load_config(CONFIG, overrides=options.overrides()), options, say)
    for stale in (run.run, run.db, run.report):
        shutil.rmtree(stale, ignore_errors=True)
    clock = StageClock(say)
    own_ray = not ray.is_initialized()
    ensure_ray()
    try:
        for title, stage in stages.steps:
            with clock.stage(title):
                stage(run)
        with clock.stage("shut down"):
            if own_ray:
                shutdown()
    finally:
        if own_ray:
            shutdown()
    say("\n" + clock.summary())
    (options.out / "timings.json").write_text(json.dumps(clock.seconds, indent=2))
    say(f"report: {run.report / 'report.md'}; answers: {options.out / 'examples.json'}; model: {run.model}; "
        f"embeddings: {run.db}")  # fmt: skip
    return clock.seconds
