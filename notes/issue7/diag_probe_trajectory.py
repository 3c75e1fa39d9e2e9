"""Diagnosis: the probe mean R^2 of the coordinate encoder at every kept checkpoint of a run.

Do the probes rise, plateau or fall with training? Train with checkpoints kept (e.g.
``--set train.ckpt_every=50 --set train.keep_checkpoints=14``), then:
    .venv/bin/python notes/issue7/diag_probe_trajectory.py STORE RUN_DIR
Same probe points and spatial-block split as ``unigeoclip evaluate``. The weights of each kept
step come from ``unigeoclip.train.checkpoint`` (DeepSpeed's consolidation; one step of it is
``unigeoclip evaluate --checkpoint RUN_DIR@STEP``).
"""

import sys

from unigeoclip.eval.peers import coords_features
from unigeoclip.eval.probes import probe, spatial_blocks
from unigeoclip.eval.suite import probe_points, store_locations
from unigeoclip.eval.targets import location_targets
from unigeoclip.samples.store import SampleStore
from unigeoclip.train.checkpoint import kept_steps, load_checkpoint


def main(store: str, run_dir: str) -> None:
    points = probe_points(store_locations(SampleStore(store)), 5000)
    targets = location_targets(points[:, 0], points[:, 1])
    split = spatial_blocks(points)
    for step in kept_steps(run_dir):
        model = load_checkpoint(run_dir, step)
        r = probe(f"step{step}", coords_features(model)(points), targets, split)
        per_target = " ".join(f"{k}={v:.2f}" for k, v in r.r2.items())
        print(f"step{step:<6d} mean R^2 {r.mean_r2:.3f}  {per_target}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
