"""Real spherical harmonics of a position on the sphere (SatCLIP's location basis, Klemmer et al. 2023).

``real_spherical_harmonics(lat, lon, degree)`` gives the ``(degree + 1)^2`` orthonormal real
harmonics ``Y_l^m`` (``l <= degree``, ``-l <= m <= l``, ordered by ``l`` then ``m``) with
``integral of Y^2 over the sphere = 1``. They are smooth over the whole sphere, poles and
antimeridian included, with detail down to about ``20,000 km / degree``: a basis suited to
km-scale global data, beside the projected Fourier features.

Associated Legendre functions by the standard stable recursion on normalised values, in float64.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def real_spherical_harmonics(lat_deg: torch.Tensor, lon_deg: torch.Tensor, degree: int) -> torch.Tensor:
    """``(B,)`` degrees -> ``(B, (degree + 1)^2)`` float64 real spherical harmonics."""
    if degree < 0:
        raise ConfigError(f"degree must be >= 0, got {degree}")
    theta = torch.deg2rad(90.0 - lat_deg.to(torch.float64))  # colatitude
    phi = torch.deg2rad(lon_deg.to(torch.float64))
    x, s = torch.cos(theta), torch.sin(theta)
    # p[(l, m)]: the fully normalised associated Legendre function N_lm P_l^m(cos theta), for m >= 0
    p: dict[tuple[int, int], torch.Tensor] = {(0, 0): torch.full_like(x, math.sqrt(1.0 / (4.0 * math.pi)))}
    for m in range(1, degree + 1):  # the diagonal: P_m^m from P_{m-1}^{m-1}
        p[(m, m)] = -math.sqrt((2.0 * m + 1.0) / (2.0 * m)) * s * p[(m - 1, m - 1)]
    for m in range(0, degree):  # one step off the diagonal
        p[(m + 1, m)] = math.sqrt(2.0 * m + 3.0) * x * p[(m, m)]
    for m in range(0, degree + 1):  # up the column
        for l in range(m + 2, degree + 1):  # noqa: E741 (the harmonic's usual name)
            a = math.sqrt((4.0 * l * l - 1.0) / (l * l - m * m))
            b = math.sqrt(((l - 1.0) ** 2 - m * m) / (4.0 * (l - 1.0) ** 2 - 1.0))
            p[(l, m)] = a * (x * p[(l - 1, m)] - b * p[(l - 2, m)])
    out = []
    for l in range(degree + 1):  # noqa: E741
        for m in range(-l, l + 1):
            if m == 0:
                out.append(p[(l, 0)])
            elif m > 0:
                out.append(math.sqrt(2.0) * p[(l, m)] * torch.cos(m * phi))
            else:
                out.append(math.sqrt(2.0) * p[(l, -m)] * torch.sin(-m * phi))
    return torch.stack(out, dim=-1)
