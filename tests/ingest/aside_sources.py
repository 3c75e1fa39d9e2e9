"""Sources for ``test_aside``, in a module of their own: the planning process imports just this one (light).

None of them imports ``planned_data`` at import time: only ``ReadsDataOfItsOwn.plan`` does.
"""

from __future__ import annotations

from typing import Any

from unigeoclip.errors import DataSourceError


class FailingPlan:
    """A source whose plan fails, as a source's plan does: with an error that says what to fix."""

    name = "failing"

    def plan(self) -> list[dict[str, Any]]:
        raise DataSourceError("no places in the bbox: widen data.sources.failing.bbox")

    def extract(self, item: dict[str, Any]) -> list[Any]:
        return []


class ReadsDataOfItsOwn:
    """A source whose plan imports a package-data loader of a module nothing else imports."""

    name = "own-data"

    def plan(self) -> list[dict[str, Any]]:
        from .planned_data import table

        return [{"id": i} for i in table()]

    def extract(self, item: dict[str, Any]) -> list[Any]:
        return []
