"""The demo's stages as library calls, each printing the ``unigeoclip`` command that runs it alone.

Each stage takes the :class:`DemoRun` (config, paths, options, printer) and does what its
sub-command does, with the same defaults; the CLI is never re-entered. :class:`Stages` names
the five in order (and what to start before Ray, ``prepare``: the demo plans its ingest in a
process of its own while Ray starts), so a test can hand in its own to check the orchestration.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import UniGeoCLIPError
from .options import CONFIG, DemoOptions

if TYPE_CHECKING:
    from ...config import Config
    from ...ingest.aside import PlanAside


class Background:
    """``fn()`` in a thread of its own, started at once; :meth:`wait` joins it and answers what it raised."""

    def __init__(self, fn: Callable[[], object], name: str) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # handed to whoever waits, who raises it
            self.error = exc

    def wait(self) -> BaseException | None:
        """Wait until ``fn`` has returned; what it raised, else None."""
        self.thread.join()
        return self.error


@dataclass(frozen=True)
class DemoRun:
    """What every stage reads: the demo's config and options, its paths, and where to print."""

    cfg: Config
    options: DemoOptions
    say: Callable[[str], None] = print
    # Services a stage left running for ``--keep-serving``: (base URL, how to stop it); the demo stops them last.
    left_up: list[tuple[str, Callable[[], None]]] = field(default_factory=list, compare=False)
    # Services being stopped beside the next stages (their stop is mostly waiting); the shut-down stage waits.
    stopping: list[Background] = field(default_factory=list, compare=False)
    # What ``Stages.prepare`` started before Ray (the ingest's plan, in a process of its own), for the stages.
    prepared: dict[str, PlanAside] = field(default_factory=dict, compare=False)

    @property
    def store(self) -> Path:
        """The demo's sample store, ``OUT/store`` (kept between runs)."""
        return self.options.out / "store"

    @property
    def run(self) -> Path:
        """The training run's directory, ``OUT/run``."""
        return self.options.out / "run"

    @property
    def model(self) -> Path:
        """Where the training run exports its model, ``OUT/run/model``."""
        return self.run / "model"

    @property
    def db(self) -> Path:
        """The LanceDB embedding store, ``OUT/embeddings``."""
        return self.options.out / "embeddings"

    @property
    def report(self) -> Path:
        """The evaluation report's directory, ``OUT/report``."""
        return self.options.out / "report"

    def command(self, *argv: str) -> None:
        """Print the command a user would type for this stage (argv as ``unigeoclip`` takes it)."""
        self.say("$ unigeoclip " + " ".join(argv))


def plan_ingest(run: DemoRun) -> None:
    """Starts planning the ingest in a process of its own (on the other core while Ray starts here)."""
    from ...ingest.aside import PlanAside
    from ...sources.registry import make_source

    run.prepared["ingest"] = PlanAside(make_source("earth", run.cfg))


def ingest_stage(run: DemoRun) -> None:
    """Ingests the ``earth`` source into the demo's store, as ``unigeoclip ingest`` does; prints the summary."""
    from ...ingest.pipeline import ingest
    from ...samples.store import SampleStore
    from ...sources.registry import make_source

    run.command("ingest", "--source", "earth", "--store", str(run.store), "--config", CONFIG,
                *run.options.config_sets())  # fmt: skip
    source = run.prepared.pop("ingest", None) or make_source("earth", run.cfg)
    run.say(str(ingest(source, SampleStore(run.store), run.cfg.data, plan=run.cfg.ingest)))


def train_stage(run: DemoRun) -> None:
    """Trains into the demo's run directory, as ``unigeoclip train`` does; prints the model and final recall@1."""
    from ...train.trainer import train

    run.command("train", "--store", str(run.store), "--out", str(run.run), "--config", CONFIG,
                *run.options.train_args(), *run.options.config_sets())  # fmt: skip
    result = train(run.cfg, str(run.store), run.run)
    run.say(result.summary(run.cfg.train.val_split))


def embed_stage(run: DemoRun) -> None:
    """Embeds the store into the demo's LanceDB, as ``unigeoclip embed`` does; raises when some rows failed."""
    from ...embed import embed

    run.command("embed", "--model", str(run.model), "--store", str(run.store), "--db", str(run.db))
    summary = embed(run.model, str(run.store), str(run.db))
    run.say(str(summary))
    if summary.failed:
        raise UniGeoCLIPError(f"embedding left failed rows: {dict(summary.failed)} (see above)")


def serve_stage(run: DemoRun) -> None:
    """Starts the service over the embeddings, asks it the examples (kept in ``OUT/examples.json``), then stops it
    beside the next stage (``run.stopping``), or leaves it up (``run.left_up``) with ``--keep-serving``."""
    from ray import serve

    from ...samples.store import SampleStore
    from ...serve import ServeConfig, start_service
    from .examples import run_examples, wait_until_ready

    run.command("serve", "--db", str(run.db), "--store", str(run.store), "--port", str(run.options.port))
    url = start_service(ServeConfig(db=str(run.db), store=str(run.store)), host=run.options.host,
                        port=run.options.port, log_level="WARNING")  # fmt: skip
    run.left_up.append((url, serve.shutdown))  # stopped below, or by the demo's end (--keep-serving)
    run.say(f"ready: {wait_until_ready(url)}")
    answers = run_examples(url, SampleStore(run.store), run.say)
    (run.options.out / "examples.json").write_text(json.dumps([asdict(a) for a in answers], indent=1))
    if not run.options.keep_serving:
        # Serve's shut-down is mostly its replicas draining (sleeps): it goes on beside the evaluation, and the
        # demo's shut-down stage waits for it (or raises what it raised).
        run.stopping.append(Background(run.left_up.pop()[1], name="stop the service"))


def evaluate_stage(run: DemoRun) -> None:
    """Evaluates the model on the store with the demo's LanceDB embeddings; writes the report and prints its summary."""
    import time

    from ...eval.report import printed_summary, write_report
    from ...eval.suite import EvalOptions, evaluate

    probe = str(run.options.probe_points)
    run.command("evaluate", "--model", str(run.model), "--store", str(run.store), "--db", str(run.db),
                "--out", str(run.report), "--probe-points", probe)  # fmt: skip
    start = time.perf_counter()
    options = EvalOptions(db=str(run.db), probe_max_points=run.options.probe_points)
    result = evaluate(run.model, str(run.store), run.report, options)
    report = write_report(result, run.report)
    run.say(printed_summary(report, result.samples, time.perf_counter() - start))


Stage = Callable[[DemoRun], None]


@dataclass(frozen=True)
class Stages:
    """The demo's stages in order, each with the banner it prints; ``prepare`` (if any) runs before Ray starts."""

    steps: tuple[tuple[str, Stage], ...] = field(
        default=(
            ("ingest the real-Earth sample (Ray Data -> Lance)", ingest_stage),
            ("train (Ray Train + DeepSpeed, CPU workers)", train_stage),
            ("embed into LanceDB", embed_stage),
            ("serve (Ray Serve) and ask it", serve_stage),
            ("evaluate (report with tables and pictures)", evaluate_stage),
        )
    )
    prepare: Stage | None = None
