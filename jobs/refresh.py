"""Ray job (scheduled): ingest new imagery, then embed it with the serving model, index and publish.

python jobs/refresh.py --source files --set data.sources.files.drop_dir=data/drop --store data/store \
    --db data/embeddings
ray job submit --working-dir . -- python jobs/refresh.py --source files --set data.sources.files.drop_dir=/data/drop \
    --store /data/store --db /data/embeddings
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["refresh", *sys.argv[1:]]))
