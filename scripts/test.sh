#!/usr/bin/env bash
# Runs agentdeck's whole test suite on a fresh machine: starts (or installs) what the tests need,
# then the tests. Real Postgres, real processes; see tests/ for what each file covers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh

# tmux drives the cockpit in its PTY test.
if ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq tmux >/dev/null; else sudo apt-get install -y -qq tmux >/dev/null; fi
fi

# The real agent stack for the end-to-end tests (installed once into the cache dir, ~70 s and
# 1.1 GB the first time); the tests that need it fail, rather than skip, when it is missing.
eval "$(scripts/offline-stack.sh up)"
export AGENTDECK_E2E_REQUIRED=1
trap 'scripts/offline-stack.sh down >/dev/null 2>&1 || true' EXIT

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --all-targets
else
  cargo test --locked --all-targets
fi
