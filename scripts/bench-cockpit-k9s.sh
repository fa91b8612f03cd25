#!/usr/bin/env bash
# bench-cockpit-k9s.sh: the cockpit beside k9s, on the same live sandboxes of the real test
# control plane (scripts/test-cluster.sh). See BENCHMARKS.md, "The cockpit beside k9s".
#
#   scripts/bench-cockpit-k9s.sh 200 1000      # sizes to measure (default: 200 1000)
#
# For each size N it makes N sessions through `agentdeck serve` (Postgres, the Kubernetes
# runtime, namespace fleet-bench; each a Sandbox, the real agent-sandbox controller's pod, run by
# a kubelet of this script's own with the stand-in harness: tests/common/stand_in_harness.rs,
# about 2 MB a pod, so that a thousand pods fit on this machine), waits until all are ready, then
# measures, one after the other, in tmux at 200x50:
#   - the cockpit (`agentdeck`, the same config: beside the live `serve` it runs no fleet work),
#     opened on its Sandboxes view (`h`): seconds from its start until the view's title counts N;
#   - k9s (v0.50.16, `go install github.com/derailed/k9s@v0.50.16`) on the pods of the
#     namespace: seconds from its start until its title counts N pods;
# and then for each, with nothing happening, over WINDOW seconds (default 30): CPU (utime+stime
# of the process from /proc, in % of one core) and memory (VmRSS, VmHWM).
# Prints one line per program and size. Needs: go, tmux, Postgres (scripts/ensure-postgres.sh),
# the test control plane (built by scripts/test-cluster.sh on first use, ~11 min).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$HERE"
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(200 1000)
WINDOW=${WINDOW:-30}
NS=fleet-bench
PORT=${BENCH_API_PORT:-3917}
DB=agentdeck_fleet_bench
log() { printf 'bench-cockpit-k9s: %s\n' "$*" >&2; }

command -v tmux >/dev/null || { log "needs tmux"; exit 2; }
K9S=$(command -v k9s || echo "$(go env GOPATH)/bin/k9s")
if [[ ! -x $K9S ]]; then
  log "building k9s v0.50.16 from the Go module proxy (a few minutes, once)"
  go install github.com/derailed/k9s@v0.50.16
  K9S="$(go env GOPATH)/bin/k9s"
fi
scripts/ensure-postgres.sh >&2
eval "$(scripts/test-cluster.sh up)"
KCFG=$AGENTDECK_TEST_KUBECONFIG
KUBECTL=$AGENTDECK_TEST_KUBECTL
PKI=$(dirname "$KCFG")/pki
log "building agentdeck, the stand-in harness and the kubelet (release)"
cargo build --release --quiet --bin agentdeck --example stand-in-harness --example test-kubelet
TARGET=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$TARGET/release
WORK=$(mktemp -d /tmp/bench-cockpit-k9s.XXXXXX)
# The screens as they were at the end of each measurement.
OUT=${BENCH_OUT:-$WORK}
mkdir -p "$OUT"
log "screens are kept in $OUT"
PIDS=()
cleanup() {
  tmux kill-session -t fleet-bench 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  "$KUBECTL" --kubeconfig "$KCFG" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

cpu_ticks() { # pid → utime+stime in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
mem_kb() { # pid field → kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
pane() { tmux capture-pane -p -t fleet-bench 2>/dev/null || true; }
pid_in_tmux() { tmux list-panes -t fleet-bench -F '#{pane_pid}' 2>/dev/null | head -1; }

# Waits until the pane matches REGEX; prints the seconds it took since START (date +%s.%N).
wait_screen() { # start regex what
  local start=$1 re=$2 what=$3 deadline=$((SECONDS + 300))
  until pane | grep -Eiq "$re"; do
    if ((SECONDS > deadline)); then
      log "the screen never showed $what; it shows:"; pane >&2; return 1
    fi
    sleep 0.05
  done
  awk -v now="$(date +%s.%N)" -v start="$start" 'BEGIN { printf "%.2f", now - start }'
}

# Idle CPU (% of one core) and memory of PID over WINDOW seconds.
idle_cost() { # pid
  local pid=$1 t0 t1 hz
  hz=$(getconf CLK_TCK)
  t0=$(cpu_ticks "$pid")
  sleep "$WINDOW"
  t1=$(cpu_ticks "$pid")
  printf 'CPU %.2f%% of a core, RSS %d MB (peak %d MB)' \
    "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v w="$WINDOW" 'BEGIN { print 100 * (b - a) / hz / w }')" \
    "$(($(mem_kb "$pid" VmRSS) / 1024))" "$(($(mem_kb "$pid" VmHWM) / 1024))"
}

# A namespace of its own, fresh for each size (a namespace being deleted refuses new objects,
# so the old one must be gone first), and a kubelet for it with the stand-in harness on its PATH.
KUBELET=
fresh_namespace() {
  if [[ -n $KUBELET ]]; then kill -TERM -- "-$KUBELET" 2>/dev/null || kill -TERM "$KUBELET" 2>/dev/null || true; wait "$KUBELET" 2>/dev/null || true; fi
  "$KUBECTL" --kubeconfig "$KCFG" delete namespace "$NS" --ignore-not-found --wait=true --timeout=600s >/dev/null
  "$KUBECTL" --kubeconfig "$KCFG" create namespace "$NS" >/dev/null
  log "starting a kubelet for namespace $NS (the stand-in harness on its PATH)"
  PATH="$BIN/examples:$PATH" setsid "$BIN/examples/test-kubelet" --kubeconfig "$KCFG" \
    --node fleet-bench-node --namespace "$NS" --root "$WORK/kubelet" \
    --tls-cert "$PKI/kubelet.crt" --tls-key "$PKI/kubelet.key" >>"$WORK/kubelet.log" 2>&1 </dev/null &
  KUBELET=$!
  PIDS+=("$KUBELET")
}

cat >"$WORK/config.toml" <<EOF
[store]
database_url = "postgres://postgres@127.0.0.1:5432/$DB"

[runtime]
kind = "kubernetes"

[kubernetes]
namespace = "$NS"
endpoint = "pod-ip"

[worker]
concurrency = 32

[api]
listen = "127.0.0.1:$PORT"

[agents.standin]
name = "stand-in"
harness = "opencode"
model = "litellm/mock-gpt"
image = "stand-in"
command = ["stand-in-harness", "serve", "--hostname", "{host}", "--port", "{port}"]
idle_timeout = "24h"
resources = { cpu = "10m", memory = "16Mi" }
EOF
export KUBECONFIG=$KCFG XDG_STATE_HOME=$WORK/state XDG_DATA_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config
# (tmux starts its programs with its server's environment, so theirs is spelled out)
ENVS="KUBECONFIG=$KCFG XDG_STATE_HOME=$WORK/state XDG_DATA_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config TERM=xterm-256color"
count() { psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "SELECT count(*) FROM sessions WHERE $1"; }

for N in "${SIZES[@]}"; do
  log "size $N: a fresh database and namespace"
  fresh_namespace
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null 2>&1
  "$BIN/agentdeck" --config "$WORK/config.toml" migrate >/dev/null
  setsid "$BIN/agentdeck" --config "$WORK/config.toml" serve >"$WORK/serve-$N.log" 2>&1 </dev/null &
  SERVE=$!
  PIDS+=("$SERVE")
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.2; done
  log "creating $N sessions through serve"
  for ((i = 0; i < N; i++)); do
    curl -sf -X POST "http://127.0.0.1:$PORT/api/sessions" -H 'content-type: application/json' \
      -d '{"agent_id": "standin"}' >/dev/null
  done
  deadline=$((SECONDS + 900))
  while :; do
    ready=$(count "status IN ('ready', 'idle')")
    ((ready >= N)) && break
    ((SECONDS < deadline)) || { log "only $ready of $N ready after 15 min"; exit 1; }
    sleep 2
  done
  log "$N sessions ready; letting the fleet settle"
  sleep 10

  # The cockpit, on its Sandboxes view.
  start=$(date +%s.%N)
  tmux new-session -d -s fleet-bench -x 200 -y 50 \
    "exec env $ENVS $BIN/agentdeck --config $WORK/config.toml"
  until pane | grep -q "fleet:"; do sleep 0.05; done
  tmux send-keys -t fleet-bench h
  shown=$(wait_screen "$start" "Sandboxes \\($N\\)" "Sandboxes ($N)")
  pid=$(pid_in_tmux)
  cost=$(idle_cost "$pid")
  pane >"$OUT/cockpit-$N.txt"
  echo "cockpit, $N live sandboxes: the Sandboxes view shows all $N ${shown}s after start; idle: $cost"
  tmux kill-session -t fleet-bench

  # k9s, on the namespace's pods.
  start=$(date +%s.%N)
  tmux new-session -d -s fleet-bench -x 200 -y 50 \
    "exec env $ENVS $K9S --kubeconfig $KCFG -n $NS -c pods --readonly --logoless"
  # (k9s writes 1000 as 1,000)
  grouped=$(printf '%s' "$N" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
  shown=$(wait_screen "$start" "pods\\($NS\\)\\[($N|$grouped)\\]" "pods($NS)[$grouped]")
  pid=$(pid_in_tmux)
  cost=$(idle_cost "$pid")
  pane >"$OUT/k9s-$N.txt"
  echo "k9s, $N pods: shows all $N ${shown}s after start; idle: $cost"
  tmux kill-session -t fleet-bench

  kill -TERM -- "-$SERVE" 2>/dev/null || kill -TERM "$SERVE" 2>/dev/null || true
  wait "$SERVE" 2>/dev/null || true
done
