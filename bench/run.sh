#!/usr/bin/env bash
# Runs the side-by-side benchmarks; each prints a table with its ratio and
# writes bench/out/*.json. Needs `make build` first (release binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/pretext"
py=.venv/bin/python
$py bench/validate_bench.py "$bin"
file=$(ls -d bench/out/validate-*/part-00000.parquet | head -1)
$py bench/build_bench.py "$(dirname "$bin")/pretext-bench" "$file"
$py bench/publish_bench.py "$(dirname "$bin")" "$file"
$py bench/train_bench.py "$(dirname "$bin")/pretext-bench" --threads 1 --repeat 3
# End to end through RabbitMQ against PyTorch DDP (needs the local broker):
# 2,000 synthetic rows of 512..4096 steps (3.4M real tokens).
data=bench/out/ddp-data
[ -e "$data/part-00000.parquet" ] || "$bin" gen-data --out "$data" --sequences 2000 --max-len 4096 --rows-per-file 2000 --seed 11
$py bench/ddp_bench.py "$(dirname "$bin")" "$data/part-00000.parquet" --repeat 3
