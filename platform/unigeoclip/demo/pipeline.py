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
from pathlib import Path
from typing import Any

from ..config import parse_overrides
from ..errors import UniGeoCLIPError
from .stages import CONFIG, DemoRun, Stages

DEMO_STAGES = Stages()
STAGES = len(DEMO_STAGES.steps) + 1  # and the shut-down


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo writes and how big it is (None: the ``earth`` preset's full size)."""

    out: Path = Path("data/demo")
    places: int | None = None
    landscape: int | None = None  # cap on the preset's landscape samples (None: all of them)
    steps: int | None = None
    probe_points: int = 5000
    host: str = "127.0.0.1"
    port: int = 8000

    @classmethod
    def quick(cls, out: Path, **kwargs: Any) -> DemoOptions:
        """The smoke run: 400 places and 400 landscape samples, 30 steps (a few minutes; the model learns little)."""
        return cls(out=out, places=400, landscape=400, steps=30, probe_points=400, **kwargs)

    def config_sets(self) -> list[str]:
        """``--set`` arguments shared by every stage (the store and the model must agree on the config)."""
        sets = ["--set", f"data.sources.earth.max_places={self.places}"] if self.places else []
        return sets + (["--set", f"data.sources.earth.landscape_max={self.landscape}"] if self.landscape else [])

    def train_args(self) -> list[str]:
        if self.steps is None:
            return []
        every = str(self.steps)  # validate and checkpoint once, at the end
        return ["--steps", every, "--set", f"train.val_every={every}", "--set", f"train.ckpt_every={every}"]

    def overrides(self) -> dict[str, Any]:
        """The printed ``--set`` and ``--steps`` arguments as the config overrides the stages run with."""
        args = self.config_sets() + self.train_args()
        pairs = list(zip(args[::2], args[1::2], strict=True))
        out = parse_overrides([value for flag, value in pairs if flag == "--set"])
        if self.steps is not None:
            out.setdefault("train", {})["steps"] = self.steps
        return out


@dataclass
class StageClock:
    """Prints a banner per stage and keeps each stage's wall time."""

    say: Callable[[str], None] = print
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        number = len(self.seconds) + 1
        self.say(f"\n=== [{number}/{STAGES}] {name} (at {_clock(time.perf_counter() - self.started)}) ===")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.say(f"=== [{number}/{STAGES}] {name}: done in {_clock(self.seconds[name])} ===")

    def summary(self) -> str:
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

    from ..config import load_config
    from ..runtime import ensure_ray, shutdown

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
