"""The idle-sleeping patch of Ray Data's scheduling loop: it sleeps only after a step that moved nothing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from ray.data._internal.execution.streaming_executor import StreamingExecutor
from unigeoclip.cluster import data_idle as ray_data_idle


class State:
    def __init__(self) -> None:
        self.num_completed_tasks = 0
        self.queued = 0

    def output_queue_bytes(self) -> int:
        return self.queued


class Operator:
    def __init__(self) -> None:
        self.metrics = SimpleNamespace(num_task_outputs_generated=0, num_outputs_taken=0, num_tasks_submitted=0)


MOVES = {
    "nothing": lambda op, state: None,
    "an output made": lambda op, state: setattr(op.metrics, "num_task_outputs_generated", 1),
    "an output taken": lambda op, state: setattr(op.metrics, "num_outputs_taken", 1),
    "a task submitted": lambda op, state: setattr(op.metrics, "num_tasks_submitted", 1),
    "a task finished": lambda op, state: setattr(state, "num_completed_tasks", 1),
    "bytes queued": lambda op, state: setattr(state, "queued", 1024),
}


@pytest.mark.parametrize("move", list(MOVES))
@pytest.mark.parametrize("go_on", [True, False])
def test_a_step_is_followed_by_a_sleep_only_when_it_moved_nothing_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch, move: str, go_on: bool
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(ray_data_idle.time, "sleep", slept.append)
    topology = {Operator(): State(), Operator(): State()}
    last_op, last_state = list(topology.items())[-1]

    def step(executor: Any, topo: Any) -> bool:
        MOVES[move](last_op, last_state)
        return go_on

    assert ray_data_idle.sleep_when_idle(step)(object(), topology) is go_on
    idle = move == "nothing" and go_on
    assert slept == ([ray_data_idle.IDLE_SLEEP_S] if idle else [])


def test_install_patches_ray_once() -> None:
    assert ray_data_idle.install()
    patched = StreamingExecutor._scheduling_loop_step
    assert getattr(patched, "_unigeoclip_sleeps_when_idle", False)
    assert ray_data_idle.install() and StreamingExecutor._scheduling_loop_step is patched  # not wrapped twice
    assert not getattr(patched.__wrapped__, "_unigeoclip_sleeps_when_idle", False)  # wraps Ray's own step


def test_a_worker_patches_ray_data_when_it_imports_it_and_never_imports_it_for_nothing(ray_cluster: dict) -> None:
    """The job's setup hook leaves Ray Data unimported (a Serve replica never needs it) and patches it on import."""
    import ray

    @ray.remote(max_calls=1)  # a worker process of its own, set up by the job's hook
    def fresh_worker() -> tuple[bool, bool, bool]:
        import sys

        imported_before = "ray.data" in sys.modules
        from ray.data._internal.execution.streaming_executor import StreamingExecutor as Executor

        step = Executor._scheduling_loop_step
        return imported_before, getattr(step, "_unigeoclip_sleeps_when_idle", False), hasattr(step, "__wrapped__")

    assert ray.get(fresh_worker.remote()) == (False, True, True)


def test_install_before_ray_data_is_imported_patches_it_on_import() -> None:
    """In a fresh interpreter: nothing imported by ``install``, the executor patched by its first import."""
    import subprocess
    import sys

    code = (
        "import sys, ray\n"
        "from unigeoclip.cluster import data_idle\n"
        "assert data_idle.install() and 'ray.data' not in sys.modules\n"
        "assert data_idle.install() and sum(type(f).__name__ == '_PatchOnImport' for f in sys.meta_path) == 1\n"
        "import ray.data\n"
        "from ray.data._internal.execution.streaming_executor import StreamingExecutor as E\n"
        "assert E._scheduling_loop_step._unigeoclip_sleeps_when_idle\n"
        "assert not getattr(E._scheduling_loop_step.__wrapped__, '_unigeoclip_sleeps_when_idle', False)\n"
        "assert not any(type(f).__name__ == '_PatchOnImport' for f in sys.meta_path)\n"
        "import inspect\n"
        "assert 'class StreamingExecutor' in inspect.getsource(sys.modules[data_idle.EXECUTOR_MODULE])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
