"""Search filters -> one SQL predicate over the embedding table's scalar columns, validated on the way in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def modality_clause(modality: Modality | str | Sequence[Modality | str]) -> str:
    """The modality filter as SQL: ``modality = 'x'``, or ``modality IN (...)`` for several."""
    names = modality_names(modality)
    return f"modality = {quote(names[0])}" if len(names) == 1 else in_list("modality", names)


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


def cell_clause(token: str) -> str:
    """Items inside the S2 cell ``token``: its descendants are one contiguous range of cell ids."""
    low, high = cell_id_range(token)
    return f"cell_id >= {low} AND cell_id <= {high}"


def year_values(year: int | Sequence[int]) -> list[int]:
    """The year filter as a list of ints (one year or several)."""
    return [int(y) for y in _as_tuple(year)]  # type: ignore[call-overload]


def year_clause(year: int | Sequence[int]) -> str:
    """The year filter as SQL: ``year = N``, or ``year IN (...)`` for several."""
    years = year_values(year)
    return f"year = {years[0]}" if len(years) == 1 else in_list("year", years)


def split_values(split: str | Sequence[str]) -> list[str]:
    """The split filter as a list of strings (one split or several)."""
    return [str(s) for s in _as_tuple(split)]


def split_clause(split: str | Sequence[str]) -> str:
    """The split filter as SQL: ``split = 's'``, or ``split IN (...)`` for several."""
    splits = split_values(split)
    return f"split = {quote(splits[0])}" if len(splits) == 1 else in_list("split", splits)


def build_filter(
    *,
    modality: Modality | str | Sequence[Modality | str] | None = None,
    bbox: Sequence[float] | None = None,
    cell_prefix: str | None = None,
    year: int | Sequence[int] | None = None,
    split: str | Sequence[str] | None = None,
) -> str | None:
    """The conjunction of the given filters (None = no filter)."""
    clauses = []
    if modality is not None:
        clauses.append(modality_clause(modality))
    if bbox is not None:
        clauses.append(BBox.parse(bbox).to_sql())
    if cell_prefix is not None:
        clauses.append(cell_clause(cell_prefix))
    if year is not None:
        clauses.append(year_clause(year))
    if split is not None:
        clauses.append(split_clause(split))
    return " AND ".join(f"({c})" for c in clauses) or None
