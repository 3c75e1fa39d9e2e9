"""GeoCLIP's location encoder, loaded without the rest of the ``geoclip`` package."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from unigeoclip.eval.peers import geoclip_features

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
