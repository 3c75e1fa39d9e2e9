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

``drop_dir``
    A folder new imagery is dropped into, for scheduled runs (``jobs/refresh.py``). It holds
    one folder per acquisition year, each with any of::

        DROP/2024/aerial/*.tif     RGB(A) mosaics of that year (as ``aerial_tif``; several tiles allowed)
        DROP/2024/dsm/*.tif        surface models of that year (as ``dsm_tif``)
        DROP/2024/street.csv       a street index (or ``street.parquet``; as ``street_index``)
        DROP/2024/text.jsonl       texts (or ``text.csv``; as ``text``); a row without a year takes the folder's

    Every run reads the whole folder; what the store holds already (same cell, year and
    content) is skipped, so a run after a new year was dropped writes only that year's
    samples. Other names in the folder are a :class:`ConfigError`, not ignored, so a typo
    never silently drops imagery. It combines with the single-file inputs above.

Where tiles of the same modality and year overlap, a cell takes the first (by file name)
that covers it.

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
  sampling on position and heading (:mod:`unigeoclip.sources.street_select`) among the
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

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from ..config import DataConfig
from ..errors import ConfigError, InputError
from ..geo.s2 import cell_token, token_center
from ..preprocess.imaging import decode_rgb
from .base import RawSample, Reject, SourceConfig, StreetView
from .geotiff import RasterReadError, UnusableRasterError, aerial_tile, covered_cells, dsm_tile
from .street_select import farthest_point_indices
from .tabular import (
    STREET_COLUMNS,
    TEXT_COLUMNS,
    RowError,
    StreetRow,
    as_text,
    join_texts,
    read_rows,
    require_columns,
    street_row,
    text_row,
)

SOURCE = "files"
# Opening the file (OSError, or ValueError for a bad path), decode_rgb's InputError (a ValueError), and the
# EOFError some Pillow plugins raise on a truncated file, which decode_rgb lets through.
_IMAGE_ERRORS = (OSError, ValueError, EOFError)

_T = TypeVar("_T")
_TileReader = Callable[[str, float, float, float, int], _T | None]  # (path, lat, lon, tile_m, px) -> tile or None


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

    def inputs(self) -> Inputs:
        """Every input file, with its year where the layout gives one: the single files, then the drop folder."""
        cfg = self.cfg
        found = Inputs()
        for modality, path in (("aerial", cfg.aerial_tif), ("dsm", cfg.dsm_tif)):
            if path is not None:
                assert cfg.raster_year is not None  # checked in __init__
                found.rasters.append((modality, path, cfg.raster_year))
        if cfg.street_index is not None:
            found.street.append(cfg.street_index)
        if cfg.text is not None:
            found.text.append((cfg.text, None))
        if cfg.drop_dir is not None:
            _scan_drop_dir(cfg.drop_dir, found)
        return found

    # ----------------------------------------------------------------- driver
    def plan(self) -> list[dict[str, Any]]:
        """Read the indexes, validate rows and return one work item per (cell, year), plus reject items."""
        cfg = self.cfg
        if not any((cfg.aerial_tif, cfg.dsm_tif, cfg.street_index, cfg.text, cfg.drop_dir)):
            raise ConfigError(
                "data.sources.files has no input: set at least one of aerial_tif, dsm_tif, street_index, text, drop_dir"
            )
        found = self.inputs()
        rejects: list[dict[str, Any]] = []
        groups: dict[tuple[str, int], _Group] = {}

        def group(cell: str, year: int) -> _Group:
            return groups.setdefault((cell, year), _Group())

        for modality, path, year in found.rasters:
            try:
                covered = covered_cells(modality, path, self.data.cell_level)
            except UnusableRasterError as exc:
                rejects.append(_reject_item(str(path), exc.reason, exc.detail, modality=modality, year=year))
                covered = []
            for cell in covered:
                getattr(group(cell, year), modality).append(str(path))

        for index in found.street:
            for cell, year, row in _plan_street(index, self.data.cell_level, rejects):
                group(cell, year).street.append(asdict(row))

        yearless: list[tuple[str, int, dict[str, str]]] = []
        order = 0  # texts keep the order of the files and of the rows in them
        for path, default_year in found.text:
            for cell, text_year, _, text in _plan_text(path, self.data.cell_level, rejects):
                order += 1
                text_year = default_year if text_year is None else text_year
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

        for path in item["aerial"]:  # the first tile that covers the cell
            sample.aerial = self._tile(sample, cell, "aerial", Path(path), aerial_tile, self.data.aerial_px, out)
            if sample.aerial is not None:
                break
        for path in item["dsm"]:
            sample.dsm = self._tile(sample, cell, "dsm", Path(path), dsm_tile, self.data.dsm_px, out)
            if sample.dsm is not None:
                break

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
            sample.text = join_texts([t["text"] for t in texts])
            sample.source_ids["text"] = json.dumps([t["id"] for t in texts])

        if sample.aerial is not None or sample.dsm is not None or sample.street or sample.text:
            out.append(sample)
        return out

    def _tile(
        self,
        sample: RawSample,
        cell: str,
        modality: str,
        path: Path,
        read: _TileReader[_T],
        px: int,
        out: list[RawSample | Reject],
    ) -> _T | None:
        """One raster's tile around the sample, noted in its source ids; an unreadable window is a reject in ``out``.

        The same steps serve the aerial and the dsm raster: only the reader and the tile size differ.
        """
        try:
            tile = read(str(path), sample.lat_deg, sample.lon_deg, self.data.tile_m, px)
        except RasterReadError as exc:
            out.append(
                Reject(
                    source=SOURCE,
                    source_id=f"{path}:{cell}",
                    reason="unreadable_raster",
                    detail=f"the {modality} window of cell {cell} in {str(path)!r} cannot be read ({exc}): "
                    "the file may be corrupt there; check it with gdalinfo -checksum",
                    modality=modality,
                    year=sample.year,
                    cell_token=cell,
                )
            )
            return None
        if tile is not None:
            sample.source_ids[modality] = str(path)
        return tile


# --------------------------------------------------------------------- planning


class FilesSourceConfig(SourceConfig):
    """A user's own data (formats in docs/data.md)."""

    NAME: ClassVar[str] = "files"

    aerial_tif: Path | None = Field(None, description="GeoTIFF mosaic, RGB(A), any CRS")
    dsm_tif: Path | None = Field(None, description="GeoTIFF surface model, one band of metres, any CRS")
    raster_year: int | None = Field(None, description="acquisition year of the mosaics (required with them)")
    street_index: Path | None = Field(
        None, description="CSV/Parquet: path, lat_deg, lon_deg, heading_deg, capture_date[, fov_deg, projection]"
    )
    text: Path | None = Field(None, description="CSV/JSONL: lat_deg, lon_deg, text[, year]")
    drop_dir: Path | None = Field(
        None,
        description="folder of year folders (DROP/2024/aerial/*.tif, dsm/*.tif, street.csv, text.jsonl) that "
        "scheduled runs ingest; what is stored already is skipped",
    )


@dataclass
class Inputs:
    """The files one run reads: ``(modality, raster, year)``, street indexes, ``(text file, default year)``."""

    rasters: list[tuple[str, Path, int]] = field(default_factory=list)
    street: list[Path] = field(default_factory=list)
    text: list[tuple[Path, int | None]] = field(default_factory=list)


RASTER_SUFFIXES = (".tif", ".tiff")
STREET_NAMES = ("street.csv", "street.parquet")
TEXT_NAMES = ("text.jsonl", "text.csv")


def _scan_drop_dir(root: Path, found: Inputs) -> None:
    """Add what ``root/<year>/`` folders hold to ``found`` (layout in the module docstring)."""
    if not root.is_dir():
        raise ConfigError(f"data.sources.files.drop_dir {str(root)!r} is not a folder: create it or fix the path")
    for folder in sorted(root.iterdir()):
        if folder.name.startswith("."):  # .partial uploads, editors' files
            continue
        if not (folder.is_dir() and folder.name.isdigit() and len(folder.name) == 4):
            raise ConfigError(
                f"{str(folder)!r} in the drop folder is not a year folder: put new imagery in {root}/<year>/ "
                "(aerial/*.tif, dsm/*.tif, street.csv, text.jsonl)"
            )
        year = int(folder.name)
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and entry.name in ("aerial", "dsm"):
                tiles = [t for t in sorted(entry.iterdir()) if not t.name.startswith(".")]
                odd = [t.name for t in tiles if t.suffix.lower() not in RASTER_SUFFIXES]
                if odd:
                    raise ConfigError(f"{entry} holds files that are not GeoTIFFs ({', '.join(odd)}): "
                                      "only *.tif / *.tiff go there")  # fmt: skip
                found.rasters.extend((entry.name, t, year) for t in tiles)
            elif entry.name in STREET_NAMES:
                found.street.append(entry)
            elif entry.name in TEXT_NAMES:
                found.text.append((entry, year))
            elif entry.is_dir():  # the street images, wherever the index points
                continue
            else:
                raise ConfigError(
                    f"{str(entry)!r} is not an input the drop folder knows: use aerial/*.tif, dsm/*.tif, "
                    f"{' or '.join(STREET_NAMES)}, {' or '.join(TEXT_NAMES)} (and folders of street images)"
                )


@dataclass
class _Group:
    """What plan() gathers for one (cell, year)."""

    aerial: list[str] = field(default_factory=list)  # rasters that cover the cell, in file-name order
    dsm: list[str] = field(default_factory=list)
    street: list[dict[str, Any]] = field(default_factory=list)
    texts: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (file order, {"id", "text"})


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


def _plan_street(index: Path, level: int, rejects: list[dict[str, Any]]) -> Iterator[tuple[str, int, StreetRow]]:
    """Valid street rows with their (cell, year); bad rows go to ``rejects``."""
    columns, rows = read_rows(index, "street_index")
    require_columns(columns, STREET_COLUMNS, index, "street_index")
    folder = index.parent.absolute()
    seen: dict[str, str] = {}  # image path or id -> label of its first row
    for label, row, _ in rows:
        assert row is not None  # only JSONL yields unparsable rows
        rid = as_text(row.get("id")) or as_text(row.get("path")) or label
        try:
            street = street_row(row, rid, folder)
            first = seen.get(street.path) or seen.get(rid)
            if first is not None:
                raise RowError(
                    "duplicate", f"image {street.path!r} (id {rid!r}) is already listed at {first}: keep one row"
                )
        except RowError as exc:
            rejects.append(_reject_item(rid, exc.reason, f"{label}: {exc.detail}", modality="street"))
            continue
        seen[street.path] = seen[rid] = label
        yield cell_token(street.lat_deg, street.lon_deg, level), int(street.capture_date[:4]), street


def _plan_text(
    path: Path, level: int, rejects: list[dict[str, Any]]
) -> Iterator[tuple[str, int | None, int, dict[str, str]]]:
    """Valid texts as ``(cell, year or None, file order, {"id", "text"})``; bad rows go to ``rejects``."""
    columns, rows = read_rows(path, "text")
    require_columns(columns, TEXT_COLUMNS, path, "text")
    seen: dict[tuple[str, int | None, str], str] = {}  # (cell, year, text) -> label of its first row
    for order, (label, row, error) in enumerate(rows):
        tid = label if row is None else as_text(row.get("id")) or label
        try:
            if row is None:
                raise RowError("bad_json", f"{error}: write one JSON object per line")
            cell, year, text = text_row(row, level)
            first = seen.get((cell, year, text))
            if first is not None:
                raise RowError("duplicate", f"the same text is already given for cell {cell}, year {year} at {first}")
        except RowError as exc:
            rejects.append(_reject_item(tid, exc.reason, f"{label}: {exc.detail}", modality="text"))
            continue
        seen[(cell, year, text)] = label
        yield cell, year, order, {"id": tid, "text": text}


# ---------------------------------------------------------------------- street


def _read_image(path: str) -> bytes:
    """The file's encoded bytes, stored as is (never re-encoded), after checking they decode fully."""
    with open(path, "rb") as f:
        raw = f.read()
    decode_rgb(raw)
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
