from __future__ import annotations

import numpy as np
import pyproj
import pytest
import torch
from unigeoclip import InputError, load_config
from unigeoclip.config import CoordsEncoderConfig
from unigeoclip.geo.harmonics import real_spherical_harmonics
from unigeoclip.geo.projection import equal_earth
from unigeoclip.models.coords import GeoCLIPLocationEncoder, ScaledLocationEncoder, build_location_encoder
from unigeoclip.models.unigeoclip import UniGeoCLIP

from ..helpers import random_locations


def test_equal_earth_matches_pyproj_eqearth() -> None:
    lat, lon = np.meshgrid(np.linspace(-90, 90, 73), np.linspace(-180, 180, 145), indexing="ij")
    lat, lon = lat.ravel(), lon.ravel()
    ref_x, ref_y = pyproj.Proj("+proj=eqearth +R=1")(lon, lat)
    x, y = equal_earth(torch.from_numpy(lat), torch.from_numpy(lon))
    for ours, ref in ((x.numpy(), ref_x), (y.numpy(), ref_y)):
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


def test_output_for_a_location_does_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    enc = ScaledLocationEncoder(CoordsEncoderConfig(depth=2, num_heads=2), width=32, embed_dim=16).eval()
    batch = random_locations(33, seed=5)
    with torch.no_grad():
        together = enc(batch)
        alone = torch.cat([enc(batch[i : i + 1]) for i in range(len(batch))])
        shuffled = enc(batch.flip(0)).flip(0)
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(together, shuffled, atol=1e-6, rtol=0)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_does_not_change_with_the_number_of_sigmas() -> None:
    counts = {
        k: n_params(ScaledLocationEncoder(CoordsEncoderConfig(sigmas=tuple(2.0 ** (4 * i) for i in range(k))), 32, 16))
        for k in (1, 4, 7)
    }
    assert len(set(counts.values())) == 1, counts
    # the GeoCLIP-style baseline is the contrast: one capsule per sigma
    geo = [n_params(GeoCLIPLocationEncoder(CoordsEncoderConfig(sigmas=(1.0,) * k), 32, 16)) for k in (1, 3)]
    assert geo[1] == 3 * geo[0]


def test_depth_zero_is_fixed_fourier_features_and_a_linear_head() -> None:
    enc = ScaledLocationEncoder(CoordsEncoderConfig(depth=0), width=32, embed_dim=16)
    assert {name.split(".")[0] for name, _ in enc.named_parameters()} == {"registers", "head"}
    out = enc(random_locations(5))
    assert out.shape == (5, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_fourier_projections_stay_float64_when_the_model_is_cast() -> None:
    enc = ScaledLocationEncoder(CoordsEncoderConfig(), width=32, embed_dim=16)
    before = enc.fourier.projections.clone()
    enc.bfloat16()
    assert enc.fourier.projections.dtype == torch.float64
    assert torch.equal(enc.fourier.projections, before)
    assert enc(random_locations(3)).dtype == torch.bfloat16


def test_finest_scale_separates_points_a_few_hundred_metres_apart() -> None:
    """sigma 2^12 must resolve km-scale offsets: float32 phases would not (the phase reaches ~1e5 rad)."""
    enc = ScaledLocationEncoder(CoordsEncoderConfig(sigmas=(4096.0,), depth=0), width=64, embed_dim=16)
    a = torch.tensor([[48.8566, 2.3522]])
    b = a + torch.tensor([[0.0, 0.005]])  # ~370 m east
    tokens = enc.fourier(torch.cat((a, b)), torch.float32)
    assert (tokens[0] - tokens[1]).abs().max() > 0.05


@pytest.mark.parametrize("kind", ["scaled", "geoclip"])
def test_both_kinds_build_from_config_and_encode(kind: str) -> None:
    cfg = load_config("tiny", overrides={"model": {"coords": {"kind": kind}}})
    enc = build_location_encoder(cfg.model.coords, cfg.model.coords_width, cfg.model.embed_dim)
    z = enc(random_locations(7))
    assert z.shape == (7, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(7))


@pytest.mark.parametrize("bad", [[[91.0, 0.0]], [[0.0, 181.0]], [[float("nan"), 0.0]], [[1.0, 2.0, 3.0]]])
def test_bad_coordinates_are_rejected_with_a_reason(bad: list) -> None:
    model = UniGeoCLIP.from_config(load_config("tiny"))
    with pytest.raises(InputError, match="coords"):
        model.encode("coords", torch.tensor(bad))


def test_real_spherical_harmonics_match_scipy_and_are_orthonormal() -> None:
    """Against SciPy's complex harmonics (an independent implementation): real Y_l^m = sqrt(2) Re/Im of
    the complex one for m > 0 / m < 0, the complex one for m = 0, up to each function's sign convention."""
    from scipy.special import sph_harm_y
    from unigeoclip.sources.earth import fibonacci_lattice

    lat, lon = fibonacci_lattice(4000)
    ours = real_spherical_harmonics(torch.from_numpy(lat), torch.from_numpy(lon), 8).numpy()  # (N, 81)
    theta, phi = np.radians(90.0 - lat), np.radians(lon)
    col = 0
    for l in range(9):  # noqa: E741
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), theta, phi)
            ref = y.real if m == 0 else np.sqrt(2.0) * (y.real if m > 0 else y.imag)
            sign = np.sign(np.dot(ours[:, col], ref))
            np.testing.assert_allclose(ours[:, col], sign * ref, atol=1e-10, err_msg=f"l={l} m={m}")
            col += 1
    gram = ours.T @ ours * (4.0 * np.pi / len(lat))  # equal-area points: a quadrature of the sphere
    np.testing.assert_allclose(gram, np.eye(81), atol=0.02)


def test_a_spherical_harmonics_token_joins_the_fourier_tokens() -> None:
    base = CoordsEncoderConfig(sigmas=(1.0, 16.0), depth=1, num_heads=2, num_registers=2)
    with_sh = base.model_copy(update={"sh_degree": 6})
    enc = ScaledLocationEncoder(with_sh, 16, 8)
    n_base = sum(p.numel() for p in ScaledLocationEncoder(base, 16, 8).parameters())
    assert sum(p.numel() for p in enc.parameters()) == n_base + 49 * 16 + 16  # the harmonics' linear map only
    x = torch.tensor([[89.9, 10.0], [89.9, -170.0], [0.0, 179.99], [0.0, -179.99]])
    with torch.no_grad():
        z = enc(x)
    assert z.shape == (4, 8) and torch.allclose(z.norm(dim=1), torch.ones(4))
    with torch.no_grad():  # smooth across the pole and the antimeridian: near points, near harmonics
        sh = real_spherical_harmonics(x[:, 0].double(), x[:, 1].double(), 6)
    assert (sh[0] - sh[1]).abs().max() < 0.05 and (sh[2] - sh[3]).abs().max() < 0.05
