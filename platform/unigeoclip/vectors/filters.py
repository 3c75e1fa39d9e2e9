"""Search filters -> one SQL predicate over the embedding table's scalar columns, validated on the way in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import s2sphere

from ..errors import InputError
from ..geo.bbox import BBox
from ..modality import Modality
from .sql import in_list, quote


def _as_tuple(value: object) -> tuple[object, ...]:
    if isinstance(value, str | int | Modality):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)


def modality_names(modality: Modality | str | Sequence[Modality | str]) -> list[str]:
    """The modality filter as the table's stored names (parsed: a misspelt one is an error)."""
    return [Modality.parse(m).value for m in _as_tuple(modality)]  # type: ignore[arg-type]


def cell_id_range(token: str) -> tuple[int, int]:
    """The inclusive range of cell ids inside the S2 cell ``token`` (any level).

    This is the exact form of an "S2 cell prefix": the parent's id bits are a prefix of every
    descendant's id (hex token strings are prefixes of each other only at some levels).
    """
    text = str(token).strip().lower()
    try:
        cell = s2sphere.CellId.from_token(text) if 0 < len(text) <= 16 else None
    except ValueError:
        cell = None
    if cell is None or not cell.is_valid():
        raise InputError(f"cell_prefix {token!r} is not a valid S2 cell token (hex, e.g. '47a1' or '47a1cbd4')")
    return cell.range_min().id(), cell.range_max().id()


def year_values(year: int | Sequence[int]) -> list[int]:
    """The year filter as a list of ints (one year or several)."""
    return [int(y) for y in _as_tuple(year)]  # type: ignore[call-overload]


def split_values(split: str | Sequence[str]) -> list[str]:
    """The split filter as a list of strings (one split or several)."""
    return [str(s) for s in _as_tuple(split)]


@dataclass(frozen=True)
class Filters:
    """Search filters, parsed and checked once; rendered as SQL for LanceDB or as a numpy mask over the columns.

    The store's searches (:meth:`to_sql`) and the service's in-memory snapshot (:meth:`mask`) take the same
    keywords and answer the same rows: one parser, so one set of errors.
    """

    modalities: tuple[str, ...] | None = None
    bbox: BBox | None = None
    cell_range: tuple[int, int] | None = None  # inclusive S2 cell ids of a ``cell_prefix``
    years: tuple[int, ...] | None = None
    splits: tuple[str, ...] | None = None

    @classmethod
    def parse(
        cls,
        *,
        modality: Modality | str | Sequence[Modality | str] | None = None,
        bbox: Sequence[float] | None = None,
        cell_prefix: str | None = None,
        year: int | Sequence[int] | None = None,
        split: str | Sequence[str] | None = None,
    ) -> Filters:
        """The filters of :meth:`unigeoclip.vectors.EmbeddingStore.search`'s keywords; a bad value is an InputError."""
        return cls(
            modalities=None if modality is None else tuple(modality_names(modality)),
            bbox=None if bbox is None else BBox.parse(bbox),
            cell_range=None if cell_prefix is None else cell_id_range(cell_prefix),
            years=None if year is None else tuple(year_values(year)),
            splits=None if split is None else tuple(split_values(split)),
        )

    def to_sql(self) -> str | None:
        """The conjunction as one SQL predicate over the table's columns (None: no filter)."""
        clauses = []
        if self.modalities is not None:
            clauses.append(_equal_or_in("modality", list(self.modalities)))
        if self.bbox is not None:
            clauses.append(self.bbox.to_sql())
        if self.cell_range is not None:
            clauses.append(f"cell_id >= {self.cell_range[0]} AND cell_id <= {self.cell_range[1]}")
        if self.years is not None:
            clauses.append(_equal_or_in("year", list(self.years)))
        if self.splits is not None:
            clauses.append(_equal_or_in("split", list(self.splits)))
        return " AND ".join(f"({c})" for c in clauses) or None

    def mask(
        self,
        *,
        modality: np.ndarray,
        lat_deg: np.ndarray,
        lon_deg: np.ndarray,
        cell_id: np.ndarray,
        year: np.ndarray,
        split: np.ndarray,
    ) -> np.ndarray:
        """``(N,)`` bool: which rows of these ``(N,)`` columns pass every filter (the rows :meth:`to_sql` selects)."""
        keep = np.ones(len(modality), bool)
        if self.modalities is not None:
            keep &= np.isin(modality, self.modalities)
        if self.bbox is not None:
            keep &= self.bbox.contains(lat_deg, lon_deg)
        if self.cell_range is not None:
            low, high = self.cell_range
            keep &= (cell_id >= np.uint64(low)) & (cell_id <= np.uint64(high))
        if self.years is not None:
            keep &= np.isin(year, self.years)
        if self.splits is not None:
            keep &= np.isin(split, self.splits)
        return keep


def _equal_or_in(column: str, values: list[str] | list[int]) -> str:
    """``column = v`` for one value, ``column IN (...)`` for several."""
    if len(values) > 1:
        return in_list(column, values)
    value = values[0]
    return f"{column} = {quote(value) if isinstance(value, str) else int(value)}"


def build_filter(
    *,
    modality: Modality | str | Sequence[Modality | str] | None = None,
    bbox: Sequence[float] | None = None,
    cell_prefix: str | None = None,
    year: int | Sequence[int] | None = None,
    split: str | Sequence[str] | None = None,
) -> str | None:
    """The conjunction of the given filters as SQL (None = no filter): :class:`Filters` rendered."""
    return Filters.parse(modality=modality, bbox=bbox, cell_prefix=cell_prefix, year=year, split=split).to_sql()
