#!/usr/bin/env bash
# Creates the broker passwords docker-compose.yml mounts as secrets
# (secrets/amqp_<role>_password, mode 600, git-ignored), keeping any that
# exist. RabbitMQ's init.sh sets them at start; each service reads only its
# own through PRETEXT_AMQP_PASSWORD_FILE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
umask 077
mkdir -p secrets
for role in admin producer trainer scheduler finetune; do
  f="secrets/amqp_${role}_password"
  if [ ! -s "$f" ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"
    echo "created $f"
  fi
done
