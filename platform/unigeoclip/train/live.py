"""A running training job's figures through Ray's metrics export (the live half of :mod:`unigeoclip.obs.metrics`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LiveGauges:
    """A running job's progress through Ray's metrics export: ``ray_unigeoclip_<job>_<figure>{tags}``.

    Create it inside the Ray process that sets it (Ray's metric objects are per process). Outside Ray
    the values go nowhere, so library code can set them unconditionally.
    """

    def __init__(self, job: str, figures: tuple[str, ...], tags: Mapping[str, str]) -> None:
        from ray.util.metrics import Gauge as RayGauge

        self.tags = dict(tags)
        self.gauges: dict[str, Any] = {
            f: RayGauge(f"unigeoclip_{job}_{f}", description=f"{job}: {f.replace('_', ' ')}", tag_keys=tuple(tags))
            for f in figures
        }

    def set(self, values: Mapping[str, float]) -> None:
        """Set the figures given (others keep their last value); a NaN is skipped, not exported."""
        for figure, value in values.items():
            gauge = self.gauges.get(figure)
            if gauge is not None and value == value:
                gauge.set(float(value), tags=self.tags)
