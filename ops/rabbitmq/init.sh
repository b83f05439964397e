#!/bin/sh
# Entry point of the rabbitmq container: starts the broker with the image's
# own entry point, then sets each role's password from its secret file
# (/run/secrets/amqp_<role>_password), read on standard input so it never
# appears in a process list or a log, and finally marks the broker ready for
# the health check. Users without a secret keep no password (they cannot
# log in).
set -eu

docker-entrypoint.sh rabbitmq-server &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null; wait "$broker"; exit $?' TERM INT

rm -f /tmp/pretext-ready
until rabbitmqctl -q await_startup >/dev/null 2>&1; do
  kill -0 "$broker" 2>/dev/null || exit 1
  sleep 2
done
for role in admin producer trainer scheduler finetune; do
  secret="/run/secrets/amqp_${role}_password"
  if [ -s "$secret" ]; then
    tr -d '\n' < "$secret" | rabbitmqctl -q change_password "$role" >/dev/null
    echo "init: password of ${role} set from ${secret}"
  else
    echo "init: no ${secret}; ${role} cannot log in"
  fi
done
touch /tmp/pretext-ready
wait "$broker"
