"""The user's index files (street images, texts) read as rows and parsed into checked values.

Kept apart from :mod:`.files` so that the table formats and the rules for a usable row
(what each bad value is rejected as, and how it is explained) sit in one place, free of
rasters and of sample building.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..geo.coords import LATLON_RANGE, valid_latlon
from ..geo.s2 import cell_token

STREET_COLUMNS = ("path", "lat_deg", "lon_deg", "heading_deg", "capture_date")
TEXT_COLUMNS = ("lat_deg", "lon_deg", "text")
PROJECTIONS = ("perspective", "equirectangular")


@dataclass(frozen=True)
class StreetRow:
    """One valid row of the street index, as it travels in a work item."""

    id: str
    path: str  # absolute
    lat_deg: float
    lon_deg: float
    heading_deg: float
    fov_deg: float
    projection: str
    capture_date: str  # ISO date


class RowError(Exception):
    """A row that cannot be used: becomes a reject item with this reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def read_rows(path: Path, what: str) -> tuple[set[str], Iterator[tuple[str, dict[str, Any] | None, str]]]:
    """Columns of a table and its rows as ``(label, row or None, error)``; CSV, Parquet or JSONL by extension."""
    if not path.is_file():
        raise ConfigError(f"data.sources.files.{what}: {str(path)!r} does not exist or is not a file")
    ext = path.suffix.lower()
    if ext == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = {c.strip() for c in reader.fieldnames or ()}
        return columns, (
            (f"{path.name} row {i + 1}", {k.strip(): v for k, v in r.items() if k}, "") for i, r in enumerate(rows)
        )
    if ext in (".parquet", ".pq") and what == "street_index":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return set(table.column_names), ((f"{path.name} row {i + 1}", r, "") for i, r in enumerate(table.to_pylist()))
    if ext in (".jsonl", ".ndjson") and what == "text":
        parsed: list[tuple[str, dict[str, Any] | None, str]] = []
        keys: set[str] = set()
        with path.open(encoding="utf-8-sig") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    parsed.append((f"{path.name} line {n}", None, f"not valid JSON ({exc})"))
                    continue
                if not isinstance(obj, dict):
                    parsed.append((f"{path.name} line {n}", None, f"a JSON {type(obj).__name__}, not an object"))
                    continue
                keys |= set(obj)
                parsed.append((f"{path.name} line {n}", obj, ""))
        return keys, iter(parsed)
    allowed = ".csv, .parquet, .pq" if what == "street_index" else ".csv, .jsonl, .ndjson"
    raise ConfigError(f"data.sources.files.{what}: {str(path)!r} has an unknown extension; use one of {allowed}")


def require_columns(columns: set[str], required: tuple[str, ...], path: Path, what: str) -> None:
    """A :class:`ConfigError` naming the file and every missing column: no row of such a table can be used."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ConfigError(
            f"data.sources.files.{what}: {str(path)!r} lacks column(s) {', '.join(missing)} "
            f"(has: {', '.join(sorted(columns)) or 'none'}); required: {', '.join(required)}"
        )


def _num(value: Any) -> float | None:
    """A finite float, or None for missing/unparsable values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def as_text(value: Any) -> str:
    """A cell value as stripped text, ``""`` for a missing one (CSV gives strings, Parquet and JSON typed values)."""
    return "" if value is None else str(value).strip()


def _coords(row: dict[str, Any]) -> tuple[float, float]:
    lat, lon = _num(row.get("lat_deg")), _num(row.get("lon_deg"))
    if lat is None or lon is None:
        raw = (row.get("lat_deg"), row.get("lon_deg"))
        raise RowError("missing_coords", f"lat_deg, lon_deg {raw!r} are missing or not numbers (WGS84 degrees)")
    if not valid_latlon(lat, lon):
        raise RowError("coords_out_of_range", f"lat_deg {lat} / lon_deg {lon} out of range: give {LATLON_RANGE}")
    return lat, lon


def _iso_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None if value != value else value.date()  # NaT-like values are not equal to themselves
    if isinstance(value, date):
        return value
    text = as_text(value)
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        return parsed.date() if isinstance(parsed, datetime) else parsed
    return None


def street_row(row: dict[str, Any], rid: str, folder: Path) -> StreetRow:
    """A validated street row, or :class:`RowError`."""
    written = as_text(row.get("path"))
    if not written:
        raise RowError("missing_path", "no 'path': give the image file, relative to the index folder")
    lat, lon = _coords(row)
    heading = _num(row.get("heading_deg"))
    if heading is None:
        raise RowError("bad_heading", f"heading_deg {row.get('heading_deg')!r} is not a number (0 = north, 90 = east)")
    day = _iso_date(row.get("capture_date"))
    if day is None:
        raise RowError("bad_date", f"capture_date {row.get('capture_date')!r} is not an ISO date such as 2021-06-14")
    projection = as_text(row.get("projection")).lower() or "perspective"
    if projection not in PROJECTIONS:
        raise RowError("bad_projection", f"projection {row.get('projection')!r} is not one of {', '.join(PROJECTIONS)}")
    fov = _num(row.get("fov_deg"))
    if fov is None and as_text(row.get("fov_deg")):
        raise RowError("bad_fov", f"fov_deg {row.get('fov_deg')!r} is not a number")
    fov = fov if fov is not None else (360.0 if projection == "equirectangular" else 90.0)
    if not 0.0 < fov <= 360.0:
        raise RowError("bad_fov", f"fov_deg {fov} is outside (0, 360]")
    full = os.path.normpath(written if os.path.isabs(written) else folder / written)
    return StreetRow(rid, full, lat, lon, heading % 360.0, fov, projection, day.isoformat())


def text_row(row: dict[str, Any], level: int) -> tuple[str, int | None, str]:
    """``(cell, year or None, whitespace-normalised text)`` of a validated text row, or :class:`RowError`."""
    lat, lon = _coords(row)
    text = " ".join(as_text(row.get("text")).split())
    if not text:
        raise RowError("empty_text", "the text is empty: fill it in or remove the row")
    year: int | None = None
    if as_text(row.get("year")):
        y = _num(row.get("year"))
        if y is None or y != int(y):
            raise RowError(
                "bad_year", f"year {row.get('year')!r} is not a whole number: give e.g. 2021, or leave it empty"
            )
        year = int(y)
    return cell_token(lat, lon, level), year, text


def join_texts(texts: list[str]) -> str:
    """Distinct texts (whitespace-normalised) in the given order, joined with a space."""
    distinct = dict.fromkeys(" ".join(t.split()) for t in texts)
    return " ".join(t for t in distinct if t)
