"""Geodesy the platform needs: S2 cells, distances, projections (``geo.projection`` needs torch)."""

from .distance import haversine_km
from .s2 import cell_token, parent_token, token_center

__all__ = ["cell_token", "haversine_km", "parent_token", "token_center"]
