"""Evaluation metrics against plain reference computations on hand-made cases (known neighbours, known distances)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from unigeoclip import Modality
from unigeoclip.errors import InputError
from unigeoclip.eval.embeddings import SplitEmbeddings
from unigeoclip.eval.geocells import CellGallery, geolocate, level_for, padded_bbox
from unigeoclip.eval.probes import BlockSplit, probe, ridge_predictions, spatial_blocks
from unigeoclip.eval.retrieval import ensemble_retrieval, geo_accuracy, recall_matrix
from unigeoclip.eval.suite import parse_ensemble
from unigeoclip.geo.distance import EARTH_RADIUS_KM

from ..helpers import requires_extra

A, T, C = Modality.AERIAL, Modality.TEXT, Modality.COORDS
KM_PER_DEG = math.pi / 180.0 * EARTH_RADIUS_KM  # along the equator


def unit(*angles_deg: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles: cosine similarity = cos(angle difference)."""
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


# Four places on the equator, 0, 1, 2 and 10 degrees east (111.19 km per degree).
LATLON = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 10.0]])
# aerial of place i points at angle AERIAL[i], text at TEXT[i]: nearest neighbours are known by construction.
AERIAL = unit(0, 90, 180, 270)
TEXT = unit(10, 170, 95, 265)  # place 0 -> aerial 0; 1 -> aerial 2 (170 is nearer 180); 2 -> aerial 1; 3 -> aerial 3
PRESENT = {A: np.ones(4, bool), T: np.ones(4, bool), C: np.ones(4, bool)}


def reference(queries: np.ndarray, gallery: np.ndarray, own: list[int]) -> tuple[list[int], list[int]]:
    """Plain loops: each query's rank of its own item (ties against it) and its top hit."""
    ranks, tops = [], []
    for q, o in zip(queries, own, strict=True):
        scores = [float(np.dot(q, g)) for g in gallery]
        ranks.append(sum(1 for s in scores if s >= scores[o]) - 1)
        tops.append(max(range(len(scores)), key=lambda j: scores[j]))
    return ranks, tops


def test_pair_recall_and_geolocation_match_the_reference() -> None:
    pairs = recall_matrix({A: AERIAL, T: TEXT}, PRESENT, ks=(1, 2, 3), latlon=LATLON)
    assert [x.key for x in pairs] == ["aerial->text", "text->aerial"]  # canonical modality order
    r = pairs[1]
    ranks, tops = reference(TEXT, AERIAL, [0, 1, 2, 3])
    assert tops == [0, 2, 1, 3] and ranks == [0, 1, 1, 0]
    assert r.recall == {1: 0.5, 2: 1.0, 3: 1.0}
    assert (r.queries, r.gallery, r.chance_at_1) == (4, 4, 0.25)
    # errors of the top hits: 0, 1 degree, 1 degree, 0 along the equator
    assert r.geo is not None
    assert r.geo.median_km == pytest.approx(0.5 * KM_PER_DEG, rel=1e-9)
    assert r.geo.mean_km == pytest.approx(0.5 * KM_PER_DEG, rel=1e-9)
    assert r.geo.acc[0.1] == 0.5 and r.geo.acc[25.0] == 0.5 and r.geo.acc[200.0] == 1.0


def test_absent_rows_leave_queries_and_gallery() -> None:
    present = {A: np.array([True, True, False, True]), T: np.array([True, True, True, False])}
    pairs = {r.key: r for r in recall_matrix({A: AERIAL, T: TEXT}, present, ks=(1,))}
    # text -> aerial: queries 0, 1 (both present), gallery aerial 0, 1, 3; text 1 (170 deg) is nearest aerial 1 (90)?
    # cos(80) = 0.17 vs aerial 0: cos(170) < 0, aerial 3: cos(95) < 0 -> hit. text 0 -> aerial 0 -> hit.
    assert pairs["text->aerial"].queries == 2 and pairs["text->aerial"].gallery == 3
    assert pairs["text->aerial"].recall[1] == 1.0
    assert pairs["aerial->text"].gallery == 3


def test_ensemble_averages_similarities() -> None:
    coords = unit(0, 100, 200, 300)
    emb = {A: AERIAL, T: TEXT, C: coords}
    r = ensemble_retrieval(emb, PRESENT, (A, T), C, ks=(1,), latlon=LATLON)
    assert r is not None and r.key == "aerial+text->coords" and r.queries_from == (A, T)
    expected_hits = 0
    for i in range(4):
        scores = [(AERIAL[i] @ coords[j] + TEXT[i] @ coords[j]) / 2 for j in range(4)]
        expected_hits += int(np.argmax(scores) == i)
    assert r.recall[1] == expected_hits / 4
    with pytest.raises(ValueError, match="other than its target"):
        ensemble_retrieval(emb, PRESENT, (A, C), C)


def test_geo_accuracy_known_distances() -> None:
    true = np.zeros(3)
    pred_lon = np.array([0.0, 0.5, 3.0])  # 0, 55.6, 333.6 km along the equator
    geo = geo_accuracy(true, pred_lon, true, true, thresholds_km=(0.1, 100.0, 1000.0))
    assert geo.acc == {0.1: pytest.approx(1 / 3), 100.0: pytest.approx(2 / 3), 1000.0: 1.0}
    assert geo.median_km == pytest.approx(0.5 * KM_PER_DEG)


def test_geocells_place_queries_at_their_best_cell() -> None:
    from unigeoclip.geo.distance import haversine_km

    cells = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    gallery = CellGallery(3, (-1, -1, 11, 11), ["a", "b", "c"], cells, unit(0, 200, 80))
    ids = np.array(["p0", "p1", "p2", "p3"], dtype=object)
    split = SplitEmbeddings("test_year", ids, LATLON, {A: AERIAL}, {A: np.ones(4, bool)})
    r = geolocate(split, gallery, (A,), thresholds_km=(1.0, 150.0))
    # aerial at 0, 90, 180, 270 degrees -> nearest cells a (0), c (80), b (200), b (200)
    best = [0, 2, 1, 1]
    errors = [float(haversine_km(*LATLON[i], *cells[best[i]])) for i in range(4)]
    assert errors[0] == 0.0 and errors[2] == 0.0
    assert r is not None and r.queries == 4 and r.key == "aerial->cells"
    assert r.geo.median_km == pytest.approx(float(np.median(errors)), rel=1e-9)
    assert r.geo.acc == {1.0: 0.5, 150.0: 0.5}


def test_geocell_level_and_box() -> None:
    box = padded_bbox(np.array([[52.0, 4.0], [53.0, 5.0]]))
    assert box[0] < 52.0 and box[3] > 5.0
    assert level_for((-60.0, -180.0, 80.0, 180.0), 20_000) < level_for(box, 20_000)


def test_ridge_matches_sklearn() -> None:
    Ridge = requires_extra("eval", "sklearn.linear_model").Ridge

    rng = np.random.default_rng(0)
    x, y, xt = rng.normal(size=(60, 5)), rng.normal(size=(60, 2)), rng.normal(size=(15, 5))
    pred = ridge_predictions(x, y - y.mean(axis=0), xt, [0.5, 20.0]) + y.mean(axis=0)
    for i, alpha in enumerate([0.5, 20.0]):
        np.testing.assert_allclose(pred[i], Ridge(alpha=alpha).fit(x, y).predict(xt), atol=1e-10)


@pytest.mark.parametrize("rows", [3000, 300])  # more rows than features (the Gram matrix), and fewer (the SVD)
def test_ridge_matches_sklearn_on_wide_nearly_collinear_features_at_every_alpha(rows: int) -> None:
    """GeoCLIP-like features: 512 columns spanning ~40 directions, standardised, at the probes' own alphas."""
    from unigeoclip.eval.probes import ALPHAS

    Ridge = requires_extra("eval", "sklearn.linear_model").Ridge
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(40, 512))
    x = rng.normal(size=(rows + 200, 40)) @ mix + 1e-4 * rng.normal(size=(rows + 200, 512))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = x[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(rows + 200, 2))
    x, xt, y = x[:rows], x[rows:], y[:rows]
    pred = ridge_predictions(x, y - y.mean(axis=0), xt, ALPHAS) + y.mean(axis=0)
    for i, alpha in enumerate(ALPHAS):
        want = Ridge(alpha=alpha, solver="svd").fit(x, y).predict(xt)
        np.testing.assert_allclose(pred[i], want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_probe_recovers_a_linear_target_on_held_out_blocks() -> None:
    rng = np.random.default_rng(1)
    latlon = np.stack([rng.uniform(-50, 60, 400), rng.uniform(-170, 170, 400)], axis=1)
    split = spatial_blocks(latlon, min_blocks=30)
    # blocks are whole: no block has points on both sides
    test_blocks, train_blocks = set(split.blocks[split.test]), set(split.blocks[~split.test])
    assert test_blocks and train_blocks and not test_blocks & train_blocks
    assert split.n_blocks >= 30
    feats = np.concatenate([latlon, rng.normal(size=(400, 6))], axis=1)
    targets = {"linear": 2.0 * latlon[:, 0] - 0.5 * latlon[:, 1], "noise": rng.normal(size=400)}
    r = probe("f", feats, targets, split)
    assert r.r2["linear"] > 0.999 and r.r2["noise"] < 0.1
    assert r.dim == 8 and r.mean_r2 == pytest.approx((r.r2["linear"] + r.r2["noise"]) / 2)


def test_fixed_block_level_and_r2_reference() -> None:
    latlon = np.array([[0.0, float(i)] for i in range(40)])
    split = spatial_blocks(latlon, level=6)
    assert split.level == 6 and isinstance(split, BlockSplit)
    feats = latlon[:, 1:] + 0.0
    target = latlon[:, 1] ** 2
    r = probe("x", feats, {"sq": target}, split)
    # plain reference: least squares on the training points with the chosen alpha, R^2 on the test points
    train, test = ~split.test, split.test
    mu, sd = feats[train].mean(), feats[train].std()
    xs = (feats - mu) / sd
    ys = (target - target[train].mean()) / target[train].std()
    a = r.alpha["sq"]
    xc = xs[train] - xs[train].mean()
    w = float(xc[:, 0] @ (ys[train] - ys[train].mean()) / (xc[:, 0] @ xc[:, 0] + a))
    pred = ys[train].mean() + w * (xs[test, 0] - xs[train].mean())
    r2 = 1 - ((ys[test] - pred) ** 2).sum() / ((ys[test] - ys[test].mean()) ** 2).sum()
    assert r.r2["sq"] == pytest.approx(r2, rel=1e-9)


def test_parse_ensemble() -> None:
    assert parse_ensemble("aerial+text->coords") == ((A, T), C)
    for bad in ("aerial", "aerial->aerial", "aerial+aerial->text", "->coords"):
        with pytest.raises(InputError):
            parse_ensemble(bad)
