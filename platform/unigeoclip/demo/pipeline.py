"""The demo's stages, each the code of one ``unigeoclip`` sub-command, on one local Ray, timed.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UniGeoCLIPError

CONFIG = "earth"
STAGES = 6


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


# Runs one ``unigeoclip`` sub-command in this process from its argv and returns its exit code: the CLI's
# ``main``, handed in by the caller so that this layer never imports the CLI above it.
Command = Callable[[list[str]], int]


def _command(run: Command, argv: Sequence[str], say: Callable[[str], None]) -> None:
    """Run one sub-command in this process (on the Ray this demo holds), as ``unigeoclip ARGV`` would."""
    say("$ unigeoclip " + " ".join(argv))
    code = run(list(argv))
    if code != 0:
        raise UniGeoCLIPError(f"`unigeoclip {argv[0]}` failed (exit {code}); its error is printed above")


def run_demo(options: DemoOptions, *, command: Command, say: Callable[[str], None] = print) -> dict[str, float]:
    """Run every stage through ``command`` (``unigeoclip.cli.main``); returns each stage's wall time in seconds
    (also written to ``OUT/timings.json``)."""
    import ray
    from ray import serve

    from ..data.store import SampleStore
    from ..runtime import ensure_ray, shutdown
    from ..serve import ServeConfig, start_service
    from .examples import run_examples, wait_until_ready

    if not port_is_free(options.host, options.port):
        raise UniGeoCLIPError(f"port {options.port} on {options.host} is taken: pass another (make demo PORT=8001)")
    out = options.out
    store, run, db, report = out / "store", out / "run", out / "embeddings", out / "report"
    for stale in (run, db, report):
        shutil.rmtree(stale, ignore_errors=True)
    sets = options.config_sets()
    clock = StageClock(say)
    own_ray = not ray.is_initialized()
    ensure_ray()
    try:
        with clock.stage("ingest the real-Earth sample (Ray Data -> Lance)"):
            _command(command, ["ingest", "--source", "earth", "--store", str(store), "--config", CONFIG, *sets], say)
        with clock.stage("train (Ray Train + DeepSpeed, CPU workers)"):
            steps = options.train_args()
            _command(
                command, ["train", "--store", str(store), "--out", str(run), "--config", CONFIG, *steps, *sets], say
            )
        with clock.stage("embed into LanceDB"):
            _command(command, ["embed", "--model", str(run / "model"), "--store", str(store), "--db", str(db)], say)
        with clock.stage("serve (Ray Serve) and ask it"):
            say(f"$ unigeoclip serve --db {db} --port {options.port}")
            url = start_service(ServeConfig(db=str(db)), host=options.host, port=options.port, log_level="WARNING")
            try:
                say(f"ready: {wait_until_ready(url)}")
                answers = run_examples(url, SampleStore(store), say)
                (out / "examples.json").write_text(json.dumps([asdict(a) for a in answers], indent=1))
            finally:
                serve.shutdown()
        with clock.stage("evaluate (report with tables and pictures)"):
            probe = ["--probe-points", str(options.probe_points)]
            _command(command, ["evaluate", "--model", str(run / "model"), "--store", str(store), "--db", str(db),
                      "--out", str(report), *probe], say)  # fmt: skip
        with clock.stage("shut down"):
            if own_ray:
                shutdown()
    finally:
        if own_ray:
            shutdown()
    say("\n" + clock.summary())
    (out / "timings.json").write_text(json.dumps(clock.seconds, indent=2))
    say(f"report: {report / 'report.md'}; answers: {out / 'examples.json'}; model: {run / 'model'}; embeddings: {db}")
    return clock.seconds
