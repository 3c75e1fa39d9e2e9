"""Ray job (scheduled): embed new or changed samples for the serving model version, refresh the index, publish.

python jobs/reembed.py --store data/store --db data/embeddings [--model NEW_MODEL_DIR]
ray job submit --working-dir . -- python jobs/reembed.py --store s3://b/store --db s3://b/emb
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["reembed", *sys.argv[1:]]))
