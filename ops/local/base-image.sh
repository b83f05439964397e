#!/usr/bin/env bash
# Makes the local base image pretext/debian:bookworm from Debian's packages
# (debootstrap, minbase), for machines that reach no container registry.
# Skipped when the image exists. Needs root and a running engine
# (DOCKER_HOST). The mirror is the one apt is configured with.
set -euo pipefail
name="${PRETEXT_BASE_IMAGE:-pretext/debian:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name exists"
  exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
mirror="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null \
  | grep -oE 'https?://[^ ]+' | grep -v security | head -1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d /var/tmp/pretext-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
# apt inside builds uses the same mirror.
echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | docker import - "$name"
docker image inspect "$name" --format '{{.Id}} {{.Size}}'
