"""``make demo`` / ``unigeoclip demo``: the whole pipeline on this machine, one stage after another.

``pipeline`` runs the stages (``stages``: ingest the real-Earth sample, train, embed, serve,
example requests, evaluate) through the same library calls as their ``unigeoclip`` sub-commands,
on one local Ray, and times them; ``examples`` holds the example requests sent to the service.
"""

from __future__ import annotations

from .pipeline import DemoOptions, run_demo
from .stages import DemoRun, Stages

__all__ = ["DemoOptions", "DemoRun", "Stages", "run_demo"]
