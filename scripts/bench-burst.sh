#!/usr/bin/env bash
# bench-burst.sh: a burst of new sessions on the real test control plane (scripts/test-cluster.sh).
# See BENCHMARKS.md, "A burst of sessions".
#
#   scripts/bench-burst.sh 200          # sessions per burst (default 200)
#   CONCURRENCY=32 scripts/bench-burst.sh 200
#   WARM=200 scripts/bench-burst.sh 200  # a warm pool of 200, full before the burst
#
# One `agentdeck serve` (release build, Postgres, the Kubernetes runtime, namespace burst-bench,
# `[worker] concurrency` = $CONCURRENCY, default 4 as shipped) and a kubelet of this script's own
# running the stand-in harness (tests/common/stand_in_harness.rs: opencode's routes, no agent, about
# 2 MB a pod). N sessions are created at once through the REST API (16 requests in flight); then
# each session's time from its creation to its phase `ready` (both as the database stamped them)
# is read from the store. Prints the API's time to accept all N, create → ready p50/p90/p99/max,
# and the burst's rate: N / (last ready − first created). With WARM=W the agent keeps a warm pool
# of W (agent-sandbox's SandboxWarmPool, each pod running the release `agentdeck bootstrap` in
# front of the stand-in harness); the burst starts once all
# W are ready, and how many sessions started warm and cold is printed too.
# Needs: tmux is not needed; Postgres (scripts/ensure-postgres.sh), the test control plane (built by
# scripts/test-cluster.sh on first use, ~11 min), curl, xargs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$HERE"
N=${1:-200}
CONCURRENCY=${CONCURRENCY:-4}
WARM=${WARM:-0}
NS=burst-bench
PORT=${BENCH_API_PORT:-3918}
DB=agentdeck_burst_bench
log() { printf 'bench-burst: %s\n' "$*" >&2; }
scripts/ensure-postgres.sh >&2
eval "$(scripts/test-cluster.sh up)"
KCFG=$AGENTDECK_TEST_KUBECONFIG
KUBECTL=$AGENTDECK_TEST_KUBECTL
PKI=$(dirname "$KCFG")/pki
log "building agentdeck, the stand-in harness and the kubelet (release)"
cargo build --release --quiet --bin agentdeck --example stand-in-harness --example test-kubelet
TARGET=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$TARGET/release
WORK=$(mktemp -d /tmp/bench-burst.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  "$KUBECTL" --kubeconfig "$KCFG" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql() { command psql -h 127.0.0.1 -U postgres "$@"; }

"$KUBECTL" --kubeconfig "$KCFG" delete namespace "$NS" --ignore-not-found --wait=true --timeout=600s >/dev/null
"$KUBECTL" --kubeconfig "$KCFG" create namespace "$NS" >/dev/null
PATH="$BIN/examples:$PATH" setsid "$BIN/examples/test-kubelet" --kubeconfig "$KCFG" \
  --node burst-bench-node --namespace "$NS" --root "$WORK/kubelet" \
  --tls-cert "$PKI/kubelet.crt" --tls-key "$PKI/kubelet.key" >>"$WORK/kubelet.log" 2>&1 </dev/null &
PIDS+=("$!")

cat >"$WORK/config.toml" <<EOF
[store]
database_url = "postgres://postgres@127.0.0.1:5432/$DB"

[runtime]
kind = "kubernetes"

[kubernetes]
namespace = "$NS"
endpoint = "pod-ip"
bootstrap_program = "$BIN/agentdeck"

[worker]
concurrency = $CONCURRENCY

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
warm = $WARM
EOF
export KUBECONFIG=$KCFG XDG_STATE_HOME=$WORK/state XDG_DATA_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config
psql -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null 2>&1
"$BIN/agentdeck" --config "$WORK/config.toml" migrate >/dev/null
setsid "$BIN/agentdeck" --config "$WORK/config.toml" serve >"$WORK/serve.log" 2>&1 </dev/null &
PIDS+=("$!")
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.2; done
if ((WARM > 0)); then
  log "waiting for the warm pool's $WARM sandboxes to be ready"
  filled=$((SECONDS + 1200))
  until [[ $(curl -sf "http://127.0.0.1:$PORT/api/sandboxes" |
    python3 -c 'import json,sys; print(sum(p["ready"] for p in json.load(sys.stdin)["pools"] if p["agent"] == "standin"))') -ge $WARM ]]; do
    ((SECONDS < filled)) || { log "the warm pool did not fill in 20 min"; exit 1; }
    sleep 1
  done
  log "the warm pool is full"
fi

log "creating $N sessions at once (worker concurrency $CONCURRENCY, warm pool $WARM)"
start=$(date +%s.%N)
seq "$N" | xargs -P 16 -I{} curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/api/sessions" \
  -H 'content-type: application/json' -d '{"agent_id": "standin"}'
accepted=$(awk -v now="$(date +%s.%N)" -v start="$start" 'BEGIN { printf "%.2f", now - start }')
deadline=$((SECONDS + 900))
count() { psql -d "$DB" -tAc "SELECT count(*) FROM sessions WHERE $1"; }
while :; do
  ready=$(count "status IN ('ready', 'idle')")
  ((ready >= N)) && break
  failed=$(count "status = 'failed'")
  ((failed == 0)) || { log "$failed sessions failed:"; psql -d "$DB" -tAc "SELECT failure_reason FROM sessions WHERE status = 'failed' LIMIT 3" >&2; exit 1; }
  ((SECONDS < deadline)) || { log "only $ready of $N ready after 15 min"; exit 1; }
  sleep 0.5
done
psql -d "$DB" -tA -F' ' -c "
  WITH ready AS (
    SELECT s.created_at, min(e.at) AS ready_at
    FROM sessions s JOIN events e ON e.session_id = s.id
    WHERE e.kind = 'session.phase' AND e.payload->>'phase' = 'ready'
    GROUP BY s.id, s.created_at
  ), took AS (SELECT extract(epoch FROM ready_at - created_at) AS s FROM ready)
  SELECT count(*),
         percentile_cont(0.5) WITHIN GROUP (ORDER BY s),
         percentile_cont(0.9) WITHIN GROUP (ORDER BY s),
         percentile_cont(0.99) WITHIN GROUP (ORDER BY s),
         max(s),
         (SELECT extract(epoch FROM max(ready_at) - min(created_at)) FROM ready)
  FROM took" | awk -v n="$N" -v accepted="$accepted" -v c="$CONCURRENCY" -v w="$WARM" '{
    printf "burst of %d sessions (worker concurrency %d, warm pool %d): API accepted all in %.2fs; create -> ready p50 %.1fs p90 %.1fs p99 %.1fs max %.1fs; all ready %.1fs after the first was created: %.1f sessions/s\n",
      $1, c, w, accepted, $2, $3, $4, $5, $6, n / $6 }'
psql -d "$DB" -tA -F' ' -c "
  SELECT coalesce(payload->>'launch', '?'), count(*) FROM events
  WHERE kind = 'session.launch' GROUP BY 1 ORDER BY 1" | awk '{ printf "launched %s: %d\n", $1, $2 }'
