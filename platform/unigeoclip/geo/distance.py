"""Great-circle distances (geolocation errors, Acc@km, spacing)."""

from __future__ import annotations

import math

import numpy as np

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Elementwise (broadcasting) great-circle distance in km between degree coordinates."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """``(N, 3)`` points on the unit sphere: straight-line (chord) distances there order as great-circle ones."""
    lat, lon = np.radians(np.asarray(lat_deg, np.float64)), np.radians(np.asarray(lon_deg, np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def chord_of_km(km: float) -> float:
    """The unit-sphere chord between two points ``km`` apart along the surface (a radius for :func:`unit_vectors`)."""
    return 2.0 * math.sin(min(km / EARTH_RADIUS_KM, math.pi) / 2.0)


def local_metres(lat_deg: np.ndarray, lon_deg: np.ndarray, lat0: float, lon0: float) -> tuple[np.ndarray, np.ndarray]:
    """East/north metres from an origin (equirectangular; accurate to <0.1% over a few km)."""
    k = np.pi / 180.0 * EARTH_RADIUS_KM * 1000.0
    return (np.asarray(lon_deg) - lon0) * k * np.cos(np.radians(lat0)), (np.asarray(lat_deg) - lat0) * k


def from_local_metres(
    x_m: np.ndarray, y_m: np.ndarray, lat0: float | np.ndarray, lon0: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`local_metres`: ``(lat_deg, lon_deg)`` (the origin may be one per point)."""
    k = np.pi / 180.0 * EARTH_RADIUS_KM * 1000.0
    return lat0 + np.asarray(y_m) / k, lon0 + np.asarray(x_m) / (k * np.cos(np.radians(lat0)))
