#!/usr/bin/env bash
# the earth half of notes/issue24/fingerprint.sh: ingest 400 + 400 into a fresh store, one sha256 over the content
set -euo pipefail
out=$1
rm -rf "$out" && mkdir -p "$out"
/work/main/.venv/bin/unigeoclip ingest --source earth --config earth --store "$out/earth" \
  --set data.sources.earth.max_places=400 --set data.sources.earth.landscape_max=400 > "$out/ingest_earth.log" 2>&1
/work/main/.venv/bin/python - "$out/earth" <<'PY'
import hashlib, sys
import lance
for path in sys.argv[1:]:
    ds = lance.dataset(f"{path}/samples.lance")
    t = ds.to_table().sort_by("sample_id").drop_columns(["ingest_run", "ingested_at"])
    h = hashlib.sha256()
    for batch in t.to_batches():
        for col in batch.columns:
            h.update(repr(col.to_pylist()).encode())
    print(f"{path.rsplit('/', 1)[1]}: {t.num_rows} rows, {t.num_columns} columns, sha256 {h.hexdigest()}")
PY
