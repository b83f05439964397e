#!/usr/bin/env bash
# Starts a Docker engine for the compose test when none answers, or stops
# the one this script started.
#   source ops/local/engine.sh; engine_start   # exports DOCKER_HOST
#   engine_stop                                  # only if engine_start started it
# Layers live in PRETEXT_DOCKER_ROOT (default /var/cache/pretext/docker), so a
# second run on the same machine builds from cache. No systemd here: dockerd
# runs as a plain background process (root).
PRETEXT_DOCKER_ROOT="${PRETEXT_DOCKER_ROOT:-/var/cache/pretext/docker}"
PRETEXT_DOCKER_RUN="${PRETEXT_DOCKER_RUN:-/tmp/pretext-docker}"
engine_started_here=""

engine_start() {
  if docker info >/dev/null 2>&1; then
    echo "engine: using the one at ${DOCKER_HOST:-the default socket}"
    return 0
  fi
  mkdir -p "$PRETEXT_DOCKER_ROOT" "$PRETEXT_DOCKER_RUN"
  export DOCKER_HOST="unix://$PRETEXT_DOCKER_RUN/docker.sock"
  if docker info >/dev/null 2>&1; then
    echo "engine: using the one at $DOCKER_HOST"
    return 0
  fi
  command -v dockerd >/dev/null || apt-get install -y -q docker.io docker-compose
  dockerd --data-root "$PRETEXT_DOCKER_ROOT" --exec-root "$PRETEXT_DOCKER_RUN/exec" \
    -H "$DOCKER_HOST" --pidfile "$PRETEXT_DOCKER_RUN/dockerd.pid" \
    > "$PRETEXT_DOCKER_RUN/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -20 "$PRETEXT_DOCKER_RUN/dockerd.log" >&2; return 1; }
  engine_started_here=1
  echo "engine: started dockerd at $DOCKER_HOST (data root $PRETEXT_DOCKER_ROOT)"
}

engine_stop() {
  [ -n "$engine_started_here" ] || return 0
  local pid
  pid="$(cat "$PRETEXT_DOCKER_RUN/dockerd.pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  # What dockerd leaves behind: the bridge (its iptables chains stay, empty).
  ip link delete docker0 2>/dev/null || true
  echo "engine: stopped"
}
