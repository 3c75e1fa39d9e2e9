"""Geodesy the platform needs: projections, distances, S2 cells, spatial splits."""

from .projection import equal_earth, equal_earth_normalised

__all__ = ["equal_earth", "equal_earth_normalised"]
