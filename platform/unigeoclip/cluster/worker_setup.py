"""What every process of a unigeoclip job does first: the driver in ``ensure_ray``, each worker through Ray's hook.

``ensure_ray`` names :data:`HOOK` as the job's ``worker_process_setup_hook``, so Ray calls :func:`setup` in
every worker process it starts for the job, on every node, before any task or actor runs there. A job
submitted with its own ``runtime_env`` can name the same hook: ``unigeoclip.cluster.worker_setup.setup``.
"""

from __future__ import annotations

from . import data_idle
from .heap import keep_heap

HOOK = f"{__name__}.setup"  # the dotted path Ray imports in each worker process


def setup() -> None:
    """Keep freed heap memory (:mod:`.heap`) and let Ray Data's executor sleep when idle (:mod:`.data_idle`)."""
    keep_heap()
    data_idle.install()
