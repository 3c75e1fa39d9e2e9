"""Diagnosis: probe R^2 of every tower's embedding at the probe points, alone and concatenated.

Do the coordinate encoder's teachers (the aerial, DSM and text towers it is aligned with)
carry more of the probe targets than the coordinate embedding itself? Same probe points
and spatial-block split as ``unigeoclip evaluate``; every probe point is a stored place,
encoded from whichever split holds it:
    .venv/bin/python notes/issue7/diag_teachers.py STORE MODEL_DIR
"""

import sys

import numpy as np
from unigeoclip import Modality, UniGeoCLIP
from unigeoclip.errors import InputError
from unigeoclip.eval.embeddings import encode_split
from unigeoclip.eval.peers import coords_features
from unigeoclip.eval.probes import probe, spatial_blocks
from unigeoclip.eval.suite import probe_points, store_locations
from unigeoclip.eval.targets import location_targets
from unigeoclip.samples.splits import SPLITS
from unigeoclip.samples.store import SampleStore


def main(store_dir: str, model_dir: str) -> None:
    store = SampleStore(store_dir)
    model = UniGeoCLIP.from_pretrained(model_dir)
    points = probe_points(store_locations(store), 5000)
    targets = location_targets(points[:, 0], points[:, 1])
    split = spatial_blocks(points)
    by_place: dict[tuple[float, float], dict[Modality, np.ndarray]] = {}
    for name in SPLITS:
        try:
            encoded = encode_split(model, store, name)
        except InputError:
            continue  # an empty split
        for i, (lat, lon) in enumerate(encoded.latlon):
            by_place[(round(lat, 4), round(lon, 4))] = {m: z[i] for m, z in encoded.embeddings.items()}
    rows = [by_place[(round(lat, 4), round(lon, 4))] for lat, lon in points]
    towers = {m.value: np.stack([r[m] for r in rows]) for m in (Modality.AERIAL, Modality.DSM, Modality.TEXT)}
    towers["coords"] = coords_features(model)(points)
    towers["all four, concatenated"] = np.concatenate(list(towers.values()), axis=1)
    for name, features in towers.items():
        r = probe(name, features, targets, split)
        per_target = " ".join(f"{k}={v:.2f}" for k, v in r.r2.items())
        print(f"{name:24s} dim {r.dim:4d} mean R^2 {r.mean_r2:.3f}  {per_target}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
