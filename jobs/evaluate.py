"""Ray job: evaluate a trained model on a sample store and write a report (Markdown, JSON, PNGs).

python jobs/evaluate.py --model runs/small/model --store data/earth --out reports/small [--db data/embeddings]
ray job submit --working-dir . -- python jobs/evaluate.py --model /shared/r1/model --store s3://b/store --out /shared/r
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
