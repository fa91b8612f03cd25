#!/usr/bin/env bash
# Runs agentdeck's whole test suite on a fresh machine: starts (or installs) what the tests need,
# then the tests. Real Postgres, real processes; see tests/ for what each file covers.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real Kubernetes control plane (kube-apiserver, etcd, the garbage collector, agent-sandbox),
# built once from the Go module proxy: started building first, in the background, so that it
# overlaps the installs below, which mostly wait on the network, and the Rust build.
cluster_out=$(mktemp)
scripts/test-cluster.sh build >"$cluster_out" 2>&1 &
cluster_build=$!

scripts/ensure-postgres.sh

# tmux drives the cockpit in its PTY test; openssl and curl serve the test control plane (its
# certificates, its readiness) and the tests' kubelet (its serving certificate).
for tool in tmux openssl curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq "$tool" >/dev/null; else sudo apt-get install -y -qq "$tool" >/dev/null; fi
  fi
done

# The real agent stack for the end-to-end tests (installed once into the cache dir, ~70 s and
# 1.1 GB the first time); the tests that need it fail, rather than skip, when it is missing.
eval "$(scripts/offline-stack.sh up)"
export AGENTDECK_E2E_REQUIRED=1
# Sandboxes the tests' local runtime started and left behind (their sessions' folders are gone
# with the tests' temporary dirs): each runs in a process group of its own, ended here.
reap_test_sandboxes() {
  for cwd in /proc/[0-9]*/cwd; do
    target=$(readlink "$cwd" 2>/dev/null) || continue
    case "$target" in
      /tmp/*/data/agentdeck/sandboxes/*" (deleted)")
        pid=${cwd#/proc/}; pid=${pid%/cwd}
        kill -KILL -- "-$(ps -o pgid= -p "$pid" | tr -d ' ')" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        ;;
    esac
  done
}
trap 'reap_test_sandboxes; scripts/offline-stack.sh down >/dev/null 2>&1 || true; scripts/test-cluster.sh down >/dev/null 2>&1 || true' EXIT

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A build from a clean checkout gains nothing from incremental data, which was gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Built before waiting for the control plane: rustc leaves a core idle much of the time (one
# large crate), which the Go build takes.
cargo test --locked --all-targets --no-run

if ! wait "$cluster_build"; then
  cat "$cluster_out" >&2
  echo "test.sh: building the test control plane failed (above)" >&2
  exit 1
fi
rm -f "$cluster_out"
# The tests run kubelets of their own; the long-running one is for people trying the cockpit.
eval "$(TEST_CLUSTER_KUBELET=0 scripts/test-cluster.sh up)"
export AGENTDECK_CLUSTER_REQUIRED=1
# Everything, with the Kubernetes tests on the real control plane; then the Kubernetes runtime's
# contract once more on the in-process fake API server, which also has the fault knobs (dropped
# watches, 410 Gone, OOMKilled …) a real cluster cannot be made to show on demand.
# Every test runs even when some fail (--no-fail-fast, and the second run after a red first),
# so that one red test never hides the state of the rest.
failed=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --all-targets || failed=1
  env -u AGENTDECK_TEST_KUBECONFIG cargo nextest run --locked --no-fail-fast --test runtime_kubernetes || failed=1
else
  cargo test --locked --no-fail-fast --all-targets || failed=1
  env -u AGENTDECK_TEST_KUBECONFIG cargo test --locked --no-fail-fast --test runtime_kubernetes || failed=1
fi
exit "$failed"
