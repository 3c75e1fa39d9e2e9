"""Let Ray Data's streaming executor sleep while it has nothing to do.

Ray Data 2.60's scheduling loop waits (``ray.wait``, up to 0.1 s) only for tasks whose
outputs it may read. When the consumer is slower than the reader, as in every training
run, the decoders' outputs are held back by backpressure: their tasks count as active
but are ready at once (or there are none), and the loop spins on resource bookkeeping.
py-spy on a `small` training run found the SplitCoordinator actor that feeds Ray
Train's workers at 53% of a core over the run, a quarter of this 2-core machine taken
from the training workers.

``install`` wraps one loop step: when the step moved nothing (no output made or taken,
no task submitted or finished, no queued byte changed), the thread sleeps
``IDLE_SLEEP_S``, so a consumer's pull is noticed within that time (a training step
takes about a second). It patches a private method: when a Ray upgrade renames it, Ray
is left as it is and a warning says so. ``runtime.ensure_ray`` installs it in the driver
and, through the job's ``worker_process_setup_hook`` (:mod:`.worker_setup`), in every worker:
at once where Ray Data is imported already, else when it is first imported.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

IDLE_SLEEP_S = 0.02
EXECUTOR_MODULE = "ray.data._internal.execution.streaming_executor"
_MARK = "_unigeoclip_sleeps_when_idle"


def install() -> bool:
    """Patch ``StreamingExecutor`` in this process (idempotent): now where Ray Data's executor is imported, else
    the moment it is. A process that never runs Ray Data (a Serve replica, the ingest ledger) then never
    imports it (with pandas and pyarrow). False when this Ray's executor has no such loop step."""
    module = sys.modules.get(EXECUTOR_MODULE)
    if module is not None:
        return _patch(module.StreamingExecutor)
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    return True


def _patch(executor: type) -> bool:
    step = getattr(executor, "_scheduling_loop_step", None)
    if step is None:
        warnings.warn(
            "ray.data's StreamingExecutor has no _scheduling_loop_step in this Ray version: its scheduling "
            "loop keeps spinning while backpressured (see unigeoclip/cluster/data_idle.py)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    if not getattr(step, _MARK, False):
        executor._scheduling_loop_step = sleep_when_idle(step)  # type: ignore[attr-defined]
    return True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands Ray Data's executor module to its own loader, then patches it once loaded."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != EXECUTOR_MODULE:
            return None
        sys.meta_path.remove(self)  # once: and the search below must not find this finder again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenPatch(spec.loader)
        return spec


class _ThenPatch(importlib.abc.Loader):
    """The module's own loader (whose other methods it answers too), then :func:`_patch` on what it loaded."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _patch(module.StreamingExecutor)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, ... for tracebacks and inspect
        return getattr(self.loader, name)


def sleep_when_idle(step: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """``step(executor, topology)``, then ``IDLE_SLEEP_S`` of sleep when the step went on without moving anything."""

    @functools.wraps(step)
    def step_then_sleep_if_idle(self: Any, topology: Any) -> bool:
        before = progress(topology)
        go_on = bool(step(self, topology))
        if go_on and progress(topology) == before:
            time.sleep(IDLE_SLEEP_S)
        return go_on

    setattr(step_then_sleep_if_idle, _MARK, True)
    return step_then_sleep_if_idle


def progress(topology: Mapping[Any, Any]) -> tuple[tuple[int, ...], ...]:
    """What a scheduling step can move, per operator: outputs made and taken, tasks submitted and done, bytes queued."""
    return tuple(
        (
            op.metrics.num_task_outputs_generated,
            op.metrics.num_outputs_taken,
            op.metrics.num_tasks_submitted,
            state.num_completed_tasks,
            state.output_queue_bytes(),
        )
        for op, state in topology.items()
    )
