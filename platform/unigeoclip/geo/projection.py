"""The Equal Earth projection (Šavrič, Patterson & Jenny, 2018) on the unit sphere.

The coordinate encoder feeds projected positions to random Fourier features: an
equal-area projection gives every square kilometre the same share of frequency space,
where raw (lat, lon) would over-resolve the poles.
"""

from __future__ import annotations

import math

import torch

A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
_SQRT3 = math.sqrt(3.0)
# Half-width of the map on the unit sphere: x at lon = 180 deg, lat = 0 (theta = 0).
X_MAX = 2.0 * _SQRT3 * math.pi / (3.0 * A1)


def equal_earth(lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project degrees to Equal Earth ``(x, y)`` on the unit sphere (as PROJ's ``+proj=eqearth +R=1``).

    Computed in float64 whatever the input dtype, so the projection itself adds no
    error at the finest Fourier scale (2^12 ~ 5 km wavelengths need ~1e-4 precision).
    """
    lat = torch.deg2rad(lat_deg.to(torch.float64))
    lon = torch.deg2rad(lon_deg.to(torch.float64))
    theta = torch.asin(_SQRT3 / 2.0 * torch.sin(lat))
    t2 = theta * theta
    t6 = t2 * t2 * t2
    x = 2.0 * _SQRT3 * lon * torch.cos(theta) / (3.0 * (9.0 * A4 * t6 * t2 + 7.0 * A3 * t6 + 3.0 * A2 * t2 + A1))
    y = theta * (A1 + A2 * t2 + t6 * (A3 + A4 * t2))
    return x, y


def equal_earth_normalised(coords: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` (lat_deg, lon_deg) -> ``(B, 2)`` float64 Equal Earth (x, y) scaled so x spans [-1, 1]."""
    x, y = equal_earth(coords[..., 0], coords[..., 1])
    return torch.stack((x, y), dim=-1) / X_MAX
