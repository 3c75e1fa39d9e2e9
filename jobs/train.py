"""Ray job: train on a sample store with Ray Train + DeepSpeed.

python jobs/train.py --store data/store --out runs/small [--config small] [--workers 2] [--steps N] [--resume]
ray job submit --working-dir . -- python jobs/train.py --store s3://bucket/store --out /shared/runs/r1 --gpu
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
