#!/usr/bin/env bash
# run.sh NAME [train args...]: train on STORE (default /work/data/earth100), then evaluate it; the training and
# evaluation seconds (while holding /tmp/cpu.lock, so runs never share the CPU) go to /work/data/runs/NAME.time
set -uo pipefail
name=$1; shift
store=${STORE:-/work/data/earth100}
cd "$(dirname "$0")/../.."   # the repository root
exec 9>/tmp/cpu.lock
flock 9
start=$(date +%s)
.venv/bin/unigeoclip train --config ${CONFIG:-earth} --store $store --out /work/data/runs/$name "$@" > /work/data/runs/$name.log 2>&1 || { echo "train failed" >> /work/data/runs/$name.log; exit 1; }
mid=$(date +%s)
.venv/bin/unigeoclip evaluate --model /work/data/runs/$name/model --store $store --out /work/data/reports/$name --no-pictures > /work/data/reports/$name.log 2>&1
end=$(date +%s)
echo "train_s=$((mid-start)) eval_s=$((end-mid))" > /work/data/runs/$name.time
