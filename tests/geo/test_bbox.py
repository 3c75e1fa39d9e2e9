"""The one bounding box and the one coordinate check, against independent references (SQLite, plain comparisons)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch
from unigeoclip.errors import ConfigError, InputError
from unigeoclip.geo.bbox import BBox
from unigeoclip.geo.coords import valid_latlon

BOXES = [
    BBox(48.0, 2.0, 49.5, 3.0),
    BBox(-40.0, 150.0, -30.0, -170.0),  # crosses the antimeridian
    BBox(-90.0, -180.0, 90.0, 180.0),
    BBox(10.0, 179.5, 10.0, -179.5),  # a line of latitude across the antimeridian
]


def points(rng: np.random.Generator, box: BBox, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Random points on Earth plus the box's own corners and edges (where an off-by-one would show)."""
    lat = np.concatenate([rng.uniform(-90, 90, n), [box.lat_min, box.lat_max] * 2, [box.lat_min - 1e-9]])
    lon = np.concatenate([rng.uniform(-180, 180, n), [box.lon_min, box.lon_min, box.lon_max, box.lon_max],
                          [box.lon_min]])  # fmt: skip
    return lat, lon


@pytest.mark.parametrize("box", BOXES, ids=str)
def test_contains_and_the_sql_pick_the_same_points(box: BBox) -> None:
    lat, lon = points(np.random.default_rng(0), box)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (i INTEGER, lat_deg REAL, lon_deg REAL)")
    rows = [(i, float(a), float(o)) for i, (a, o) in enumerate(zip(lat, lon, strict=True))]
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    by_sql = {i for (i,) in db.execute(f"SELECT i FROM t WHERE {box.to_sql()}")}
    mask = box.contains(lat, lon)
    assert set(np.flatnonzero(mask).tolist()) == by_sql
    assert mask[-5:-1].all() and not mask[-1], "corners are inside, a hair below lat_min is not"


@pytest.mark.parametrize("box", BOXES, ids=str)
def test_the_lon_spans_cover_exactly_the_box(box: BBox) -> None:
    lat, lon = points(np.random.default_rng(1), box)
    in_spans = np.zeros(len(lat), bool)
    for lo, hi in box.lon_spans():
        assert -180 <= lo <= hi <= 180
        in_spans |= (lat >= box.lat_min) & (lat <= box.lat_max) & (lon >= lo) & (lon <= hi)
    assert (in_spans == box.contains(lat, lon)).all()
    assert len(box.lon_spans()) == (2 if box.lon_min > box.lon_max else 1)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ((0, 0, 1), "got 3 numbers"),
        ((20, 0, 10, 1), "lat_min <= lat_max"),
        ((0, 0, float("nan"), 1), "non-finite"),
        ((0, -181, 1, 1), "longitudes must lie in [-180, 180]"),
        ((-91, 0, 1, 1), "-90 <= lat_min"),
    ],
)
def test_a_bad_box_is_refused_with_what_is_wrong(values: tuple[float, ...], words: str) -> None:
    with pytest.raises(InputError) as caught:
        BBox.parse(values)
    assert words in str(caught.value)
    with pytest.raises(ConfigError, match=r"^sources\.earth\.bbox "):
        BBox.parse(values, what="sources.earth.bbox", error=ConfigError)


def test_valid_latlon_agrees_for_floats_arrays_and_tensors() -> None:
    lat = [0.0, 90.0, -90.0, 90.0001, 0.0, 0.0, float("nan"), float("inf"), 45.0]
    lon = [0.0, 180.0, -180.0, 0.0, 180.0001, -180.5, 0.0, 0.0, float("-inf")]
    # NaN fails both comparisons
    expected = [-90 <= a <= 90 and -180 <= o <= 180 for a, o in zip(lat, lon, strict=True)]
    assert [bool(valid_latlon(a, o)) for a, o in zip(lat, lon, strict=True)] == expected
    assert valid_latlon(np.array(lat), np.array(lon)).tolist() == expected
    assert valid_latlon(torch.tensor(lat), torch.tensor(lon)).tolist() == expected
