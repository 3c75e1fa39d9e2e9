"""Diagnosis: the probe mean R^2 of the coordinate encoder at every kept checkpoint of a run.

Do the probes rise, plateau or fall with training? Train with checkpoints kept (e.g.
``--set train.ckpt_every=50 --set train.keep_checkpoints=14``), then:
    .venv/bin/python notes/issue7/diag_probe_trajectory.py STORE RUN_DIR
Same probe points and spatial-block split as ``unigeoclip evaluate``. Only the last
checkpoint holds an exported model, so the weights come from each DeepSpeed model state.
"""

import sys
from pathlib import Path

import torch
from unigeoclip import UniGeoCLIP
from unigeoclip.config import load_config
from unigeoclip.data.store import SampleStore
from unigeoclip.eval.peers import coords_features
from unigeoclip.eval.probes import probe, spatial_blocks
from unigeoclip.eval.suite import probe_points, store_locations
from unigeoclip.eval.targets import location_targets

PREFIX = "model."  # TrainModule holds the UniGeoCLIP as .model beside the loss


def main(store: str, run_dir: str) -> None:
    points = probe_points(store_locations(SampleStore(store)), 5000)
    targets = location_targets(points[:, 0], points[:, 1])
    split = spatial_blocks(points)
    model = UniGeoCLIP.from_config(load_config(Path(run_dir) / "config.yaml")).eval()
    states = Path(run_dir, "ray", "train").glob("checkpoint_*/step*/mp_rank_00_model_states.pt")
    for state in sorted(states, key=lambda p: int(p.parent.name.removeprefix("step"))):
        module = torch.load(state, map_location="cpu", weights_only=False)["module"]
        model.load_state_dict({k.removeprefix(PREFIX): v for k, v in module.items() if k.startswith(PREFIX)})
        r = probe(state.parent.name, coords_features(model)(points), targets, split)
        per_target = " ".join(f"{k}={v:.2f}" for k, v in r.r2.items())
        print(f"{state.parent.name:8s} mean R^2 {r.mean_r2:.3f}  {per_target}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
