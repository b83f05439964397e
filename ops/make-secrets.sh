#!/usr/bin/env bash
# Creates the broker passwords docker-compose.yml mounts as secrets
# (secrets/amqp_<role>_password, git-ignored), keeping any that exist, and
# sets who may read them. Compose (without swarm) mounts a file secret with
# the host file's owner and mode, so each service's password is owned by the
# uid its image runs as (10001, ops/Dockerfile; PRETEXT_SERVICE_UID to
# change) with mode 400: readable by that user only. The admin password
# stays the operator's (mode 400): only the broker's init.sh, as root, reads
# it. RabbitMQ's init.sh sets them at start; each service reads only its own
# through PRETEXT_AMQP_PASSWORD_FILE. Needs root (or sudo) to hand the files
# to the service uid. PRETEXT_SECRETS_DIR: where (default ./secrets).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${PRETEXT_SECRETS_DIR:-secrets}"
uid="${PRETEXT_SERVICE_UID:-10001}"
umask 077
mkdir -p "$dir"
for role in admin producer trainer scheduler finetune; do
  f="$dir/amqp_${role}_password"
  if [ ! -s "$f" ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"
    echo "created $f"
  fi
  if ! chmod 400 "$f" 2>/dev/null; then
    echo "make-secrets: cannot set the mode of $f: run as root, e.g. sudo $0" >&2
    exit 1
  fi
  if [ "$role" != admin ] && ! chown "$uid" "$f" 2>/dev/null; then
    echo "make-secrets: cannot give $f to uid $uid (the services' user): run as root, e.g. sudo $0" >&2
    exit 1
  fi
done
