#!/usr/bin/env bash
# Fills the build context of ops/local/Dockerfile: the release binaries
# (stripped) and libtorch's shared libraries from the project venv (hard
# links when on the same file system), and prints `SITE=<path>`: the
# site-packages directory the binaries' rpath names, where the image puts
# the libraries back. Usage: ops/local/context.sh BIN_DIR CONTEXT_DIR
set -euo pipefail
bin_dir="$1" ctx="$2"
torch="$(readlink -f "$(dirname "$0")/../../.libtorch")"
site="$(dirname "$torch")"
mkdir -p "$ctx/bin" "$ctx/site"
for b in pretext pretext-produce pretext-validate; do
  strip -o "$ctx/bin/$b.new" "$bin_dir/$b"
  if cmp -s "$ctx/bin/$b.new" "$ctx/bin/$b"; then rm "$ctx/bin/$b.new"; else mv "$ctx/bin/$b.new" "$ctx/bin/$b"; fi
done
copy() { # hard links, else a copy; only when missing
  [ -e "$2" ] && return 0
  mkdir -p "$(dirname "$2")"
  cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"
}
copy "$site/torch/lib" "$ctx/site/torch/lib"
[ -d "$site/nvidia" ] && copy "$site/nvidia" "$ctx/site/nvidia"
echo "SITE=$site"
