"""Ray job: deploy the retrieval service onto the cluster and return; it keeps serving after the job ends.

ray job submit --working-dir . -- python jobs/serve.py --detach --db /data/embeddings [--serve-config S.yaml]
serve status / serve shutdown (with --address http://HEAD:8265) show and stop it.
"""

import sys

from unigeoclip.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
