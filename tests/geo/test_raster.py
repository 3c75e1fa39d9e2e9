"""Raster sampling against independent references: numpy's own remainder and the plain bilinear formula.

``sample_bilinear`` gathers corners with ``take`` and weights one band plane at a time (issue 25's faster
ingest); the stored tiles must not change by a bit, so the reference here is the straightforward version
(fancy indexing, weights broadcast over the bands) and the comparison is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from unigeoclip.geo.raster import LatLonGrid, sample_bilinear, wrap
from unigeoclip.geodata.rasters import BMNG_GRID, blue_marble


def reference_bilinear(raster: np.ndarray, grid: LatLonGrid, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Bilinear values as written before issue 25: ``raster[r, c]`` corners, weights broadcast over bands."""
    row = (grid.lat_top - lat) / grid.deg_per_px - 0.5
    col = ((lon - grid.lon_left) % 360.0) / grid.deg_per_px - 0.5
    col = col % grid.cols if grid.wraps else np.clip(col, 0.0, grid.cols - 1.0)
    row = np.clip(row, 0.0, grid.rows - 1.0)
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    r1 = np.minimum(r0 + 1, grid.rows - 1)
    c1 = (c0 + 1) % grid.cols if grid.wraps else np.minimum(c0 + 1, grid.cols - 1)
    fr, fc = row - r0, col - c0
    if raster.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = raster[r0, c0] * (1.0 - fc) + raster[r0, c1] * fc
    bottom = raster[r1, c0] * (1.0 - fc) + raster[r1, c1] * fc
    return np.asarray((top * (1.0 - fr) + bottom * fr).astype(np.float32))


def reference_inside(grid: LatLonGrid, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    row = (grid.lat_top - lat) / grid.deg_per_px - 0.5
    col = ((lon - grid.lon_left) % 360.0) / grid.deg_per_px - 0.5
    inside = (row >= -0.5) & (row <= grid.rows - 0.5)
    return np.asarray(inside if grid.wraps else inside & (col <= grid.cols - 0.5))


# Small rasters of each kind the project samples: RGB uint8 round the world (Blue Marble), int16 heights on
# one tile (GLOBE), float32 monthly bands round the world from a half-pixel-shifted edge (ERA5).
RNG = np.random.default_rng(11)
CASES = {
    "rgb uint8, wraps": (RNG.integers(0, 256, (90, 180, 3), dtype=np.uint8),
                         LatLonGrid(90.0, -180.0, 2.0, 90, 180, True)),
    "int16, one tile": (RNG.integers(0, 9000, (120, 180), dtype=np.int16), LatLonGrid(50.0, 0.0, 0.5, 120, 180)),
    "float32 12 bands, wraps": (RNG.normal(10.0, 20.0, (37, 72, 12)).astype(np.float32),
                                LatLonGrid(92.5, -2.5, 5.0, 37, 72, True)),
}  # fmt: skip


def probe_points(grid: LatLonGrid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random points on Earth, and the places an off-by-one or a wrong wrap would show: poles, the dateline,
    the raster's own edges and pixel centres, and points just outside a tile."""
    lat = rng.uniform(-90.0, 90.0, (7, 64, 64))
    lon = rng.uniform(-180.0, 180.0, (7, 64, 64))
    edge_lat = [90.0, -90.0, 0.0, grid.lat_top, grid.lat_top - grid.deg_per_px * grid.rows, grid.lat_top - 1e-12]
    edge_lon = [-180.0, 180.0, -0.0, grid.lon_left, grid.lon_left + grid.deg_per_px * grid.cols, grid.lon_left - 1e-9,
                grid.lon_left + grid.deg_per_px / 2, np.nextafter(grid.lon_left, -np.inf), 179.9999999999]  # fmt: skip
    grid_lat, grid_lon = np.meshgrid(edge_lat, edge_lon)
    return np.concatenate([lat.ravel(), grid_lat.ravel()]), np.concatenate([lon.ravel(), grid_lon.ravel()])


@pytest.mark.parametrize("case", list(CASES))
def test_sample_bilinear_is_bit_for_bit_the_plain_formula(case: str) -> None:
    raster, grid = CASES[case]
    lat, lon = probe_points(grid, np.random.default_rng(3))
    values, inside = sample_bilinear(raster, grid, lat, lon)
    want = reference_bilinear(raster, grid, lat, lon)
    assert values.dtype == np.float32 and values.shape == want.shape == lat.shape + raster.shape[2:]
    np.testing.assert_array_equal(values.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(inside, reference_inside(grid, lat, lon))
    shaped = sample_bilinear(raster, grid, lat[:4096].reshape(4, 32, 32), lon[:4096].reshape(4, 32, 32))[0]
    np.testing.assert_array_equal(shaped.reshape(want[:4096].shape), want[:4096])  # (N, P, P) grids as ingest gives


def on_the_seam(grid: LatLonGrid, lon: np.ndarray) -> np.ndarray:
    """Where the plain formula's column wraps to exactly ``cols`` and it indexes past the raster (IndexError)."""
    col = ((lon - grid.lon_left) % 360.0) / grid.deg_per_px - 0.5
    return np.asarray(grid.wraps & ((col % grid.cols) == grid.cols))


def test_sample_bilinear_on_blue_marble_is_bit_for_bit_the_plain_formula() -> None:
    lat, lon = probe_points(BMNG_GRID, np.random.default_rng(4))
    ok = ~on_the_seam(BMNG_GRID, lon)  # the first column's centre: see the next test
    np.testing.assert_array_equal(
        sample_bilinear(blue_marble(), BMNG_GRID, lat[ok], lon[ok])[0],
        reference_bilinear(blue_marble(), BMNG_GRID, lat[ok], lon[ok]),
    )


def test_the_centre_of_the_first_column_is_sampled_where_the_plain_formula_indexed_past_the_end() -> None:
    """Blue Marble's first column is centred at 180 W + 1/30 deg; its column there comes out as -2.8e-14, which
    wraps to ``5400 - 2.8e-14``, a float equal to 5400: the plain formula raised IndexError. It is column 0."""
    raster, grid = blue_marble(), BMNG_GRID
    lat = np.array([-60.0, 0.0, 10.0, 45.5, 80.0])
    lon = np.full(lat.shape, grid.lon_left + grid.deg_per_px / 2)
    assert on_the_seam(grid, lon).all()
    with pytest.raises(IndexError):
        reference_bilinear(raster, grid, lat, lon)
    values, inside = sample_bilinear(raster, grid, lat, lon)
    row = (grid.lat_top - lat) / grid.deg_per_px - 0.5
    r0 = np.floor(row).astype(int)
    fr = (row - r0)[:, None]
    column_0 = (raster[r0, 0] * (1.0 - fr) + raster[r0 + 1, 0] * fr).astype(np.float32)  # no weight east of it
    np.testing.assert_array_equal(values, column_0)
    assert inside.all()


def test_one_point_given_as_floats_samples_as_in_an_array() -> None:
    raster, grid = CASES["rgb uint8, wraps"]
    value, inside = sample_bilinear(raster, grid, 12.3, -45.6)  # type: ignore[arg-type]
    assert value.shape == (3,) and bool(inside)
    np.testing.assert_array_equal(value, sample_bilinear(raster, grid, np.array([12.3]), np.array([-45.6]))[0][0])
    np.testing.assert_array_equal(value, reference_bilinear(raster, grid, np.array(12.3), np.array(-45.6)))


def test_wrap_is_numpys_remainder_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    special = [0.0, -0.0, 360.0, -360.0, 720.0, 1e-300, -1e-300, np.nextafter(360.0, 0), np.nextafter(0.0, -1),
               np.inf, -np.inf, np.nan, 5399.5, -0.5]  # fmt: skip
    for period in (360.0, 5400.0, 1.0 / 15.0):
        x = np.concatenate([rng.uniform(-3 * period, 3 * period, 10_000), rng.uniform(0, period, 1000), special])
        with np.errstate(invalid="ignore"):  # inf % period is NaN, as numpy says
            got, want = wrap(x, period), np.remainder(x, period)
        np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))  # NaNs, signed zeros alike
    single = rng.uniform(-720, 720, 1000).astype(np.float32)  # numpy keeps float32 % 360.0 in float32
    np.testing.assert_array_equal(wrap(single, 360.0), np.remainder(single, np.float32(360.0)))
    assert wrap(single, 360.0).dtype == np.float32 and wrap(np.arange(-400, 400, 7), 360.0).dtype == np.float64
    np.testing.assert_array_equal(wrap(np.arange(-400, 400, 7), 360.0), np.remainder(np.arange(-400, 400, 7), 360.0))
    grid = rng.uniform(-200, 200, (3, 5, 5))
    assert wrap(grid, 360.0).shape == grid.shape and wrap(grid, 360.0) is not grid
    np.testing.assert_array_equal(grid, np.asarray(grid))  # the input is left as it was
