"""The user-files source over a tiny dataset the test writes itself: rasters in two CRSs, street images, texts."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from unigeoclip.errors import ConfigError
from unigeoclip.geo.s2 import cell_token, token_center
from unigeoclip.sources.base import RawSample, Reject, Source
from unigeoclip.sources.files import FilesSource, FilesSourceConfig
from unigeoclip.sources.street_select import farthest_point_indices, farthest_point_views

from ..files_world import BUILDING_OFFSET_M, DATA, PARIS, YEAR, World, build_world, near


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("files_source"))


def run(source: FilesSource) -> tuple[list[RawSample], list[Reject]]:
    """plan() then extract() of every item, each through JSON, as the Ray pipeline does."""
    items = source.plan()
    out = [r for item in items for r in source.extract(json.loads(json.dumps(item)))]
    samples = [r for r in out if isinstance(r, RawSample)]
    rejects = [r for r in out if isinstance(r, Reject)]
    assert len(samples) + len(rejects) == len(out)
    return samples, rejects


@pytest.fixture(scope="module")
def ingested(world: World) -> tuple[list[RawSample], list[Reject]]:
    cfg = FilesSourceConfig(
        aerial_tif=world.aerial, dsm_tif=world.dsm, raster_year=YEAR, street_index=world.street_index, text=world.text
    )
    return run(FilesSource(cfg, DATA))


def by_key(samples: list[RawSample]) -> dict[str, RawSample]:
    keys = [s.source_id for s in samples]
    assert len(keys) == len(set(keys)), "one sample per (cell, year)"
    return dict(zip(keys, samples, strict=True))


def test_is_a_source_and_pickles_cheaply(world: World) -> None:
    import pickle

    src = FilesSource(FilesSourceConfig(aerial_tif=world.aerial, raster_year=YEAR), DATA)
    assert isinstance(src, Source) and src.name == "files"
    src.extract(next(i for i in src.plan() if i["kind"] == "cell"))  # opens the raster in this process
    assert len(pickle.dumps(src)) < 5_000


def test_aerial_and_dsm_are_co_registered_across_crs(ingested: tuple[list[RawSample], list[Reject]]) -> None:
    samples = by_key(ingested[0])
    s = samples[f"{cell_token(*PARIS, DATA.cell_level)}:{YEAR}"]
    assert s.aerial is not None and s.dsm is not None
    assert (s.lat_deg, s.lon_deg) == pytest.approx(token_center(s.source_id.split(":")[0]))
    rgb = np.asarray(Image.open(io.BytesIO(s.aerial)))
    assert rgb.shape == (DATA.aerial_px, DATA.aerial_px, 3) and rgb.dtype == np.uint8
    assert s.dsm.shape == (DATA.dsm_px, DATA.dsm_px) and s.dsm.dtype == np.float32
    assert float(np.nanmax(s.dsm)) == pytest.approx(30.0, abs=0.5)

    def centroid_m(mask: np.ndarray) -> np.ndarray:
        res = DATA.tile_m / mask.shape[0]
        rows, cols = np.nonzero(mask)
        return np.array([-DATA.tile_m / 2 + (cols.mean() + 0.5) * res, DATA.tile_m / 2 - (rows.mean() + 0.5) * res])

    bright = rgb.min(axis=2) > 200
    tall = s.dsm > 15.0
    assert bright.sum() > 20 and tall.sum() > 5
    # Both land where the building is (20 m east, 15 m south of the cell centre), and on each other.
    np.testing.assert_allclose(centroid_m(bright), BUILDING_OFFSET_M, atol=2.5)
    np.testing.assert_allclose(centroid_m(tall), BUILDING_OFFSET_M, atol=3.0)
    bright_on_dsm_grid = bright.reshape(DATA.dsm_px, 2, DATA.dsm_px, 2).mean(axis=(1, 3)) > 0.5
    assert (bright_on_dsm_grid & tall).sum() / (bright_on_dsm_grid | tall).sum() > 0.6
    assert float(np.nanmedian(s.dsm[~tall])) < 2.0  # the rest is 0-2 m ground


def test_nodata_becomes_nan_and_edges_without_data_are_absent(ingested: tuple[list[RawSample], list[Reject]]) -> None:
    samples = ingested[0]
    dsms = [s.dsm for s in samples if s.dsm is not None]
    assert dsms and any(np.isnan(d).any() for d in dsms)  # the nodata corner
    assert all(np.nanmin(d) > -1.0 for d in dsms)  # -9999 never leaks as a height
    raster_cells = [s for s in samples if s.year == YEAR]
    assert any(s.aerial is None for s in raster_cells) or any(s.dsm is None for s in raster_cells)


def test_street_views_capped_by_farthest_point_sampling(
    world: World, ingested: tuple[list[RawSample], list[Reject]]
) -> None:
    samples = by_key(ingested[0])
    s = samples[f"{world.building_cell}:{YEAR}"]
    kept = [v.source_id for v in s.street]
    assert len(kept) == DATA.street_views_per_sample
    assert "b" in kept and not {"a", "c"} <= set(kept)  # a and c are near-duplicates: only one is kept
    capped = json.loads(s.source_ids["street_capped"])
    assert sorted(kept + capped) == ["a", "b", "c"]
    assert json.loads(s.source_ids["street"]) == kept
    view = s.street[0]
    assert view.image == (world.root / "street" / f"{view.source_id}.png").read_bytes()  # not re-encoded
    assert view.projection == "perspective" and view.fov_deg == 90.0 and view.capture_date == "2021-05-04"


def test_every_good_input_is_in_a_sample_and_bad_ones_are_rejects(
    world: World, ingested: tuple[list[RawSample], list[Reject]]
) -> None:
    samples, rejects = ingested
    assert sorted((r.source_id, r.reason) for r in rejects) == [
        ("broken", "unreadable_image"),
        ("lat95", "coords_out_of_range"),
        ("missing", "unreadable_image"),
        ("t2", "empty_text"),
    ]
    assert all(r.source == "files" and r.detail for r in rejects)
    broken = next(r for r in rejects if r.source_id == "broken")
    assert broken.modality == "street" and broken.cell_token == world.building_cell and broken.year == YEAR

    seen: set[str] = set()
    for s in samples:
        seen |= {v.source_id for v in s.street} | set(json.loads(s.source_ids.get("street_capped", "[]")))
    assert seen == {"a", "b", "c", "d"}
    keyed = by_key(samples)
    # The yearless text joins every year of its cell: the raster year and the 2023 street image.
    for year in (YEAR, 2023):
        s = keyed[f"{world.building_cell}:{year}"]
        assert s.text == "A tall white tower by the river."
        assert json.loads(s.source_ids["text"]) == ["t1"]
    assert [v.source_id for v in keyed[f"{world.building_cell}:2023"].street] == ["d"]
    assert keyed[f"{world.building_cell}:2023"].aerial is None  # the rasters are of 2021
    # The cell whose only image is missing keeps its rasters.
    other = keyed[f"{world.other_cell}:{YEAR}"]
    assert other.street == [] and other.aerial is not None and other.dsm is not None


def test_raster_without_crs_is_one_reject_and_the_rest_ingests(world: World) -> None:
    cfg = FilesSourceConfig(dsm_tif=world.dsm_nocrs, raster_year=YEAR, street_index=world.street_index)
    samples, rejects = run(FilesSource(cfg, DATA))
    crs_rejects = [r for r in rejects if r.reason == "raster_without_crs"]
    assert len(crs_rejects) == 1 and "dsm_nocrs.tif" in crs_rejects[0].source_id
    assert "gdal_edit" in crs_rejects[0].detail
    assert all(s.dsm is None for s in samples)
    assert {v.source_id for s in samples for v in s.street} >= {"b", "d"}


def test_plan_rejects_bad_rows_and_config_errors_name_the_problem(tmp_path: Path, world: World) -> None:
    index = tmp_path / "index.csv"
    a = world.root / "street" / "a.png"
    index.write_text(
        "path,lat_deg,lon_deg,heading_deg,capture_date,projection\n"
        f"{a},48.85,2.35,10,2022-03-01,\n"
        f"{a},48.85,2.35,10,2022-03-01,\n"  # the same image again
        f"{a.with_name('b.png')},48.85,2.35,10,March 2022,\n"
        f"{a.with_name('c.png')},,2.35,10,2022-03-01,\n"
        f"{a.with_name('d.jpg')},48.85,2.35,10,2022-03-01,fisheye\n"
    )
    texts = tmp_path / "texts.csv"
    texts.write_text("lat_deg,lon_deg,text,year\n48.85,2.35,Cafe,2022\n48.85,2.35,Cafe ,2022\n10.0,10.0,Desert,\n")
    items = FilesSource(FilesSourceConfig(street_index=index, text=texts), DATA).plan()
    json.dumps(items)
    reasons = sorted(i["reason"] for i in items if i["kind"] == "reject")
    assert reasons == ["bad_date", "bad_projection", "duplicate", "duplicate", "missing_coords", "no_year"]
    cells = [i for i in items if i["kind"] == "cell"]
    assert len(cells) == 1 and cells[0]["year"] == 2022 and len(cells[0]["street"]) == 1

    bad = tmp_path / "bad.csv"
    bad.write_text("path,lat_deg,lon_deg,capture_date\nx.png,1,2,2020-01-01\n")
    with pytest.raises(ConfigError, match=r"heading_deg.*bad\.csv|bad\.csv.*heading_deg"):
        FilesSource(FilesSourceConfig(street_index=bad), DATA).plan()
    with pytest.raises(ConfigError, match="raster_year"):
        FilesSource(FilesSourceConfig(aerial_tif=world.aerial), DATA)
    with pytest.raises(ConfigError, match="extension"):
        FilesSource(FilesSourceConfig(text=world.aerial), DATA).plan()


def test_parquet_index_panoramas_and_unusable_rasters(tmp_path: Path, world: World) -> None:
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    table = pa.table(
        {
            "path": [str(world.root / "street" / "d.jpg")] * 2,
            "lat_deg": [48.85, 48.85],
            "lon_deg": [2.35, 2.36],
            "heading_deg": [10.0, None],
            "capture_date": [datetime.datetime(2022, 5, 1, 12), datetime.datetime(2022, 5, 2)],
            "projection": ["equirectangular", None],
        }
    )
    pq.write_table(table, tmp_path / "index.parquet")
    cfg = FilesSourceConfig(aerial_tif=tmp_path / "junk.tif", raster_year=YEAR, street_index=tmp_path / "index.parquet")
    samples, rejects = run(FilesSource(cfg, DATA))
    assert sorted(r.reason for r in rejects) == ["bad_heading", "unreadable_raster"]
    [sample] = samples
    [view] = sample.street
    assert (sample.year, view.projection, view.fov_deg, view.capture_date) == (
        2022,
        "equirectangular",
        360.0,
        "2022-05-01",
    )


@dataclass
class View:
    lat_deg: float
    lon_deg: float
    heading_deg: float
    projection: str = "perspective"


def test_farthest_point_views_skips_near_duplicates() -> None:
    lat0, lon0 = PARIS
    views = [
        View(*near(lat0, lon0, 0.0, 0.0), 0.0),  # three near-duplicates at the centre
        View(*near(lat0, lon0, 0.5, 0.0), 2.0),
        View(*near(lat0, lon0, 0.0, 0.5), 358.0),
        View(*near(lat0, lon0, 60.0, 0.0), 90.0),
        View(*near(lat0, lon0, -30.0, 50.0), 200.0),
        View(*near(lat0, lon0, -30.0, -50.0), 300.0),
    ]
    picks = farthest_point_indices(views, 3)
    assert len(set(picks) & {0, 1, 2}) <= 1 and len(picks) == 3
    assert picks == farthest_point_indices(views, 3)  # deterministic
    assert farthest_point_indices(views, 6)[:3] == picks  # a prefix order
    assert farthest_point_views(views, 3) == [views[i] for i in picks]
    assert sorted(farthest_point_indices(views, 10)) == list(range(6))
    assert farthest_point_indices(views, 0) == [] and farthest_point_indices([], 3) == []


def test_farthest_point_heading_counts_for_photos_not_panoramas() -> None:
    lat0, lon0 = PARIS
    spot = near(lat0, lon0, 0.0, 0.0)
    photos = [View(*spot, 0.0), View(*spot, 10.0), View(*spot, 180.0), View(*near(lat0, lon0, 20.0, 0.0), 0.0)]
    # Same spot looking back (90 m apart by heading) beats 20 m away looking the same way.
    assert farthest_point_indices(photos, 2) == [0, 2]
    panos = [View(v.lat_deg, v.lon_deg, v.heading_deg, "equirectangular") for v in photos]
    assert farthest_point_indices(panos, 2) == [0, 3]


def drop_layout(world: World, drop: Path) -> None:
    """The world's inputs as year folders: 2021 with everything, 2022 with a second aerial mosaic only."""
    import shutil

    for year, parts in ((2021, ("aerial", "dsm")), (2022, ("aerial",))):
        for part in parts:
            (drop / str(year) / part).mkdir(parents=True)
            shutil.copy(getattr(world, part), drop / str(year) / part / f"{part}.tif")
    shutil.copytree(world.root / "street", drop / "2021" / "street")
    shutil.copy(world.street_index, drop / "2021" / "street.csv")
    shutil.copy(world.text, drop / "2021" / "text.jsonl")


def test_a_drop_folder_of_years_plans_what_the_single_files_plan(tmp_path: Path, world: World) -> None:
    drop = tmp_path / "drop"
    drop_layout(world, drop)
    (drop / ".upload-in-progress").write_text("")  # hidden names are someone else's business
    dropped = FilesSource(FilesSourceConfig(drop_dir=drop), DATA).plan()
    files = FilesSource(FilesSourceConfig(aerial_tif=world.aerial, dsm_tif=world.dsm, raster_year=2021,
                                          street_index=world.street_index, text=world.text), DATA).plan()  # fmt: skip

    def cells(items: list[dict], year: int) -> dict[str, dict]:
        return {i["cell"]: i for i in items if i["kind"] == "cell" and i["year"] == year}

    # 2021: the same cells, with the same modalities and texts (the folder's year for the text without one)
    a, b = cells(dropped, 2021), cells(files, 2021)
    assert a.keys() == b.keys() and a
    for cell in a:
        assert (bool(a[cell]["aerial"]), bool(a[cell]["dsm"])) == (bool(b[cell]["aerial"]), bool(b[cell]["dsm"]))
        assert a[cell]["texts"] == b[cell]["texts"]
        assert [r | {"path": Path(r["path"]).name} for r in a[cell]["street"]] == [
            r | {"path": Path(r["path"]).name} for r in b[cell]["street"]
        ]
    assert sorted(i["reason"] for i in dropped if i["kind"] == "reject") == sorted(
        i["reason"] for i in files if i["kind"] == "reject"
    )
    # 2022: the new mosaic alone, over the same footprint
    new = cells(dropped, 2022)
    assert new.keys() == {c for c, i in a.items() if i["aerial"]}
    assert all(i["aerial"] == [str(drop / "2022" / "aerial" / "aerial.tif")] and not i["dsm"] for i in new.values())
    samples, _ = run(FilesSource(FilesSourceConfig(drop_dir=drop), DATA))
    assert {s.year for s in samples} == {2021, 2022, 2023}  # 2023: a street photo's capture date, not its folder


def test_overlapping_tiles_of_a_year_give_a_cell_the_first_that_covers_it(tmp_path: Path, world: World) -> None:
    """``a.tif`` has data in its west half only: the east takes ``b.tif`` (the whole mosaic), and no cell is lost."""
    import rasterio

    tiles = tmp_path / "drop" / "2021" / "aerial"
    tiles.mkdir(parents=True)
    with rasterio.open(world.aerial) as src:
        profile, data = src.profile, src.read()
    east_empty = data.copy()
    east_empty[3, :, data.shape[2] // 2 :] = 0  # alpha 0: no data
    for name, pixels in (("a.tif", east_empty), ("b.tif", data)):
        with rasterio.open(tiles / name, "w", **profile) as dst:
            dst.write(pixels)
    items = [i for i in FilesSource(FilesSourceConfig(drop_dir=tmp_path / "drop"), DATA).plan() if i["kind"] == "cell"]
    assert items and all(i["aerial"] == [str(tiles / "a.tif"), str(tiles / "b.tif")] for i in items)
    samples, rejects = run(FilesSource(FilesSourceConfig(drop_dir=tmp_path / "drop"), DATA))
    whole, _ = run(FilesSource(FilesSourceConfig(aerial_tif=world.aerial, raster_year=2021), DATA))
    assert not rejects and {s.source_id for s in samples} == {s.source_id for s in whole}
    used = {s.source_ids["aerial"] for s in samples}
    assert used == {str(tiles / "a.tif"), str(tiles / "b.tif")}, "the west from a.tif, the east from b.tif"
    centre_lon = PARIS[1]
    assert all(s.source_ids["aerial"].endswith("b.tif") for s in samples if s.lon_deg > centre_lon + 0.002)


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("notes.txt", "not a year folder"),
        ("21/aerial/x.tif", "not a year folder"),
        ("2021/aerial/readme.md", "not GeoTIFFs"),
        ("2021/streets.csv", "not an input the drop folder knows"),
    ],
)
def test_a_drop_folder_refuses_what_it_does_not_know(tmp_path: Path, where: str, match: str) -> None:
    drop = tmp_path / "drop"
    (drop / where).parent.mkdir(parents=True)
    (drop / where).write_text("")
    with pytest.raises(ConfigError, match=match):
        FilesSource(FilesSourceConfig(drop_dir=drop), DATA).plan()


def test_a_missing_drop_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        FilesSource(FilesSourceConfig(drop_dir=tmp_path / "nowhere"), DATA).plan()
