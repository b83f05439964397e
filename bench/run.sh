#!/usr/bin/env bash
# Runs the side-by-side benchmarks; each prints a table with its ratio and
# writes bench/out/*.json. Needs `make build` first (release binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/pretext"
py=.venv/bin/python
$py bench/validate_bench.py "$bin"
file=$(ls -d bench/out/validate-*/part-00000.parquet | head -1)
$py bench/build_bench.py "$bin" "$file"
$py bench/publish_bench.py "$(dirname "$bin")" "$file"
$py bench/train_bench.py "$bin" --threads 1
