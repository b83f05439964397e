#!/usr/bin/env bash
# Builds the deployment's images without a registry: the base image from
# Debian's packages (base-image.sh), the broker (rabbitmq.Dockerfile) and
# pretext:local from the host's release binaries and the venv's libtorch
# (context.sh, Dockerfile). Needs root, `make build` and an engine
# (DOCKER_HOST, or `source ops/local/engine.sh; engine_start`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${CARGO_TARGET_DIR:-target}/release"
ctx="${PRETEXT_DOCKER_CONTEXT:-/var/cache/pretext/docker-context}"
for b in pretext pretext-produce pretext-validate; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b: run make build" >&2; exit 1; }
done
ops/local/base-image.sh
docker build -q -t pretext/rabbitmq:local -f ops/local/rabbitmq.Dockerfile ops/local >/dev/null
site="$(ops/local/context.sh "$bin" "$ctx" | sed -n 's/^SITE=//p')"
docker build -q -t pretext:local --build-arg SITE="$site" -f ops/local/Dockerfile "$ctx" >/dev/null
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^pretext'
