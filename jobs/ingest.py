"""Ray job: ingest a source into the sample store.

python jobs/ingest.py --source synthetic --store data/store [--config small] [--set key=value ...]
ray job submit --working-dir . -- python jobs/ingest.py --source earth --store s3://bucket/store
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
