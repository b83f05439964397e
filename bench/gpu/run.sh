#!/usr/bin/env bash
# The GPU checks in one call, for a machine with a GPU and no Rust or network
# (the `device` tool's machine): its own python3 with torch 2.11.0+cu130 and
# the release `pretext` built here, carried in the ignored bench/gpu/bin/.
# See bench/gpu/gpu_bench.py for what is checked and timed.
#
#   bench/gpu/run.sh --prepare            here: release build, copied (stripped)
#                                         to bench/gpu/bin/ (pretext, pretext-bench)
#   bench/gpu/run.sh                      on the GPU machine (carry bench/gpu/bin)
#   bench/gpu/run.sh --device cpu --dry-run   here: the same script on the CPU,
#                                         tiny shapes, Gloo instead of NCCL
#
# Options: --bin PATH (default bench/gpu/bin/pretext), --python PY (default
# python3; .venv/bin/python when there is one and no python3 has torch), and
# any option of gpu_bench.py (--rows, --len, --steps, --threads).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=bench/gpu/bin/pretext
py=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare)
      make build
      mkdir -p bench/gpu/bin
      target="${CARGO_TARGET_DIR:-target}"
      strip -o bench/gpu/bin/pretext "$target/release/pretext"
      strip -o bench/gpu/bin/pretext-bench "$target/release/pretext-bench"
      ls -la bench/gpu/bin/
      exit 0 ;;
    --bin) bin="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$py" ]; then
  if python3 -c 'import torch' 2>/dev/null; then py=python3
  elif [ -x .venv/bin/python ]; then py=.venv/bin/python
  else echo "no python with torch: pass --python" >&2; exit 1; fi
fi
[ -x "$bin" ] || { echo "no pretext binary at $bin (bench/gpu/run.sh --prepare)" >&2; exit 1; }
torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi -L 2>/dev/null || true
exec "$py" bench/gpu/gpu_bench.py --bin "$bin" ${args[@]+"${args[@]}"}
