"""S2 keys, splits, record validation and view geometry and colour jitter: the rules every source's samples obey."""

from __future__ import annotations

import numpy as np
import pytest
from unigeoclip import load_config
from unigeoclip.errors import InputError
from unigeoclip.geo import s2
from unigeoclip.geo.distance import haversine_km
from unigeoclip.preprocess.augment import jitter_coords, perspective_view, photometric_jitter, resize
from unigeoclip.preprocess.decode_cache import DecodedImageCache
from unigeoclip.preprocess.imaging import decode_rgb, encode_png
from unigeoclip.samples.splits import TEST_REGION, TEST_YEAR, TRAIN, assign_split
from unigeoclip.samples.validate import check_sample
from unigeoclip.sources.base import RawSample, StreetView

from ..helpers import random_locations

DATA = load_config("tiny").data


def test_s2_tokens_round_trip_to_cells_containing_their_points() -> None:
    for lat, lon in random_locations(200, seed=3).tolist():
        token = s2.cell_token(lat, lon, 16)
        assert s2.token_level(token) == 16 and s2.contains(token, lat, lon)
        c_lat, c_lon = s2.token_center(token)
        assert s2.cell_token(c_lat, c_lon, 16) == token
        assert haversine_km(lat, lon, c_lat, c_lon) < 0.2  # a level-16 cell is ~150 m across
        assert s2.contains(s2.parent_token(token, 10), lat, lon)


def test_splits_hold_out_whole_parents_and_the_year() -> None:
    cfg = DATA.splits
    tokens = [s2.cell_token(lat, lon, 16) for lat, lon in random_locations(300, seed=4).tolist()]
    for t in tokens:
        assert assign_split(t, 2021, cfg) in (TRAIN, TEST_REGION)
        region = assign_split(t, 2021, cfg) == TEST_REGION
        assert assign_split(t, cfg.holdout_year, cfg) == (TEST_REGION if region else TEST_YEAR)
        siblings = s2.parent_token(t, cfg.region_parent_level)
        assert (assign_split(siblings + "1", 2021, cfg) == TEST_REGION) == region or len(siblings) > 15
    forced = DATA.splits.model_copy(update={"holdout_regions": (s2.parent_token(tokens[0], cfg.region_parent_level),)})
    assert assign_split(tokens[0], 2021, forced) == TEST_REGION


def good_sample(**overrides: object) -> RawSample:
    img = encode_png(np.full((DATA.aerial_px, DATA.aerial_px, 3), 120, np.uint8))
    base = dict(
        lat_deg=52.37, lon_deg=4.89, year=2021, source="test", source_id="s1", aerial=img,
        street=[StreetView(image=img, lat_deg=52.37, lon_deg=4.89, heading_deg=0.0)],
        dsm=np.zeros((DATA.dsm_px, DATA.dsm_px), np.float32), text="Canal house by the bridge",
    )  # fmt: skip
    base.update(overrides)
    return RawSample(**base)  # type: ignore[arg-type]


def test_a_good_sample_becomes_a_row_with_hashes_and_a_split() -> None:
    checked = check_sample(good_sample(), DATA, "run")
    assert not checked.rejects and checked.row is not None
    row = checked.row
    assert row["cell_token"] == s2.cell_token(52.37, 4.89, DATA.cell_level)
    assert all(row[f"{m}_present"] for m in ("aerial", "street", "dsm", "text", "coords"))
    assert row["split"] in (TRAIN, TEST_REGION)
    again = check_sample(good_sample(), DATA, "other-run").row
    assert again is not None and again["content_hash"] == row["content_hash"]
    changed = check_sample(good_sample(text="Canal house by the new bridge"), DATA, "run").row
    assert changed is not None and changed["content_hash"] != row["content_hash"]


@pytest.mark.parametrize(
    ("overrides", "reason", "modality", "kept"),
    [
        ({"lat_deg": 95.0}, "coords_out_of_range", "", False),
        ({"lon_deg": float("nan")}, "coords_out_of_range", "", False),
        ({"aerial": b"not an image"}, "unreadable_image", "aerial", True),
        ({"text": "   "}, "empty_text", "text", True),
        ({"dsm": np.zeros((5, 5), np.float32)}, "bad_dsm_shape", "dsm", True),
        ({"dsm": np.full((32, 32), np.nan, np.float32)}, "empty_dsm", "dsm", True),
        ({"dsm": np.full((32, 32), -9999.0, np.float32)}, "dsm_out_of_range", "dsm", True),
        ({"aerial": None, "street": [], "dsm": None, "text": None}, "no_modalities", "", False),
    ],
)
def test_bad_input_is_rejected_with_a_reason_and_the_rest_kept(
    overrides: dict, reason: str, modality: str, kept: bool
) -> None:
    checked = check_sample(good_sample(**overrides), DATA, "run")
    assert [(r.reason, r.modality) for r in checked.rejects] == [(reason, modality)]
    assert checked.rejects[0].detail
    assert (checked.row is not None) == kept
    if kept and modality:
        assert checked.row is not None and not checked.row[f"{modality}_present"]


def test_decode_rejects_garbage_and_decompression_bombs() -> None:
    with pytest.raises(InputError, match="not a readable image"):
        decode_rgb(b"GIF89a broken")
    with pytest.raises(InputError, match="exceeds the limit"):
        decode_rgb(encode_png(np.zeros((100, 100, 3), np.uint8)), max_pixels=50 * 50)


def test_perspective_view_of_a_panorama_looks_where_it_is_told() -> None:
    pano = np.zeros((90, 360, 3), np.uint8)
    pano[:, :, 0] = np.arange(360)[None, :] * 255 // 359  # red encodes the column (azimuth)
    pano[:45, :, 2] = 255  # blue sky above the horizon
    # centre column faces heading 0 (north) at column 180; looking east (90) is column 270
    east = perspective_view(pano, projection="equirectangular", source_heading_deg=0.0, source_fov_deg=360.0,
                            yaw_deg=90.0, pitch_deg=0.0, fov_deg=60.0, size=16)  # fmt: skip
    assert abs(int(east[8, 8, 0]) - 270 * 255 // 359) <= 3
    up = perspective_view(pano, projection="equirectangular", source_heading_deg=0.0, source_fov_deg=360.0,
                          yaw_deg=0.0, pitch_deg=30.0, fov_deg=40.0, size=16)  # fmt: skip
    assert (up[..., 2] == 255).all()  # pitched up: all sky


def test_panorama_view_depends_only_on_yaw_relative_to_the_panorama() -> None:
    """The cached sampling grid is keyed by relative yaw: turning camera and panorama together changes nothing,
    and a cached view equals the plain per-pixel bilinear sample."""
    rng = np.random.default_rng(5)
    pano = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    kw = dict(projection="equirectangular", source_fov_deg=360.0, pitch_deg=7.0, fov_deg=75.0, size=6)
    a = perspective_view(pano, source_heading_deg=10.0, yaw_deg=40.0, **kw)  # type: ignore[arg-type]
    b = perspective_view(pano, source_heading_deg=250.0, yaw_deg=280.0, **kw)  # type: ignore[arg-type]
    assert np.array_equal(a, b)
    f = 0.5 / np.tan(np.radians(75.0) / 2)
    y, p = np.radians(30.0), np.radians(7.0)
    fwd = np.array([np.sin(y) * np.cos(p), np.cos(y) * np.cos(p), np.sin(p)])
    right = np.array([np.cos(y), -np.sin(y), 0.0])
    up = np.cross(right, fwd)
    for i in range(6):
        for j in range(6):
            ray = ((j + 0.5) / 6 - 0.5) * right + (0.5 - (i + 0.5) / 6) * up + f * fwd
            az = np.degrees(np.arctan2(ray[0], ray[1]))
            el = np.degrees(np.arcsin(ray[2] / np.linalg.norm(ray)))
            col, row = (az + 180.0) % 360.0 / 360.0 * 64 - 0.5, (90.0 - el) / 180.0 * 32 - 0.5
            r0, c0 = int(np.floor(row)), int(np.floor(col))
            fr, fc = row - r0, col - c0
            px = [
                pano[r % 32, c % 64].astype(float) for r, c in ((r0, c0), (r0, c0 + 1), (r0 + 1, c0), (r0 + 1, c0 + 1))
            ]
            ref = (px[0] * (1 - fc) + px[1] * fc) * (1 - fr) + (px[2] * (1 - fc) + px[3] * fc) * fr
            assert np.abs(a[i, j].astype(float) - ref).max() <= 1.0


def test_perspective_view_of_a_photo_crops_inside_its_field_of_view() -> None:
    photo = np.zeros((40, 80, 3), np.uint8)
    photo[:, 40:, 1] = 200  # right half green
    right = perspective_view(photo, projection="perspective", source_heading_deg=100.0, source_fov_deg=90.0,
                             yaw_deg=120.0, pitch_deg=0.0, fov_deg=20.0, size=8)  # fmt: skip
    assert (right[..., 1] == 200).all()
    outside = perspective_view(photo, projection="perspective", source_heading_deg=100.0, source_fov_deg=90.0,
                               yaw_deg=280.0, pitch_deg=0.0, fov_deg=20.0, size=8)  # fmt: skip
    assert outside.max() == 0  # behind the camera: nothing was photographed


def test_photo_view_fast_path_matches_the_general_sampler() -> None:
    """uint8 photos take a PIL homography; float input takes the numpy sampler: same view within one grey level."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:48, 0:96]
    photo = np.stack([cols * 2 % 256, rows * 5 % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    for _ in range(20):
        heading = float(rng.uniform(0, 360))
        kw = {"projection": "perspective", "source_heading_deg": heading, "source_fov_deg": 90.0, "size": 24,
              "yaw_deg": heading + float(rng.uniform(-15, 15)), "pitch_deg": float(rng.uniform(-10, 10)),
              "fov_deg": float(rng.uniform(50, 70))}  # fmt: skip
        fast = perspective_view(photo, **kw).astype(np.float64)
        general = perspective_view(photo.astype(np.float32), **kw).astype(np.float64)
        inside = (fast.sum(-1) > 0) & (general.sum(-1) > 0)
        assert inside.mean() > 0.5
        assert np.percentile(np.abs(fast - general)[inside], 99) <= 1.0


def test_decoded_image_cache_serves_repeats_and_stays_within_its_budget() -> None:
    calls: list[bytes] = []

    def decode(data: bytes) -> np.ndarray:
        calls.append(data)
        return np.full((10, 10), data[0], np.uint8)  # 100 bytes each

    cache = DecodedImageCache(max_bytes=250)
    assert cache.get(b"a", decode)[0, 0] == ord("a") and cache.get(b"a", decode)[0, 0] == ord("a")
    assert calls == [b"a"] and cache.lru.hits == 1
    for key in (b"b", b"c", b"d"):
        cache.get(key, decode)
    assert cache.lru.bytes <= 250 and len(calls) == 4
    cache.get(b"a", decode)  # evicted (least recently used) -> decoded again
    assert len(calls) == 5
    with pytest.raises(ValueError):
        cache.get(b"d", decode)[0, 0] = 0  # cached arrays are read-only: augmentations cannot corrupt them


def test_resize_preserves_means_and_shapes() -> None:
    img = np.random.default_rng(0).uniform(0, 1, (64, 64, 3)).astype(np.float32)
    small = resize(img, 16)
    assert small.shape == (16, 16, 3) and abs(small.mean() - img.mean()) < 1e-5
    assert resize(img[..., 0], 48).shape == (48, 48)


def test_coords_jitter_moves_points_uniformly_over_a_disc_of_the_given_radius() -> None:
    places = np.array([[48.85, 2.35], [0.0, 179.99], [60.0, -179.95], [-33.9, 151.2]], np.float32)
    latlon = np.repeat(places, 5000, axis=0)
    moved = jitter_coords(latlon, np.random.default_rng(0), max_km=25.0)
    assert moved.dtype == latlon.dtype and moved.shape == latlon.shape
    assert np.abs(moved[:, 1]).max() <= 180.0 and np.abs(moved[:, 0]).max() <= 90.0  # wrapped at the antimeridian
    km = haversine_km(latlon[:, 0], latlon[:, 1], moved[:, 0], moved[:, 1]).reshape(4, -1)
    assert km.max() <= 25.0 * 1.005  # flat-Earth offsets: exact to a fraction of a percent at this scale
    # uniform over the area: the median radius is r / sqrt(2) (uniform over the radius would give r / 2)
    np.testing.assert_allclose(np.median(km, axis=1), 25.0 / np.sqrt(2.0), rtol=0.03)
    north = moved[:5000, 0] > places[0, 0]
    east = moved[:5000, 1] > places[0, 1]
    for quadrant in (north & east, north & ~east, ~north & east, ~north & ~east):
        assert abs(quadrant.mean() - 0.25) < 0.03  # every direction
    assert not np.array_equal(jitter_coords(latlon, np.random.default_rng(1), max_km=25.0), moved)  # per draw


def test_photometric_jitter_scales_channels_per_sample_within_its_bounds() -> None:
    images = np.full((64, 3, 4, 4), 0.5, np.float32)
    present = np.ones(64, bool)
    present[:8] = False
    out = photometric_jitter(images, present, np.random.default_rng(0), max_gain=0.2, max_shift=0.05)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out[:8], 0.0)  # absent rows stay empty
    shown = out[8:]
    assert np.ptp(shown, axis=(2, 3)).max() == 0.0  # one gain per channel and sample: the image is not noised
    low, high = 0.5 * 0.8 - 0.05, 0.5 * 1.2 + 0.05
    assert shown.min() >= low and shown.max() <= high
    assert np.ptp(shown[:, 0, 0, 0]) > 0.2  # samples differ, across most of the range
    assert np.abs(shown[:, 0] - shown[:, 1]).max() > 0.05  # channels differ within a sample
    bright = photometric_jitter(np.ones((4, 3, 2, 2), np.float32), np.ones(4, bool), np.random.default_rng(1),
                                max_gain=0.5, max_shift=0.5)  # fmt: skip
    assert bright.max() <= 1.0 and bright.min() >= 0.0  # stays a valid image
