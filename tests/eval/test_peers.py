"""The probes' location features: GeoCLIP's encoder without the rest of its package, and stored coordinate vectors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from unigeoclip import UniGeoCLIP, load_config
from unigeoclip.eval.peers import coords_features, geoclip_features, stored_coords_features

from ..helpers import requires_extra

requires_extra("eval", "geoclip")  # `make install` installs it with --no-deps beside the eval extra

LOADED_ALONE = """
import sys
from unigeoclip.eval.peers import geoclip_features
z = geoclip_features([[52.37, 4.90], [-33.9, 151.2]])
print(z.shape[0], z.shape[1], "transformers" in sys.modules, "geoclip" in sys.modules)
"""


def test_the_location_encoder_loads_without_geoclip_s_clip_model_or_transformers() -> None:
    out = subprocess.run([sys.executable, "-c", LOADED_ALONE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "512", "False", "False"], out.stdout + out.stderr


def test_its_features_are_those_of_the_package_s_own_location_encoder() -> None:
    from geoclip.model.location_encoder import LocationEncoder  # the package as it imports itself

    points = np.array([[52.37, 4.90], [-33.9, 151.2], [0.0, -179.9], [89.0, 10.0], [-60.0, -70.0]], np.float32)
    with torch.no_grad():
        want = LocationEncoder(from_pretrained=True).eval()(torch.from_numpy(points)).numpy()
    np.testing.assert_array_equal(geoclip_features(points), want)


def test_stored_coordinate_vectors_are_read_and_only_the_others_encoded() -> None:
    torch.manual_seed(0)
    model = UniGeoCLIP.from_config(load_config("tiny")).eval()
    points = np.array([[52.37, 4.90], [-33.9, 151.2], [10.0, 20.0], [0.0, -179.9]])
    encoded = coords_features(model)(points)
    stored = (points[[3, 1]], np.full((2, encoded.shape[1]), 0.5, np.float32))  # recognisably not the encoder's
    calls = []
    features = stored_coords_features(model, lambda: calls.append(1) or stored)
    got = features(points)
    np.testing.assert_array_equal(got[[1, 3]], 0.5)
    np.testing.assert_allclose(got[[0, 2]], encoded[[0, 2]], rtol=1e-6, atol=1e-7)
    features(points[:1])
    assert calls == [1]  # read once
