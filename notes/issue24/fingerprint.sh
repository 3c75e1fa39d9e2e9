#!/usr/bin/env bash
# Issue 24's "done means": run at a commit before and after the package moves, then diff the outputs.
#   notes/issue24/fingerprint.sh OUT_DIR MODEL_DIR EVAL_STORE
# Ingests the earth preset (400 places, 400 landscape samples) and the synthetic source into fresh
# stores, prints one sha256 over every stored row's content columns (sorted by sample_id; the run id
# and timestamps excluded), then evaluates MODEL_DIR on EVAL_STORE and prints the summary.
# MODEL_DIR `-` stops after the hashes (issue 25: the stored content alone, no model at hand).
set -euo pipefail
out=$1 model=$2 eval_store=$3
cli=${UNIGEOCLIP:-.venv/bin/unigeoclip}
rm -rf "$out" && mkdir -p "$out"
$cli ingest --source earth --config earth --store "$out/earth" \
  --set data.sources.earth.max_places=400 --set data.sources.earth.landscape_max=400 > "$out/ingest_earth.log" 2>&1
$cli ingest --source synthetic --config small --store "$out/synthetic" > "$out/ingest_synthetic.log" 2>&1
.venv/bin/python - "$out/earth" "$out/synthetic" <<'PY'
import hashlib, sys
import lance, pyarrow as pa
for path in sys.argv[1:]:
    ds = lance.dataset(f"{path}/samples.lance")
    t = ds.to_table().sort_by("sample_id").drop_columns(["ingest_run", "ingested_at"])
    h = hashlib.sha256()
    for batch in t.to_batches():
        for col in batch.columns:
            h.update(repr(col.to_pylist()).encode())
    print(f"{path.rsplit('/', 1)[1]}: {t.num_rows} rows, {t.num_columns} columns, sha256 {h.hexdigest()}")
PY
[ "$model" = - ] && exit 0
$cli evaluate --model "$model" --store "$eval_store" --out "$out/report" --no-pictures 2>&1 | grep -v '^\s*$' | tail -40
