#!/usr/bin/env bash
# One-time, idempotent setup: system packages, the project venv with torch
# (libtorch for tch), the `.libtorch` link cargo builds against, and the broker
# when tests need it. Every path the build needs is decided here.
#
#   ops/setup.sh            set up for building and running
#   ops/setup.sh --broker   also make sure RabbitMQ runs (tests need it)
#
# PRETEXT_VENV  where the venv lives (default: .venv in the checkout; CI keeps
#               it outside the clone and `.venv` becomes a link to it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want_broker=0
[ "${1:-}" = "--broker" ] && want_broker=1

log() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: gloo headers for the c10d shim, a C++ compiler, and
# docker-compose (1.x) which validates compose files without an engine, and
# the DejaVu font the report plots are labelled with, and openssl, which the
# security tests make their TLS certificates with.
pkgs=(libgloo-dev g++ python3-venv docker-compose fonts-dejavu-core openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The venv. A venv outside the checkout is linked as .venv.
venv="${PRETEXT_VENV:-$root/.venv}"
if [ "$venv" != "$root/.venv" ]; then
  mkdir -p "$(dirname "$venv")"
  if [ ! -L .venv ] || [ "$(readlink .venv)" != "$venv" ]; then
    rm -rf .venv
    ln -s "$venv" .venv
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv at $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.pretext-requirements"
if ! cmp -s ops/requirements.txt "$stamp"; then
  log "installing python requirements (torch is about 4.6 GB, a few minutes)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r ops/requirements.txt
  cp ops/requirements.txt "$stamp"
fi
torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
if [ ! -L .libtorch ] || [ "$(readlink .libtorch)" != "$torch_dir" ]; then
  rm -rf .libtorch
  ln -s "$torch_dir" .libtorch
fi
log "libtorch: $torch_dir ($("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"

if [ "$want_broker" = 1 ]; then
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
  fi
  rabbitmqctl -q await_startup >/dev/null
  log "RabbitMQ is up"
fi
