"""The evaluation end to end on the tiny store: every metric computed, every picture written, both embedding paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from unigeoclip import Config
from unigeoclip.app.cli import main
from unigeoclip.embed import EmbedOptions, embed
from unigeoclip.eval.suite import EvalOptions, planned_parts
from unigeoclip.ingest.pipeline import IngestSummary
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.earth import EarthSourceConfig

from ..helpers import requires_extra, train_tiny

requires_extra("eval", "sklearn")  # the probes; the pictures need matplotlib, in the same extra

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_models(tiny_world_cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model and its coords-depth-0 twin (the depth ablation)."""
    root = tmp_path_factory.mktemp("eval-models")
    depth0 = tiny_world_cfg.updated({"model": {"coords": {"depth": 0}}})
    return train_tiny(tiny_world_cfg, root / "m", steps=3, seed=5), train_tiny(depth0, root / "d0", steps=3, seed=6)


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_evaluate_writes_every_metric_and_picture(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    store, _ = tiny_store
    model, depth0 = tiny_models
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(model), "--store", str(store.root), "--out", str(out),
                 "--ensemble", "aerial+text->coords", "--ablation", str(depth0), "--probe-points", "200"])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    n = metrics["samples"]
    assert n >= 2 and metrics["split"] == "test_year"
    # the progress line's total is the number of parts run (each timed once here: one ablation model)
    planned = planned_parts(EvalOptions(ablation_models=(depth0,)), has_coords=True, landscape=False)
    assert len(metrics["seconds"]) == planned, metrics["seconds"]

    # retrieval: all 20 directed pairs, recall@1/5/10 and geolocation of the top hit
    assert len(metrics["retrieval"]) == 20
    for key, pair in metrics["retrieval"].items():
        assert pair["gallery"] == n and pair["queries"] == n, key
        assert set(pair["recall"]) == {"1", "5", "10"} and all(0.0 <= v <= 1.0 for v in pair["recall"].values())
        assert pair["recall"]["1"] <= pair["recall"]["5"] <= pair["recall"]["10"]
        assert set(pair["geo"]["acc"]) >= {"100m", "1km", "25km"} and finite(pair["geo"]["median_km"])
        assert f"| {key} |" in report

    # ensembles: "all others -> target" for each of the five, and the asked subset
    assert set(metrics["ensembles"]) >= {
        "aerial+text->coords",
        "street+dsm+text+coords->aerial",
        "aerial+street+dsm+text->coords",
    }
    assert len(metrics["ensembles"]) == 6

    # geocells: four single queries and their ensemble, against S2 centroids
    cells = metrics["geocells"]
    assert cells["cells"] > 10 and set(cells["results"]) == {
        "aerial->cells", "street->cells", "dsm->cells", "text->cells", "aerial+street+dsm+text->cells",
    }  # fmt: skip
    assert all(finite(r["geo"]["median_km"]) for r in cells["results"].values())

    # probes: the model, raw coordinates and GeoCLIP on one spatial-block split, nine real targets each
    probes = metrics["probes"]
    assert probes["test_points"] > 0 and probes["blocks"] >= 3
    assert set(probes["features"]) == {"unigeoclip (tiny)", "raw", "geoclip"}
    dims = {k: v["dim"] for k, v in probes["features"].items()}
    assert dims == {"unigeoclip (tiny)": 32, "raw": 2, "geoclip": 512}
    for feats in probes["features"].values():
        assert len(feats["r2"]) == 9 and all(finite(v) for v in feats["r2"].values())
        assert feats["mean_r2"] == pytest.approx(float(np.mean(list(feats["r2"].values()))))

    # depth ablation: the depth-0 twin on the same split and probe points
    [ablation] = metrics["ablations"]
    assert ablation["coords_depth"] == 0 and finite(ablation["probe_mean_r2"])
    assert len(ablation["coords_r1"]) == 8  # coords <-> four modalities, both directions

    # pictures: every one written, a real PNG, and linked from the report
    assert set(metrics["pictures"]) == {"retrieval", "pca_map", "tsne"}
    for name in metrics["pictures"].values():
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in report
    assert set(metrics["seconds"]) >= {"embed split", "retrieval", "geocells", "pictures"}


def test_evaluate_from_lancedb_matches_encoding(
    tiny_store: tuple[SampleStore, IngestSummary], tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--db`` reads what the embedding job wrote: the same retrieval figures as encoding the store here."""
    store, _ = tiny_store
    model, _ = tiny_models
    db = tmp_path / "db"
    embed(model, store, db, options=EmbedOptions(batch_size=16))
    runs = {}
    for name, extra in (("encoded", []), ("db", ["--db", str(db)])):
        out = tmp_path / name
        args = ["evaluate", "--model", str(model), "--store", str(store.root), "--out", str(out), "--no-pictures"]
        assert main([*args, "--no-geoclip", "--split", "test_region", *extra]) == 0
        runs[name] = json.loads((out / "metrics.json").read_text())
    assert runs["db"]["split"] == "test_region" and runs["db"]["samples"] == runs["encoded"]["samples"]
    for key, pair in runs["encoded"]["retrieval"].items():
        other = runs["db"]["retrieval"][key]
        assert other["recall"] == pytest.approx(pair["recall"], abs=1e-9), key
        assert other["geo"]["median_km"] == pytest.approx(pair["geo"]["median_km"], rel=1e-6), key
    assert runs["db"]["geocells"]["results"].keys() == runs["encoded"]["geocells"]["results"].keys()
    for key, cell in runs["encoded"]["geocells"]["results"].items():
        assert runs["db"]["geocells"]["results"][key]["geo"]["median_km"] == pytest.approx(cell["geo"]["median_km"])
    # the probes read the store's points' coordinate vectors from the db: the same fit as encoding them here
    for feature, fit in runs["encoded"]["probes"]["features"].items():
        assert runs["db"]["probes"]["features"][feature]["r2"] == pytest.approx(fit["r2"], abs=1e-6), feature


def test_places_and_landscape_samples_are_reported_apart(
    ray_cluster: dict, tiny_world_cfg: Config, tmp_path: Path
) -> None:
    """A real-Earth store of Western Europe with landscape samples between its places: the main figures are the
    places' alone (text pairs included), the landscape samples get their own retrieval matrix and probes."""
    from unigeoclip.ingest.pipeline import ingest
    from unigeoclip.sources.earth import EarthSource, is_landscape

    cfg = tiny_world_cfg.updated({"model": {"modalities": ["aerial", "dsm", "text", "coords"]}, "data": {
        "aerial_px": 32, "dsm_px": 32, "splits": {"region_fraction": 0.0},
        "sources": {"earth": {"bbox": [42.0, -5.0, 55.0, 15.0], "min_spacing_km": 60, "max_places": 120,
                              "holdout_fraction": 0.4, "landscape_spacing_km": 80, "seed": 1}}}})  # fmt: skip
    store = SampleStore(tmp_path / "store")
    ingest(EarthSource(EarthSourceConfig.of(cfg.data), cfg.data), store, cfg.data)
    rows = store.samples().to_table(columns=["source_id", "split"], filter="current = true").to_pylist()
    held = [r for r in rows if r["split"] == "test_year"]
    places, scape = ([r for r in held if is_landscape(r["source_id"]) == k] for k in (False, True))
    assert places and scape, "the held-out year has both kinds"
    model = train_tiny(cfg, tmp_path / "model", steps=2, seed=4)
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model), "--store", str(store.root), "--out", str(out), "--no-pictures",
                 "--no-geoclip", "--probe-points", "300"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == len(places) and len(metrics["retrieval"]) == 12
    group = metrics["groups"]["landscape"]
    assert group["samples"] == len(scape) and len(group["retrieval"]) == 6  # aerial, dsm, coords: no text
    assert all(p["gallery"] == len(scape) for p in group["retrieval"].values())
    scape_points = sum(is_landscape(r["source_id"]) for r in rows)
    assert group["probe_points"] == min(scape_points, 300) and math.isfinite(group["probe"])
    assert metrics["probes"]["points"] == min(len(rows) - scape_points, 300)
    assert "Landscape samples, apart" in (out / "report.md").read_text()
