"""The procedural world: co-registered modalities, determinism, realistic changes between years."""

from __future__ import annotations

import numpy as np
import pytest
from unigeoclip import load_config
from unigeoclip.sources.synthetic.layout import block, make_city
from unigeoclip.sources.synthetic.raster import BUILDING
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig

CFG = load_config("tiny")


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(SyntheticSourceConfig.of(CFG.data), CFG.data)


def roof_share_under_tallest_dsm(dsm: np.ndarray, kind: np.ndarray) -> float:
    """Share of the tallest DSM pixels (within 2 m of the top) whose aerial pixels (the latent layout on the
    aerial grid) are mostly roof."""
    scale = kind.shape[0] // dsm.shape[0]
    kind_at_dsm = kind.reshape(dsm.shape[0], scale, dsm.shape[1], scale).transpose(0, 2, 1, 3).reshape(*dsm.shape, -1)
    top = dsm >= dsm.max() - 2.0
    return float(((kind_at_dsm[top] == BUILDING).mean(axis=-1) >= 0.5).mean())


def test_tallest_dsm_pixels_fall_on_roofs_of_the_aerial_tile(source: SyntheticSource) -> None:
    city = source.cities()[0]
    checked = 0
    for item in source.plan()[:8]:
        cell = source.render(city, item["cell"], 2021)
        kind = cell.tile_layers.kind
        roofs = cell.tile_layers.height[kind == BUILDING]
        if roofs.size == 0 or roofs.max() < 16.0:
            continue  # no building above the tallest trees (14 m): the top of the DSM is canopy, rightly
        checked += 1
        assert roof_share_under_tallest_dsm(cell.dsm, kind) > 0.9
        # the check has teeth: a DSM flipped north-south no longer lands on the roofs
        assert roof_share_under_tallest_dsm(cell.dsm[::-1], kind) < 0.9
        # and the aerial image shows that layout: it follows the latent top view, not its mirror image
        gray = cell.aerial.astype(float).mean(-1)
        latent = cell.tile_layers.top_rgb.mean(-1)
        aligned = np.corrcoef(gray.ravel(), latent.ravel())[0, 1]
        mirrored = max(np.corrcoef(gray.ravel(), m.ravel())[0, 1] for m in (latent[::-1], latent[:, ::-1]))
        assert aligned > 0.7 and aligned > mirrored + 0.2
    assert checked >= 3


def test_rendering_is_deterministic_and_cells_differ(source: SyntheticSource) -> None:
    city = source.cities()[0]
    a, b = source.plan()[0]["cell"], source.plan()[1]["cell"]
    first, again, other = source.render(city, a, 2022), source.render(city, a, 2022), source.render(city, b, 2022)
    assert (
        np.array_equal(first.aerial, again.aerial) and np.array_equal(first.dsm, again.dsm) and first.text == again.text
    )
    assert not np.array_equal(first.aerial, other.aerial) and first.text != other.text


def test_text_is_specific_and_never_mentions_coordinates(source: SyntheticSource) -> None:
    city = source.cities()[0]
    texts = [source.render(city, it["cell"], 2021).text for it in source.plan()[:6]]
    assert len(set(texts)) == 6
    for t in texts:
        assert city.name in t
        assert not any(ch.isdigit() for ch in t), t  # no coordinates, no numbers at all


def test_years_change_realistically() -> None:
    """About 15% of blocks change once (a park built over, a tower completed, a demolition)."""
    city = make_city(0, 0)
    years = (2021, 2022, 2023)
    changed = []
    for i in range(-10, 10):
        for j in range(-10, 10):
            before, after = block(city, i, j, 2021, years), block(city, i, j, 2023, years)
            if after.change:
                changed.append((before, after))
    assert 0.08 < len(changed) / 400 < 0.25
    kinds = {(b.use, a.use) for b, a in changed}
    assert ("park", "residential") in kinds or ("residential", "tower") in kinds
    for b, a in changed:
        assert (b.change is None and a.buildings != b.buildings) or a.use != b.use


def test_street_views_are_panoramas_from_road_points(source: SyntheticSource) -> None:
    city = source.cities()[0]
    cell = source.render(city, source.plan()[0]["cell"], 2021)
    assert len(cell.street) == CFG.data.street_views_per_sample
    for view, img in cell.street:
        assert view.projection == "equirectangular" and img.shape == (64, 128, 3)
        sky, ground = img[:8].astype(float).mean((0, 1)), img[-8:].astype(float).mean((0, 1))
        assert sky[2] > sky[0] + 15  # blue above
        assert ground[2] < sky[2]  # the road below is not sky


def test_plan_scales_to_many_cells_quickly() -> None:
    import time

    cfg = CFG.updated({"data": {"sources": {"synthetic": {"n_cities": 40, "city_extent_m": 3000}}}})
    start = time.perf_counter()
    items = SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data).plan()
    assert len(items) > 40 * 200
    assert len({(i["city"], i["cell"]) for i in items}) == len(items)
    assert time.perf_counter() - start < 60
