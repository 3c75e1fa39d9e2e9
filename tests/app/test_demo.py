"""``make demo``'s orchestration: each stage runs once, in order, on what the one before left; the rest as promised.

The stages themselves are thin calls of the library functions that the per-stage tests run in full
(ingest, train, embed, serve, evaluate); here they are replaced by recording ones that leave the
files their real counterparts leave, so the test checks what run_demo adds: order, paths, banners,
timings, a fresh run/embeddings/report beside a kept store, and the session's Ray left up.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import ray
from unigeoclip.app.demo import DemoOptions, DemoRun, Stages, run_demo
from unigeoclip.app.demo.pipeline import DEMO_STAGES, STAGES
from unigeoclip.cluster.ingress import free_port
from unigeoclip.sources.earth import EarthSourceConfig

pytestmark = [pytest.mark.integration]


def test_each_stage_runs_once_in_order_on_what_the_one_before_left(ray_cluster: dict, tmp_path: Path) -> None:
    options = DemoOptions.quick(tmp_path / "demo", port=free_port())
    stale = options.out / "report" / "old.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    (options.out / "store").mkdir()
    (options.out / "store" / "kept").write_text("samples of an earlier run")
    ran: list[str] = []
    seen: list[DemoRun] = []

    def ingest(run: DemoRun) -> None:
        assert not stale.exists(), "the report of an earlier run is removed before anything runs"
        assert (run.store / "kept").exists(), "the store is kept between runs"

    def train(run: DemoRun) -> None:
        run.model.mkdir(parents=True)

    def embed(run: DemoRun) -> None:
        assert run.model.is_dir()
        run.db.mkdir()

    def serve(run: DemoRun) -> None:
        assert run.db.is_dir()
        (run.options.out / "examples.json").write_text("[]")

    def evaluate(run: DemoRun) -> None:
        assert (run.options.out / "examples.json").exists()
        run.report.mkdir()

    def recorded(name: str, stage: object) -> object:
        def call(run: DemoRun) -> None:
            ran.append(name)
            seen.append(run)
            stage(run)  # type: ignore[operator]

        return call

    fakes = {"ingest": ingest, "train": train, "embed": embed, "serve": serve, "evaluate": evaluate}
    titles = [title for title, _ in DEMO_STAGES.steps]
    stages = Stages(tuple((t, recorded(n, f)) for t, (n, f) in zip(titles, fakes.items(), strict=True)))  # type: ignore[misc]
    lines: list[str] = []
    seconds = run_demo(options, stages=stages, say=lines.append)

    assert ran == ["ingest", "train", "embed", "serve", "evaluate"]
    assert [s.__name__ for _, s in DEMO_STAGES.steps] == [f"{n}_stage" for n in fakes], "the real stages, same order"
    assert all(run is seen[0] for run in seen), "one config and set of paths for every stage"
    cfg = seen[0].cfg
    assert EarthSourceConfig.of(cfg.data).max_places == 400 and cfg.train.steps == 30 and cfg.train.ckpt_every == 30
    assert list(seconds) == [*titles, "shut down"] and len(seconds) == STAGES
    assert json.loads((options.out / "timings.json").read_text()) == pytest.approx(seconds)
    banners = [line for line in lines if line.startswith("=== [") and not line.endswith(" s ===")]
    assert [b.split("]")[0] for b in banners] == [f"=== [{i}/{STAGES}" for i in range(1, STAGES + 1)]
    # the demo's own lines: a banner and a done line per stage, the wall-time table, where things are, the explorer
    assert len("\n".join(lines).splitlines()) == 2 * STAGES + (STAGES + 2) + 2, lines
    assert lines[-1] == f"explorer: {options.url}/ (live only with --keep-serving: make demo KEEP_SERVING=1)"
    assert ray.is_initialized(), "the session's Ray (not the demo's) stays up"


def test_keep_serving_leaves_the_service_up_until_sigterm_then_stops_it(ray_cluster: dict, tmp_path: Path) -> None:
    options = DemoOptions.quick(tmp_path / "demo", port=free_port(), keep_serving=True)
    events: list[str] = []
    lines: list[str] = []

    def serve(run: DemoRun) -> None:  # what serve_stage does with --keep-serving: the service stays up
        events.append("started")
        run.left_up.append((run.options.url, lambda: events.append("stopped")))

    def evaluate(run: DemoRun) -> None:
        assert events == ["started"], "the service is still up while the report is made"

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("explorer: "):  # the signal handler is in place by now: stop as a service manager would
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()

    noop = lambda run: None  # noqa: E731
    stages = Stages(tuple((title, {3: serve, 4: evaluate}.get(i, noop)) for i, (title, _) in
                          enumerate(DEMO_STAGES.steps)))  # fmt: skip
    before = signal.getsignal(signal.SIGTERM)
    seconds = run_demo(options, stages=stages, say=say)

    assert events == ["started", "stopped"]
    explorer = lines.index(f"explorer: {options.url}/ (live: Ctrl-C or SIGTERM stops the service)")
    assert lines[explorer - 2].startswith("stage wall times:") and lines[explorer - 1].startswith("report: ")
    assert lines[explorer + 1].startswith(f"=== [{STAGES}/{STAGES}] shut down"), "stopped after the explorer line"
    assert list(seconds)[-1] == "shut down" and signal.getsignal(signal.SIGTERM) is before


def test_the_service_stops_beside_the_evaluation_and_the_shut_down_waits_for_it(
    ray_cluster: dict, tmp_path: Path
) -> None:
    """serve_stage hands its stop to a ``Background``: the next stage runs meanwhile; shut-down waits and raises."""
    from unigeoclip.app.demo.stages import Background

    events: list[str] = []
    evaluated = threading.Event()

    def stop(fail: bool) -> None:
        assert evaluated.wait(30), "the evaluation never ran while the service was stopping"
        events.append("stopped")
        if fail:
            raise RuntimeError("the drain failed")

    for fail in (False, True):
        events.clear()
        evaluated.clear()
        options = DemoOptions.quick(tmp_path / f"demo-{fail}", port=free_port())

        def serve(run: DemoRun, fail: bool = fail) -> None:
            run.stopping.append(Background(lambda: stop(fail), name="stop the service"))

        def evaluate(run: DemoRun) -> None:
            events.append("evaluated")
            evaluated.set()

        noop = lambda run: None  # noqa: E731
        stages = Stages(tuple((title, {3: serve, 4: evaluate}.get(i, noop)) for i, (title, _) in
                              enumerate(DEMO_STAGES.steps)))  # fmt: skip
        if fail:
            with pytest.raises(RuntimeError, match="the drain failed"):
                run_demo(options, stages=stages, say=lambda line: None)
        else:
            assert list(run_demo(options, stages=stages, say=lambda line: None))[-1] == "shut down"
        assert events == ["evaluated", "stopped"], "the shut-down waited for the stop"
