"""What a source produces: raw samples (one place, one year) and rejects (bad input, kept with a reason).

Sources only read and render; validation, S2 keys, hashing and splits happen once, in
:mod:`unigeoclip.samples.validate`, for every source alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import ValidationError

from ..config import DataConfig, StrictModel, describe_validation_error
from ..errors import ConfigError

StreetProjection = Literal["equirectangular", "perspective"]


class SourceConfig(StrictModel):
    """A source's own settings, given under ``data.sources.<NAME>`` and validated when an ingest builds the source.

    They tell ingest where samples come from; a model never reads them (the core config holds them as plain
    mappings, so an ingest-only change never touches what a model or a resumed run checks).
    """

    NAME: ClassVar[str]

    @classmethod
    def of(cls, data: DataConfig) -> Self:
        """This source's settings from ``data.sources`` (its defaults where none are given)."""
        try:
            return cls.model_validate(data.sources.get(cls.NAME, {}))
        except ValidationError as exc:
            where = f"data.sources.{cls.NAME}."
            raise ConfigError(
                f"invalid settings of the {cls.NAME} source:\n" + describe_validation_error(exc, where)
            ) from None


@dataclass
class StreetView:
    """One street-level image: a 360 x 180 panorama (equirectangular) or a perspective photo."""

    image: bytes  # encoded PNG / JPEG
    lat_deg: float
    lon_deg: float
    heading_deg: float  # compass heading of the image centre (0 = north, 90 = east)
    projection: StreetProjection = "perspective"
    fov_deg: float = 90.0  # horizontal field of view (360 for panoramas)
    capture_date: str = ""  # ISO date, may be empty
    source_id: str = ""


@dataclass
class RawSample:
    """One location in one year, with whatever modalities the source has (missing = ``None`` / empty)."""

    lat_deg: float
    lon_deg: float
    year: int
    source: str
    source_id: str  # the source's own id of this place (reported in rejects)
    aerial: bytes | None = None  # encoded PNG / JPEG, north up
    street: list[StreetView] = field(default_factory=list)
    dsm: np.ndarray | None = None  # (H, W) surface heights in metres, NaN = no data, north up
    text: str | None = None
    source_ids: dict[str, str] = field(default_factory=dict)  # per-modality provenance ids


@dataclass
class Reject:
    """Input that could not become (part of) a sample: never dropped silently."""

    source: str
    source_id: str
    reason: str  # short machine-friendly code, e.g. "unreadable_image"
    detail: str  # what was wrong and how to fix it
    modality: str = ""  # "" when the whole sample is rejected
    year: int | None = None
    cell_token: str = ""


@runtime_checkable
class Source(Protocol):
    """A source of co-located geodata.

    ``plan()`` runs once on the driver and returns small JSON-able work items;
    ``extract(item)`` runs in parallel in Ray Data workers and turns one item into
    samples and rejects. A source may also define ``extract_batch(items)`` (what ``extract``
    gives for each, computed together); ingest then hands it each block of items at once.
    Heavy resources (rasters, models) are opened lazily in the worker, never pickled from
    the driver with the source. A source whose workers all read the same large data may
    define ``shared_data()`` (that data) and ``use_shared_data(data)``: ingest then reads it once (a
    Ray task, while the driver plans) into Ray's object store and every worker adopts it.
    """

    name: str

    def plan(self) -> list[dict[str, Any]]:
        """Small JSON-able work items, computed once on the driver."""
        ...

    def extract(self, item: dict[str, Any]) -> list[RawSample | Reject]:
        """One work item's samples and rejects, computed in a worker."""
        ...
