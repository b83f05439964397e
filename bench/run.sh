#!/usr/bin/env bash
# Runs every side-by-side benchmark; each prints a table with its ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/pretext"
.venv/bin/python bench/validate_bench.py "$bin" "$@"
