"""Diagnosis: probe R^2 of a trained coordinate encoder vs its untrained twin and its frozen Fourier input features.

Same probe points and spatial-block split as ``unigeoclip evaluate``:
    .venv/bin/python notes/issue7/diag_probe.py STORE MODEL_DIR
"""

import sys

import numpy as np
import torch
from unigeoclip import UniGeoCLIP
from unigeoclip.eval.peers import batched, coords_features
from unigeoclip.eval.probes import probe, spatial_blocks
from unigeoclip.eval.suite import probe_points, store_locations
from unigeoclip.eval.targets import location_targets
from unigeoclip.samples.store import SampleStore


def main(store: str, model_dir: str) -> None:
    points = probe_points(store_locations(SampleStore(store)), 5000)
    targets = location_targets(points[:, 0], points[:, 1])
    split = spatial_blocks(points)
    trained = UniGeoCLIP.from_pretrained(model_dir)
    torch.manual_seed(0)
    untrained = UniGeoCLIP.from_config(trained.config).eval()
    fourier = trained.tower("coords").fourier  # the frozen random Fourier projections the encoder starts from

    def fourier_features(latlon: np.ndarray) -> np.ndarray:
        return batched(lambda x: fourier(x, torch.float32).flatten(1), latlon)  # (N, K * W)

    for name, fn in [
        ("trained output", coords_features(trained)),
        ("random-init output", coords_features(untrained)),
        ("frozen Fourier features", fourier_features),
    ]:
        r = probe(name, fn(points), targets, split)
        per_target = " ".join(f"{k}={v:.2f}" for k, v in r.r2.items())
        print(f"{name:25s} dim {r.dim:4d} mean R^2 {r.mean_r2:.3f}  {per_target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
