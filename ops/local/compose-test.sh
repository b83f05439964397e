#!/usr/bin/env bash
# `make compose-test`: the deployment of docker-compose.yml, built and run for
# real on this machine, and checked from outside the containers.
#
# Starts an engine if none answers (ops/local/engine.sh), makes the base
# image from Debian's packages and builds the broker and pretext images from
# it (ops/local/images.sh), then with `docker-compose -f docker-compose.yml -f ops/local/compose.yml`:
#   1. broker + producer + 2 trainer ranks pretrain on generated data; while
#      they run, a trainer's /metrics is scraped and every health check must
#      turn healthy; at the end `pretext audit` on the runs volume must say
#      0 missing, 0 applied twice, and no container may exit non-zero;
#   2. the fine-tune job writes metrics.json;
#   3. faults, each on new data and audited 0/0: a trainer container killed
#      mid-run (the others go on without it) and `up -d` again; the running
#      group scaled to 3 ranks and back to 2 with `--scale` (elastic
#      members join and leave, the membership ledger shows 2, 3, 2); the
#      broker container restarted;
#   4. a file dropped into the scheduler's inbox gives one registry run.
# `docker-compose down -v` leaves nothing of the test behind, and an engine
# this script started is stopped. Needs root, `make build` and the venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"
project=pretextct
export PRETEXT_IMAGE=pretext:local PRETEXT_RABBITMQ_IMAGE=pretext/rabbitmq:local
dc() { docker-compose -p "$project" -f docker-compose.yml -f ops/local/compose.yml "$@"; }
t0=$(date +%s)
say() { echo "[compose-test $(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "[compose-test] FAILED: $*" >&2; dc ps >&2 || true; dc logs --tail 40 >&2 || true; exit 1; }

# shellcheck source=engine.sh
source ops/local/engine.sh
cleanup() {
  local rc=$?
  dc --profile jobs down -v --remove-orphans >/dev/null 2>&1 || true
  engine_stop
  exit $rc
}
trap cleanup EXIT
engine_start
volumes_before="$(docker volume ls -q | sort)"

ops/make-secrets.sh >/dev/null

say "images"
tb=$(date +%s)
images="$(ops/local/images.sh | tr '\n' ' ')"
say "images built in $(( $(date +%s) - tb ))s: $images"

dc --profile jobs down -v --remove-orphans >/dev/null 2>&1 || true

vol() { docker volume inspect -f '{{.Mountpoint}}' "${project}_$1"; }
gen() { # gen DIR SEQUENCES SEED
  "$bin/pretext" gen-data --out "$1" --sequences "$2" --seed "$3" --max-len 2048 --rows-per-file "$2" >/dev/null
}
healthy() { # healthy CONTAINER: its health check's status
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"
}
wait_healthy() { # wait_healthy SERVICE...
  local s c
  for s in "$@"; do
    for _ in $(seq 1 90); do
      c="$(dc ps -q "$s" | head -1)"
      [ -n "$c" ] && [ "$(healthy "$c")" = healthy ] && continue 2
      sleep 2
    done
    fail "$s never turned healthy ($(healthy "$c"))"
  done
}
exit_codes() { # the exit codes of a service's containers, one per line
  local c
  for c in $(dc ps -a -q "$1"); do docker inspect -f '{{.State.ExitCode}} {{.State.Status}}' "$c"; done
}
wait_exited() { # wait_exited SERVICE...: every container exited, with code 0
  local s
  for s in "$@"; do
    for _ in $(seq 1 300); do
      if ! exit_codes "$s" | grep -qv exited; then break; fi
      sleep 2
    done
    exit_codes "$s" | grep -qv exited && fail "$s still running"
    exit_codes "$s" | grep -qv '^0 ' && fail "$s exited non-zero: $(exit_codes "$s" | tr '\n' ' ')"
  done
  return 0
}
audit() { # audit RUN_DIR: 0 missing, 0 applied twice, some applied
  local out
  out="$("$bin/pretext" audit "$1" --json)" || fail "audit of $1: $out"
  echo "$out" | python3 -c '
import json, sys
a = json.load(sys.stdin)
missing, twice, applied = a["missing"], a["applied_twice"], a["applied"]
published = a["published"]
print(f"audit: published {published}, applied {applied}, missing {missing}, applied twice {twice}")
sys.exit(0 if missing == 0 and twice == 0 and applied > 0 else 1)' || fail "audit of $1 is not 0/0"
}

fresh() { # fresh SEQUENCES SEED: a new deployment (volumes included) with new data, broker up
  dc --profile jobs down -v --remove-orphans >/dev/null 2>&1 || true
  dc up -d --no-build rabbitmq >/dev/null 2>&1
  data="$(vol data)" runs="$(vol runs)"
  gen "$data/inbox" "$1" "$2"
  chmod -R a+rX "$data"
  wait_healthy rabbitmq
}
checkpoints() { ls -d "$runs/pretrain/checkpoints"/step-* 2>/dev/null | wc -l; }
world_sizes() { # the elastic generations' world sizes, in order
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: print(json.loads(line)["world_size"], end=" ")
    except ValueError: pass' "$runs/pretrain/checkpoints/membership.jsonl" 2>/dev/null || true
}
wait_world() { # wait_world N: until the newest generation has N ranks
  for _ in $(seq 1 120); do
    [ "$(world_sizes | awk '{print $NF}')" = "$1" ] && return 0
    sleep 1
  done
  fail "no generation of $1 ranks within 120 s (generations: $(world_sizes))"
}
wait_checkpoint() { # wait until the run has written a checkpoint, while it runs
  for _ in $(seq 1 150); do
    [ "$(checkpoints)" -ge 1 ] && return 0
    sleep 1
  done
  fail "no checkpoint within 150 s"
}
running() { exit_codes "$1" | grep -c running || true; }

say "1. pretraining: broker, producer, 2 trainer ranks"
fresh 900 1
gen "$data/labeled" 300 2
chmod -R a+rX "$data"
dc up -d --no-build producer trainer-leader trainer
# A trainer's /metrics, scraped from inside its container while it runs.
for _ in $(seq 1 60); do
  m="$(dc exec -T trainer-leader curl -fsS http://127.0.0.1:9100/metrics 2>/dev/null || true)"
  echo "$m" | grep -q '^pretext_trainer_steps_total' && break
  sleep 2
done
echo "$m" | grep -q '^pretext_trainer_steps_total' || fail "no pretext_trainer_steps_total on the trainer's /metrics"
echo "$m" | grep -E '^pretext_trainer_steps_total' | head -1
# The long-running services' health checks turn green (the producer is
# done before its first check; it must exit 0).
wait_healthy trainer-leader trainer
wait_exited producer trainer-leader trainer
audit "$runs/pretrain"
# Both ranks were in the group: rank 0 writes metrics.jsonl, rank 1
# metrics.rank1.jsonl, and every step of either is a step of the group.
[ -s "$runs/pretrain/metrics.jsonl" ] && [ -s "$runs/pretrain/metrics.rank1.jsonl" ] \
  || fail "rank 1 is not part of the group: $(ls "$runs/pretrain")"

say "2. fine-tune job"
dc run --rm --no-deps finetune >/dev/null
python3 - "$runs/finetune/metrics.json" <<'PY' || fail "no usable fine-tune metrics.json"
import json, sys
m = json.load(open(sys.argv[1]))
acc = m["test"]["accuracy"]
print(f"fine-tune: test accuracy {acc:.3f}")
assert 0.0 <= acc <= 1.0
PY

say "3a. a trainer container killed mid-run, then up -d again"
fresh 600 3
dc up -d --no-build producer trainer-leader trainer
wait_checkpoint
[ "$(running trainer)" -ge 1 ] || fail "the run ended before the kill"
wait_world 2
docker kill "$(dc ps -q trainer | head -1)" >/dev/null
say "killed a trainer at checkpoint $(checkpoints); the leader goes on alone"
wait_world 1
say "generations: $(world_sizes); up -d again"
dc up -d --no-build producer trainer-leader trainer
wait_exited producer trainer-leader trainer
audit "$runs/pretrain"

say "3b. the running group scaled to 3 ranks and back to 2"
fresh 900 4
dc up -d --no-build producer trainer-leader trainer
wait_checkpoint
[ "$(running trainer)" -ge 1 ] || fail "the run ended before the resize"
wait_world 2
dc up -d --no-build --scale trainer=2 producer trainer-leader trainer
wait_world 3
say "3 ranks at checkpoint $(checkpoints); scaling back to 2"
dc up -d --no-build --scale trainer=1 producer trainer-leader trainer
wait_world 2
wait_exited producer trainer-leader trainer
audit "$runs/pretrain"
say "generations: $(world_sizes)"
[ -s "$runs/pretrain/metrics.rank2.jsonl" ] || fail "no rank 2 after the resize: $(ls "$runs/pretrain")"

say "3c. the broker container restarted mid-run"
fresh 600 5
dc up -d --no-build producer trainer-leader trainer
wait_checkpoint
[ "$(running trainer)" -ge 1 ] || fail "the run ended before the broker restart"
dc restart rabbitmq >/dev/null 2>&1
say "broker restarted at checkpoint $(checkpoints)"
wait_exited producer trainer-leader trainer
audit "$runs/pretrain"

say "4. the scheduler: a file dropped into its inbox gives one registry run"
dc up -d --no-build scheduler
wait_healthy scheduler
gen "$data/incoming" 300 6
chmod -R a+rX "$data"
dc exec -T scheduler pretext schedule --inbox /data/incoming --registry /registry/registry.sqlite \
  --work-dir /runs/scheduler --once >/dev/null
runs_list="$(dc exec -T scheduler pretext registry list --registry /registry/registry.sqlite --json)"
echo "$runs_list" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
runs = doc["runs"] if isinstance(doc, dict) else doc
decided = [r for r in runs if r["status"] in ("promoted", "rejected")]
statuses = [r["status"] for r in runs]
print(f"registry: {len(runs)} run(s), {statuses}")
sys.exit(0 if len(runs) == 1 and len(decided) == 1 else 1)' || fail "expected one decided registry run: $runs_list"

bad="$(for c in $(dc ps -a -q); do docker inspect -f '{{.Name}} {{.State.ExitCode}} {{.State.Status}}' "$c"; done | awk '$2 != 0')"
[ -z "$bad" ] || fail "containers exited non-zero: $bad"

say "down -v: nothing of the test may stay behind"
dc --profile jobs down -v --remove-orphans >/dev/null 2>&1
label="label=com.docker.compose.project=$project"
new_volumes="$(comm -13 <(echo "$volumes_before") <(docker volume ls -q | sort) | tr '\n' ' ')"
left="$(docker ps -a -q --filter "$label") $new_volumes $(docker network ls -q --filter "$label")"
[ -z "${left// /}" ] || fail "left behind: $left"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^pretext'
say "done in $(( $(date +%s) - t0 ))s"
