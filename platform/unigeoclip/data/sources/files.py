"""The user's own data: GeoTIFF mosaics, a street-image index and geolocated texts, turned into samples.

A sample is one S2 cell (level ``data.cell_level``) in one year, located at the cell
centre. Every input below is optional, but at least one must be set.

Inputs (``data.sources.files``)
-------------------------------
``aerial_tif``
    A GeoTIFF (any GDAL-readable raster) mosaic of 3 or 4 bands of ``uint8``: red,
    green, blue and optionally alpha. Any projected or geographic CRS (UTM, EPSG:3857,
    EPSG:2154, ...). Alpha, a declared nodata value and internal masks all mark
    pixels without data. Tiled GeoTIFFs (COG) read fastest: only the window around
    each cell is read, never the whole mosaic.
``dsm_tif``
    A GeoTIFF of 1 band: surface heights in metres (any numeric type, read as
    float32), any CRS, independent of the aerial grid. The declared nodata value
    and NaN mark pixels without data (stored as NaN).
``raster_year``
    The acquisition year of both rasters; required as soon as one is given.
``street_index``
    A CSV (``.csv``, UTF-8, header row) or Parquet (``.parquet``/``.pq``) table, one
    row per image, with columns:

    * ``path``: the image file (JPEG, PNG or anything Pillow reads); a relative path
      is relative to the folder of the index file. Stored as is, not re-encoded.
    * ``lat_deg``, ``lon_deg``: WGS84 position of the camera, degrees.
    * ``heading_deg``: compass heading of the image centre (0 = north, 90 = east).
    * ``capture_date``: ISO date (``2021-06-14``, or a date-time); its year is the
      sample year.
    * ``fov_deg`` (optional): horizontal field of view; default 90 for perspective
      photos, 360 for panoramas.
    * ``projection`` (optional): ``perspective`` (default) or ``equirectangular``
      (360 x 180 panoramas).
    * ``id`` (optional): your id of the image, used in provenance and rejects;
      default: ``path`` as written.
``text``
    A CSV (header row) or JSON Lines (``.jsonl``/``.ndjson``, one object per line)
    file with ``lat_deg``, ``lon_deg``, ``text``, optional ``year`` and optional
    ``id`` (default ``<file name>:<row>``). A text belongs to the S2 cell containing
    its point. With a year it belongs to that year; without one it attaches to every
    year that cell has from the other inputs (raster year, street capture years,
    texts with a year), and is rejected (``no_year``) if the cell has none.

What becomes a sample
---------------------
Cells come from the rasters (the level-``cell_level`` cells covering their footprints,
in ``raster_year``), from street images (in their capture year) and from texts. For
each (cell, year):

* aerial / dsm: the window around the cell is read and reprojected (bilinear) onto a
  north-up square of ``data.tile_m`` metres centred on the cell centre, in a local
  azimuthal equidistant projection, at ``data.aerial_px`` / ``data.dsm_px`` pixels;
  aerial becomes an RGB PNG, dsm a float32 array of metres with NaN for no data. A
  tile less than ``MIN_COVERAGE`` covered by valid pixels (outside the raster, edge
  of the mosaic, all nodata) has no such modality: that is absence, not a reject.
* street: at most ``data.street_views_per_sample`` images, chosen by farthest-point
  sampling on position and heading (:mod:`unigeoclip.data.street_select`) among the
  images that decode (every listed image is decoded once, so a broken file is always
  reported, whatever the cap). Images left out by that cap are a sampling choice, not
  rejects; their ids are listed in ``source_ids["street_capped"]`` (a JSON list).
* text: the distinct texts of the cell and year (whitespace-normalised), in file
  order, joined with a space.

A (cell, year) left with no modality at all (a bounding-box cell outside a rotated
mosaic, a cell whose only images were unreadable) yields no sample; the unreadable
inputs are rejects.

Rejects (kept, never dropped): ``missing_coords``, ``coords_out_of_range``,
``bad_heading``, ``bad_fov``, ``bad_projection``, ``missing_path``, ``bad_date``,
``bad_year``, ``bad_json``, ``empty_text``, ``duplicate``, ``no_year`` (row level,
found by :meth:`FilesSource.plan`); ``raster_without_crs``, ``unreadable_raster``,
``bad_raster_bands`` (a whole raster; the other inputs still ingest);
``unreadable_image`` (found by :meth:`FilesSource.extract`). A missing file, an
unknown extension or a missing required column is a :class:`ConfigError` instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ...config import DataConfig, FilesSourceConfig
from ...errors import ConfigError, InputError
from ...geo.s2 import cell_token, cover_bbox, token_center
from ..records import RawSample, Reject, StreetView
from ..street_select import farthest_point_indices

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

SOURCE = "files"
MIN_COVERAGE = 0.5  # share of a tile's pixels that must hold data for the aerial/dsm modality to exist
STREET_COLUMNS = ("path", "lat_deg", "lon_deg", "heading_deg", "capture_date")
TEXT_COLUMNS = ("lat_deg", "lon_deg", "text")
PROJECTIONS = ("perspective", "equirectangular")
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


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


class FilesSource:
    """Samples from a user's GeoTIFFs, street-image index and texts (formats in the module docstring).

    The constructor only stores the configs: the object is pickled to Ray workers,
    which open the rasters on first use and keep them open per process and thread.
    """

    name = SOURCE

    def __init__(self, cfg: FilesSourceConfig, data: DataConfig) -> None:
        if (cfg.aerial_tif is not None or cfg.dsm_tif is not None) and cfg.raster_year is None:
            raise ConfigError(
                "data.sources.files.raster_year is required with aerial_tif/dsm_tif: "
                "set it to the acquisition year of the mosaics"
            )
        self.cfg = cfg
        self.data = data

    # ----------------------------------------------------------------- driver
    def plan(self) -> list[dict[str, Any]]:
        """Read the indexes, validate rows and return one work item per (cell, year), plus reject items."""
        cfg = self.cfg
        if not any((cfg.aerial_tif, cfg.dsm_tif, cfg.street_index, cfg.text)):
            raise ConfigError(
                "data.sources.files has no input: set at least one of aerial_tif, dsm_tif, street_index, text"
            )
        rejects: list[dict[str, Any]] = []
        groups: dict[tuple[str, int], _Group] = {}

        def group(cell: str, year: int) -> _Group:
            return groups.setdefault((cell, year), _Group())

        for modality, path in (("aerial", cfg.aerial_tif), ("dsm", cfg.dsm_tif)):
            if path is None:
                continue
            assert cfg.raster_year is not None  # checked in __init__
            covered, reject = _plan_raster(modality, path, cfg.raster_year, self.data.cell_level)
            if reject is not None:
                rejects.append(reject)
            for cell in covered:
                setattr(group(cell, cfg.raster_year), modality, True)

        if cfg.street_index is not None:
            for cell, year, row in _plan_street(cfg.street_index, self.data.cell_level, rejects):
                group(cell, year).street.append(asdict(row))

        if cfg.text is not None:
            yearless: list[tuple[str, int, dict[str, str]]] = []
            for cell, text_year, order, text in _plan_text(cfg.text, self.data.cell_level, rejects):
                if text_year is None:
                    yearless.append((cell, order, text))
                else:
                    group(cell, text_year).texts.append((order, text))
            years_by_cell: dict[str, set[int]] = {}
            for cell, year in groups:
                years_by_cell.setdefault(cell, set()).add(year)
            for cell, order, text in yearless:
                years = sorted(years_by_cell.get(cell, ()))
                if not years:
                    rejects.append(
                        _reject_item(
                            text["id"],
                            "no_year",
                            f"text {text['id']!r} has no year and its cell {cell} has no other data to take one "
                            "from: give the row a 'year'",
                            modality="text",
                            cell=cell,
                        )
                    )
                for year in years:
                    groups[(cell, year)].texts.append((order, text))

        cells = [
            {
                "kind": "cell",
                "cell": cell,
                "year": year,
                "aerial": g.aerial,
                "dsm": g.dsm,
                "street": g.street,
                "texts": [t for _, t in sorted(g.texts, key=lambda ot: ot[0])],
            }
            for (cell, year), g in sorted(groups.items())
        ]
        return rejects + cells

    # ---------------------------------------------------------------- workers
    def extract(self, item: dict[str, Any]) -> list[RawSample | Reject]:
        """Turn one work item from :meth:`plan` into at most one sample and its rejects."""
        if item.get("kind") == "reject":
            return [
                Reject(
                    source=SOURCE,
                    source_id=item["source_id"],
                    reason=item["reason"],
                    detail=item["detail"],
                    modality=item["modality"],
                    year=item["year"],
                    cell_token=item["cell_token"],
                )
            ]
        if item.get("kind") != "cell":
            raise InputError(f"not a files-source work item (kind {item.get('kind')!r}): pass items from plan()")
        cell, year = str(item["cell"]), int(item["year"])
        lat, lon = token_center(cell)
        out: list[RawSample | Reject] = []
        sample = RawSample(lat_deg=lat, lon_deg=lon, year=year, source=SOURCE, source_id=f"{cell}:{year}")

        if item["aerial"] and self.cfg.aerial_tif is not None:
            try:
                sample.aerial = _aerial_tile(str(self.cfg.aerial_tif), lat, lon, self.data.tile_m, self.data.aerial_px)
            except _RasterReadError as exc:
                out.append(_raster_read_reject("aerial", self.cfg.aerial_tif, cell, year, exc))
            if sample.aerial is not None:
                sample.source_ids["aerial"] = str(self.cfg.aerial_tif)
        if item["dsm"] and self.cfg.dsm_tif is not None:
            try:
                sample.dsm = _dsm_tile(str(self.cfg.dsm_tif), lat, lon, self.data.tile_m, self.data.dsm_px)
            except _RasterReadError as exc:
                out.append(_raster_read_reject("dsm", self.cfg.dsm_tif, cell, year, exc))
            if sample.dsm is not None:
                sample.source_ids["dsm"] = str(self.cfg.dsm_tif)

        rows = [StreetRow(**r) for r in item["street"]]
        if rows:
            views, capped, bad = _select_street(rows, self.data.street_views_per_sample)
            for row, why in bad:
                out.append(
                    Reject(
                        source=SOURCE,
                        source_id=row.id,
                        reason="unreadable_image",
                        detail=f"street image {row.path!r} cannot be read or decoded ({why}): "
                        "fix or remove the file, or drop its row from the index",
                        modality="street",
                        year=year,
                        cell_token=cell,
                    )
                )
            sample.street = views
            if views:
                sample.source_ids["street"] = json.dumps([v.source_id for v in views])
            if capped:
                sample.source_ids["street_capped"] = json.dumps([r.id for r in capped])

        texts = item["texts"]
        if texts:
            sample.text = _join_texts([t["text"] for t in texts])
            sample.source_ids["text"] = json.dumps([t["id"] for t in texts])

        if sample.aerial is not None or sample.dsm is not None or sample.street or sample.text:
            out.append(sample)
        return out


# --------------------------------------------------------------------- planning


@dataclass
class _Group:
    """What plan() gathers for one (cell, year)."""

    aerial: bool = False
    dsm: bool = False
    street: list[dict[str, Any]] = field(default_factory=list)
    texts: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (file order, {"id", "text"})


class _RowError(Exception):
    """A row that cannot be used: becomes a reject item with this reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _reject_item(
    source_id: str, reason: str, detail: str, *, modality: str = "", year: int | None = None, cell: str = ""
) -> dict[str, Any]:
    return {
        "kind": "reject",
        "source_id": source_id,
        "reason": reason,
        "detail": detail,
        "modality": modality,
        "year": year,
        "cell_token": cell,
    }


def _rasterio() -> Any:
    try:
        import rasterio
        import rasterio.crs
        import rasterio.enums
        import rasterio.errors
        import rasterio.warp
        import rasterio.windows
    except ImportError:
        raise ConfigError("reading aerial_tif/dsm_tif needs rasterio: pip install 'unigeoclip[files]'") from None
    return rasterio


def _plan_raster(modality: str, path: Path, year: int, level: int) -> tuple[list[str], dict[str, Any] | None]:
    """Cells covering a raster's footprint, or a reject item saying why the raster cannot be used."""
    if not path.is_file():
        raise ConfigError(f"data.sources.files.{modality}_tif: {str(path)!r} does not exist or is not a file")
    rasterio = _rasterio()
    try:
        with rasterio.open(path) as ds:
            crs, bounds, count, dtypes = ds.crs, ds.bounds, ds.count, ds.dtypes
    except rasterio.errors.RasterioIOError as exc:
        detail = f"{modality} raster {str(path)!r} cannot be opened ({exc}): check it is a GeoTIFF"
        return [], _reject_item(str(path), "unreadable_raster", detail, modality=modality, year=year)
    if crs is None:
        detail = (
            f"{modality} raster {str(path)!r} has no CRS, so its pixels cannot be placed on Earth: "
            "assign one, e.g. gdal_edit.py -a_srs EPSG:32631 FILE"
        )
        return [], _reject_item(str(path), "raster_without_crs", detail, modality=modality, year=year)
    if modality == "aerial" and (count not in (3, 4) or dtypes[0] != "uint8"):
        detail = (
            f"aerial raster {str(path)!r} has {count} band(s) of {dtypes[0]}; expected 3 or 4 bands of uint8 "
            "(RGB[A]): convert it, e.g. gdal_translate -ot Byte -scale -b 1 -b 2 -b 3 IN OUT"
        )
        return [], _reject_item(str(path), "bad_raster_bands", detail, modality=modality, year=year)
    if modality == "dsm" and count != 1:
        detail = (
            f"dsm raster {str(path)!r} has {count} bands; expected 1 band of heights: keep one, gdal_translate -b 1"
        )
        return [], _reject_item(str(path), "bad_raster_bands", detail, modality=modality, year=year)
    lon_min, lat_min, lon_max, lat_max = rasterio.warp.transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    lat_min, lat_max = max(lat_min, -90.0), min(lat_max, 90.0)
    boxes = [(lon_min, lon_max)] if lon_min <= lon_max else [(lon_min, 180.0), (-180.0, lon_max)]  # antimeridian
    cells: list[str] = []
    for lo, hi in boxes:
        cells += cover_bbox(lat_min, lo, lat_max, hi, level=level)
    return cells, None


def _read_rows(path: Path, what: str) -> tuple[set[str], Iterator[tuple[str, dict[str, Any] | None, str]]]:
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


def _require(columns: set[str], required: tuple[str, ...], path: Path, what: str) -> None:
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


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _coords(row: dict[str, Any]) -> tuple[float, float]:
    lat, lon = _num(row.get("lat_deg")), _num(row.get("lon_deg"))
    if lat is None or lon is None:
        raw = (row.get("lat_deg"), row.get("lon_deg"))
        raise _RowError("missing_coords", f"lat_deg, lon_deg {raw!r} are missing or not numbers (WGS84 degrees)")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise _RowError(
            "coords_out_of_range", f"lat_deg {lat} / lon_deg {lon} out of range (-90..90, -180..180): fix the position"
        )
    return lat, lon


def _iso_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None if value != value else value.date()  # NaT-like values are not equal to themselves
    if isinstance(value, date):
        return value
    text = _str(value)
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        return parsed.date() if isinstance(parsed, datetime) else parsed
    return None


def _street_row(row: dict[str, Any], rid: str, folder: Path) -> StreetRow:
    """A validated street row, or :class:`_RowError`."""
    written = _str(row.get("path"))
    if not written:
        raise _RowError("missing_path", "no 'path': give the image file, relative to the index folder")
    lat, lon = _coords(row)
    heading = _num(row.get("heading_deg"))
    if heading is None:
        raise _RowError("bad_heading", f"heading_deg {row.get('heading_deg')!r} is not a number (0 = north, 90 = east)")
    day = _iso_date(row.get("capture_date"))
    if day is None:
        raise _RowError("bad_date", f"capture_date {row.get('capture_date')!r} is not an ISO date such as 2021-06-14")
    projection = _str(row.get("projection")).lower() or "perspective"
    if projection not in PROJECTIONS:
        raise _RowError(
            "bad_projection", f"projection {row.get('projection')!r} is not one of {', '.join(PROJECTIONS)}"
        )
    fov = _num(row.get("fov_deg"))
    if fov is None and _str(row.get("fov_deg")):
        raise _RowError("bad_fov", f"fov_deg {row.get('fov_deg')!r} is not a number")
    fov = fov if fov is not None else (360.0 if projection == "equirectangular" else 90.0)
    if not 0.0 < fov <= 360.0:
        raise _RowError("bad_fov", f"fov_deg {fov} is outside (0, 360]")
    full = os.path.normpath(written if os.path.isabs(written) else folder / written)
    return StreetRow(rid, full, lat, lon, heading % 360.0, fov, projection, day.isoformat())


def _plan_street(index: Path, level: int, rejects: list[dict[str, Any]]) -> Iterator[tuple[str, int, StreetRow]]:
    """Valid street rows with their (cell, year); bad rows go to ``rejects``."""
    columns, rows = _read_rows(index, "street_index")
    _require(columns, STREET_COLUMNS, index, "street_index")
    folder = index.parent.absolute()
    seen: dict[str, str] = {}  # image path or id -> label of its first row
    for label, row, _ in rows:
        assert row is not None  # only JSONL yields unparsable rows
        rid = _str(row.get("id")) or _str(row.get("path")) or label
        try:
            street = _street_row(row, rid, folder)
            first = seen.get(street.path) or seen.get(rid)
            if first is not None:
                raise _RowError(
                    "duplicate", f"image {street.path!r} (id {rid!r}) is already listed at {first}: keep one row"
                )
        except _RowError as exc:
            rejects.append(_reject_item(rid, exc.reason, f"{label}: {exc.detail}", modality="street"))
            continue
        seen[street.path] = seen[rid] = label
        yield cell_token(street.lat_deg, street.lon_deg, level), int(street.capture_date[:4]), street


def _plan_text(
    path: Path, level: int, rejects: list[dict[str, Any]]
) -> Iterator[tuple[str, int | None, int, dict[str, str]]]:
    """Valid texts as ``(cell, year or None, file order, {"id", "text"})``; bad rows go to ``rejects``."""
    columns, rows = _read_rows(path, "text")
    _require(columns, TEXT_COLUMNS, path, "text")
    seen: dict[tuple[str, int | None, str], str] = {}  # (cell, year, text) -> label of its first row
    for order, (label, row, error) in enumerate(rows):
        tid = label if row is None else _str(row.get("id")) or label
        try:
            if row is None:
                raise _RowError("bad_json", f"{error}: write one JSON object per line")
            cell, year, text = _text_row(row, level)
            first = seen.get((cell, year, text))
            if first is not None:
                raise _RowError("duplicate", f"the same text is already given for cell {cell}, year {year} at {first}")
        except _RowError as exc:
            rejects.append(_reject_item(tid, exc.reason, f"{label}: {exc.detail}", modality="text"))
            continue
        seen[(cell, year, text)] = label
        yield cell, year, order, {"id": tid, "text": text}


def _text_row(row: dict[str, Any], level: int) -> tuple[str, int | None, str]:
    """``(cell, year or None, whitespace-normalised text)`` of a validated text row, or :class:`_RowError`."""
    lat, lon = _coords(row)
    text = " ".join(_str(row.get("text")).split())
    if not text:
        raise _RowError("empty_text", "the text is empty: fill it in or remove the row")
    year: int | None = None
    if _str(row.get("year")):
        y = _num(row.get("year"))
        if y is None or y != int(y):
            raise _RowError(
                "bad_year", f"year {row.get('year')!r} is not a whole number: give e.g. 2021, or leave it empty"
            )
        year = int(y)
    return cell_token(lat, lon, level), year, text


def _join_texts(texts: list[str]) -> str:
    """Distinct texts (whitespace-normalised) in the given order, joined with a space."""
    distinct = dict.fromkeys(" ".join(t.split()) for t in texts)
    return " ".join(t for t in distinct if t)


# --------------------------------------------------------------------- rasters


class _RasterReadError(Exception):
    """A window of a raster that opened fine could not be read (corrupt block)."""


_LOCAL = threading.local()


def _open_raster(path: str) -> DatasetReader:
    """A raster opened once per process and thread (GDAL handles are neither fork- nor thread-safe)."""
    rasterio = _rasterio()
    if getattr(_LOCAL, "pid", None) != os.getpid():
        _LOCAL.pid, _LOCAL.datasets = os.getpid(), {}
    datasets: dict[str, DatasetReader] = _LOCAL.datasets
    ds = datasets.get(path)
    if ds is None or ds.closed:
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(
                f"raster {path!r} was planned on the driver but cannot be opened on this worker ({exc}): "
                "put it on storage every Ray node can read under the same path"
            ) from None
        datasets[path] = ds
    return ds


def _local_grid(lat: float, lon: float, tile_m: float, px: int) -> tuple[Any, Any]:
    """CRS and affine transform of a north-up ``tile_m`` square of ``px`` pixels centred on a point."""
    rasterio = _rasterio()
    from affine import Affine

    crs = rasterio.crs.CRS.from_proj4(f"+proj=aeqd +lat_0={lat!r} +lon_0={lon!r} +x_0=0 +y_0=0 +datum=WGS84 +units=m")
    res = tile_m / px
    return crs, Affine(res, 0.0, -tile_m / 2, 0.0, -res, tile_m / 2)


def _source_window(ds: DatasetReader, dst_crs: Any, tile_m: float, pad: int = 2) -> Any | None:
    """The integer pixel window of ``ds`` holding the tile (plus ``pad`` pixels for bilinear), or None if outside."""
    rasterio = _rasterio()
    edge = np.linspace(-tile_m / 2, tile_m / 2, 21)
    xs = np.concatenate([edge, edge, np.full(21, -tile_m / 2), np.full(21, tile_m / 2)])
    ys = np.concatenate([np.full(21, -tile_m / 2), np.full(21, tile_m / 2), edge, edge])
    sx, sy = rasterio.warp.transform(dst_crs, ds.crs, xs.tolist(), ys.tolist())
    inv, x, y = ~ds.transform, np.asarray(sx), np.asarray(sy)
    cols, rows = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f  # pixel coordinates
    if not (np.all(np.isfinite(cols)) and np.all(np.isfinite(rows))):
        return None
    c0, c1 = max(math.floor(cols.min()) - pad, 0), min(math.ceil(cols.max()) + pad, ds.width)
    r0, r1 = max(math.floor(rows.min()) - pad, 0), min(math.ceil(rows.max()) + pad, ds.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)


def _window_transform(transform: Any, win: Any) -> Any:
    """The affine transform of a window (composed by hand: works with every ``affine`` version, no warnings)."""
    t, col, row = transform, win.col_off, win.row_off
    return type(t)(t.a, t.b, t.c + t.a * col + t.b * row, t.d, t.e, t.f + t.d * col + t.e * row)


def _aerial_tile(path: str, lat: float, lon: float, tile_m: float, px: int) -> bytes | None:
    """RGB PNG of the tile around a point, or None when less than MIN_COVERAGE of it has data."""
    rasterio = _rasterio()
    ds = _open_raster(path)
    dst_crs, dst_transform = _local_grid(lat, lon, tile_m, px)
    win = _source_window(ds, dst_crs, tile_m)
    if win is None:
        return None
    try:
        rgb = ds.read((1, 2, 3), window=win)  # (3, h, w) uint8
        mask = ds.read_masks(1, window=win)  # (h, w): 0 = no data (alpha, nodata or internal mask)
    except rasterio.errors.RasterioIOError as exc:
        raise _RasterReadError(str(exc)) from None
    src = np.concatenate([rgb, mask[None]], axis=0)  # (4, h, w): band 4 is the validity alpha
    dst = np.zeros((4, px, px), dtype=np.uint8)
    rasterio.warp.reproject(
        src,
        dst,
        src_transform=_window_transform(ds.transform, win),
        src_crs=ds.crs,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        src_alpha=4,
        dst_alpha=4,
        resampling=rasterio.enums.Resampling.bilinear,
    )
    valid = dst[3] >= 128  # (px, px)
    if valid.mean() < MIN_COVERAGE:
        return None
    image = np.where(valid[None], dst[:3], 0).transpose(1, 2, 0)  # (px, px, 3)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _dsm_tile(path: str, lat: float, lon: float, tile_m: float, px: int) -> np.ndarray | None:
    """(px, px) float32 heights in metres (NaN = no data) around a point, or None when mostly empty."""
    rasterio = _rasterio()
    ds = _open_raster(path)
    dst_crs, dst_transform = _local_grid(lat, lon, tile_m, px)
    win = _source_window(ds, dst_crs, tile_m)
    if win is None:
        return None
    try:
        band = ds.read(1, window=win, masked=True)  # (h, w), nodata masked
    except rasterio.errors.RasterioIOError as exc:
        raise _RasterReadError(str(exc)) from None
    src = np.ma.filled(band.astype(np.float32), np.nan)
    dst = np.full((px, px), np.nan, dtype=np.float32)
    rasterio.warp.reproject(
        src,
        dst,
        src_transform=_window_transform(ds.transform, win),
        src_crs=ds.crs,
        src_nodata=np.nan,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        dst_nodata=np.nan,
        resampling=rasterio.enums.Resampling.bilinear,
    )
    if np.isfinite(dst).mean() < MIN_COVERAGE:
        return None
    return dst


def _raster_read_reject(modality: str, path: Path, cell: str, year: int, exc: Exception) -> Reject:
    return Reject(
        source=SOURCE,
        source_id=f"{path}:{cell}",
        reason="unreadable_raster",
        detail=f"the {modality} window of cell {cell} in {str(path)!r} cannot be read ({exc}): "
        "the file may be corrupt there; check it with gdalinfo -checksum",
        modality=modality,
        year=year,
        cell_token=cell,
    )


# ---------------------------------------------------------------------- street


def _read_image(path: str) -> bytes:
    """The file's encoded bytes, after checking Pillow decodes them fully."""
    with open(path, "rb") as f:
        raw = f.read()
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
    return raw


def _select_street(
    rows: list[StreetRow], cap: int
) -> tuple[list[StreetView], list[StreetRow], list[tuple[StreetRow, str]]]:
    """Up to ``cap`` views by farthest-point sampling among the readable images: (kept, capped, unreadable + why).

    Every listed image is read and decoded, not only the kept ones, so that a broken
    file is always reported, whatever the cap.
    """
    good: list[tuple[StreetRow, bytes]] = []
    bad: list[tuple[StreetRow, str]] = []
    for row in rows:
        try:
            good.append((row, _read_image(row.path)))
        except _IMAGE_ERRORS as exc:
            bad.append((row, f"{type(exc).__name__}: {exc}"))
    picks = farthest_point_indices([row for row, _ in good], cap)
    views = [
        StreetView(
            image=raw,
            lat_deg=row.lat_deg,
            lon_deg=row.lon_deg,
            heading_deg=row.heading_deg,
            projection="equirectangular" if row.projection == "equirectangular" else "perspective",
            fov_deg=row.fov_deg,
            capture_date=row.capture_date,
            source_id=row.id,
        )
        for row, raw in (good[i] for i in picks)
    ]
    kept = set(picks)
    capped = [row for i, (row, _) in enumerate(good) if i not in kept]
    return views, capped, bad
