#!/usr/bin/env bash
# Fetches the real dataset of `pretext import-genomes`: the Debian package
# `ragout-examples` (16 complete bacterial genomes of 4 species, ~18 MB),
# unpacked into a cache directory. Idempotent: a package already downloaded
# or unpacked is kept. Prints the examples directory (the per-species
# subdirectories with references/*.fasta.gz) on stdout; progress on stderr.
#
#   ops/get-genomes.sh [CACHE_DIR]     default /var/cache/pretext/genomes
#
# Then: pretext import-genomes --source "$(ops/get-genomes.sh)" --out data/genomes
set -euo pipefail

cache="${1:-/var/cache/pretext/genomes}"
pkg=ragout-examples
log() { printf '[get-genomes] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

mkdir -p "$cache"
cd "$cache"

deb="$(ls -1 ${pkg}_*.deb 2>/dev/null | sort | tail -n 1 || true)"
if [ -z "$deb" ]; then
  log "downloading $pkg into $cache"
  if ! apt-get download "$pkg" >&2; then
    log "download failed; updating the package lists and retrying"
    as_root apt-get update >&2
    apt-get download "$pkg" >&2
  fi
  deb="$(ls -1 ${pkg}_*.deb | sort | tail -n 1)"
else
  log "using $cache/$deb"
fi

root="$cache/root"
examples="$root/usr/share/doc/ragout/examples"
if [ ! -d "$examples" ]; then
  log "unpacking $deb into $root"
  tmp="$(mktemp -d "$cache/.unpack.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  dpkg-deb -x "$deb" "$tmp"
  rm -rf "$root"
  mv "$tmp" "$root"
  trap - EXIT
fi
if ! ls "$examples"/*/references/*.fasta.gz >/dev/null 2>&1; then
  log "no references/*.fasta.gz under $examples"
  exit 1
fi
echo "$examples"
