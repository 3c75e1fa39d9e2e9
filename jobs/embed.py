"""Ray job: embed a sample store into LanceDB with a trained model (idempotent; a rerun finishes a crashed run).

python jobs/embed.py --model runs/small/model --store data/store --db data/embeddings [--gpu]
ray job submit --working-dir . -- python jobs/embed.py --model /shared/runs/r1/model --store s3://b/store --db s3://b/emb
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
