#!/usr/bin/env bash
# offline-stack.sh: a real agent stack (opencode harness + LiteLLM gateway) with no account and
# no network beyond the package registries, for integration tests and local try-outs.
#
#   eval "$(scripts/offline-stack.sh up)"    # install once, start the gateway, export its env
#   scripts/offline-stack.sh status           # what is installed and running (exit 3: not running)
#   scripts/offline-stack.sh env              # print the export lines again, start nothing
#   scripts/offline-stack.sh down             # stop the gateway; the install stays
#   scripts/offline_stack/smoke.sh            # end-to-end check through opencode's HTTP API
#
# `up` prints ONLY these lines on stdout (everything else goes to stderr):
#   export AGENTDECK_GATEWAY_URL=http://127.0.0.1:4000
#   export AGENTDECK_GATEWAY_MASTER_KEY=sk-agentdeck-…   (only with AGENTDECK_STACK_AUTH=1)
#   export PATH=<stack>/opencode/node_modules/.bin:"$PATH"
#
# What it installs, once, into ${AGENTDECK_STACK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentdeck/stack}:
#   venv/       a Python venv with litellm[proxy]==1.106.2 (PyPI; pip -c offline_stack/constraints.txt)
#               about 50-60 s and 740 MB
#   opencode/   npm install --prefix opencode opencode-ai@1.18.33 (npm registry; the Linux binary
#               comes as the optional dependency opencode-linux-x64, and opencode-ai's postinstall
#               hard-links it to node_modules/opencode-ai/bin/opencode.exe, which is what
#               node_modules/.bin/opencode points at); about 8-10 s and 355 MB
# A fresh machine needs about 70-80 s and 1.1 GB in all (measured here: 68-71 s for both installs,
# then 8 s to start the gateway). A second `up` skips both installs (markers record the pinned
# versions and each binary is asked its version) and reuses a healthy running gateway: about 1 s.
#
# The gateway: `litellm --config <stack>/gateway/config.yaml --host 127.0.0.1 --port PORT` with
# LITELLM_LOCAL_MODEL_COST_MAP=True, its master key from <stack>/master_key (generated once, mode
# 600), log <stack>/litellm.log, pid <stack>/litellm.pid; about 8 s to start, about 300 MB. PORT is
# $AGENTDECK_GATEWAY_PORT (default 4000), or the next free one when something else holds it.
# Models: `mock-gpt` (a fixed "Hello from mock") and `scripted` (offline_stack/scripted_provider.py:
# deterministic agent turns, including a streamed `bash` tool call for prompts with "run: CMD").
# Changing the config or the provider restarts the gateway on the next `up`.
#
# Requires: python3 >= 3.10 (AGENTDECK_STACK_PYTHON to pick one), node + npm, curl, setsid.
# Concurrent `up`/`down` on one stack dir are serialised by flock on <stack>/.lock.
#
# Virtual keys (/key/generate) need LiteLLM's database, and so Prisma: AGENTDECK_STACK_DB=1 installs
# prisma==0.15.0 into the venv, creates the database in $AGENTDECK_STACK_DB_URL (default
# postgresql://postgres@127.0.0.1:5432/litellm_stack) and starts the gateway with DATABASE_URL.
# Offline it cannot work: the pip package carries no Prisma engines; on start LiteLLM installs the
# Prisma CLI (npm prisma@5.17.0, fine) and that downloads its query and schema engines from
# binaries.prisma.sh, which is no package registry ("Error: request to https://binaries.prisma.sh/
# all_commits/393aa359…/debian-openssl-3.0.x/query-engine.gz.sha256 failed, reason: getaddrinfo
# ENOTFOUND binaries.prisma.sh"; npm's @prisma/engines fetches from there too). So it is off by
# default, and with it on `up` fails with that error unless the engines are cached in <stack>/prisma.
# Only that offline failure is verified here; with internet this is LiteLLM's standard DB setup.
#
# Other knobs: AGENTDECK_GATEWAY_START_TIMEOUT (seconds, default 120; 600 with the database).

set -euo pipefail

LITELLM_VERSION=1.106.2
OPENCODE_VERSION=1.18.33
PRISMA_PY_VERSION=0.15.0

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ASSETS=$SCRIPT_DIR/offline_stack
STACK_DIR=${AGENTDECK_STACK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentdeck/stack}
VENV=$STACK_DIR/venv
OC_DIR=$STACK_DIR/opencode
OC_BIN_DIR=$OC_DIR/node_modules/.bin
GW_DIR=$STACK_DIR/gateway
LOG=$STACK_DIR/litellm.log
PID_FILE=$STACK_DIR/litellm.pid
PORT_FILE=$STACK_DIR/litellm.port
STATE_FILE=$STACK_DIR/litellm.state
KEY_FILE=$STACK_DIR/master_key
AUTH_ON=0
[[ ${AGENTDECK_STACK_AUTH:-0} == 1 ]] && AUTH_ON=1
PRISMA_DIR=$STACK_DIR/prisma
LITELLM_MARKER=$VENV/.agentdeck-installed
PRISMA_MARKER=$VENV/.agentdeck-prisma
OC_MARKER=$OC_DIR/.agentdeck-installed
DB_ON=0
[[ ${AGENTDECK_STACK_DB:-0} =~ ^(1|true|yes|on)$ ]] && DB_ON=1
DB_URL=${AGENTDECK_STACK_DB_URL:-postgresql://postgres@127.0.0.1:5432/litellm_stack}

log() { printf 'offline-stack: %s\n' "$*" >&2; }
die() {
  printf 'offline-stack: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: $(basename "$0") up|down|status|env

  up      install (once) and start the LiteLLM gateway; prints export lines for eval
  down    stop the gateway started by up (the install stays)
  status  what is installed and running (exit 0: gateway running, 3: not running)
  env     print the export lines again without starting anything

Stack dir: $STACK_DIR
Env: AGENTDECK_STACK_DIR, AGENTDECK_GATEWAY_PORT (default 4000), AGENTDECK_STACK_PYTHON,
     AGENTDECK_GATEWAY_START_TIMEOUT, AGENTDECK_STACK_DB=1 + AGENTDECK_STACK_DB_URL (needs Prisma
     engines, which cannot be fetched offline).
EOF
}

# --- helpers -------------------------------------------------------------------------------------

# Exit status 0 when GET url answers 2xx within 3 s; never through an HTTP proxy.
http_ok() {
  curl -fsS -o /dev/null --noproxy '*' -m 3 "$1" 2>/dev/null
}

lock_stack() {
  mkdir -p "$STACK_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STACK_DIR/.lock"
    flock -w 900 9 || die "another offline-stack.sh holds $STACK_DIR/.lock for too long"
  fi
}

# The running gateway's pid, or nothing: the pid file names a live process that is litellm.
gateway_pid() {
  local pid args
  [[ -f $PID_FILE ]] || return 0
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  args=$(ps -o args= -p "$pid" 2>/dev/null || true)
  [[ $args == *litellm* ]] && printf '%s\n' "$pid"
  return 0
}

gateway_port() {
  if [[ -f $PORT_FILE ]]; then cat "$PORT_FILE"; else printf '%s\n' "${AGENTDECK_GATEWAY_PORT:-4000}"; fi
}

pick_python() {
  local c
  for c in ${AGENTDECK_STACK_PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10 python3.14; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys, venv; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 15)))' 2>/dev/null; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  die "LiteLLM $LITELLM_VERSION needs Python 3.10-3.14 with the venv module (set AGENTDECK_STACK_PYTHON)"
}

# Python for small helper snippets: the venv's once it exists.
helper_python() {
  if [[ -x $VENV/bin/python ]]; then printf '%s\n' "$VENV/bin/python"; else pick_python; fi
}

port_free() {
  "$(helper_python)" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

choose_port() {
  local want=${AGENTDECK_GATEWAY_PORT:-4000} p
  if ! [[ $want =~ ^[0-9]+$ ]] || ((want < 1 || want > 65535)); then
    die "AGENTDECK_GATEWAY_PORT=$want is not a port"
  fi
  if port_free "$want"; then
    printf '%s\n' "$want"
    return 0
  fi
  for ((p = want + 1; p < want + 200 && p < 65536; p++)); do
    if port_free "$p"; then
      log "port $want is taken by something else; using $p"
      printf '%s\n' "$p"
      return 0
    fi
  done
  die "no free port in $want-$((want + 199))"
}

litellm_version() {
  [[ -x $VENV/bin/python ]] || return 0
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true
}

litellm_installed() {
  [[ -f $LITELLM_MARKER && $(<"$LITELLM_MARKER") == "litellm[proxy]==$LITELLM_VERSION" && -x $VENV/bin/litellm ]] &&
    [[ $(litellm_version) == "$LITELLM_VERSION" ]]
}

# opencode with its state kept out of the user's home.
opencode_probe() {
  local probe=$STACK_DIR/.opencode-probe
  mkdir -p "$probe"
  env XDG_CONFIG_HOME="$probe/config" XDG_DATA_HOME="$probe/data" XDG_CACHE_HOME="$probe/cache" \
    XDG_STATE_HOME="$probe/state" OPENCODE_DISABLE_AUTOUPDATE=1 OPENCODE_DISABLE_MODELS_FETCH=1 \
    OPENCODE_DISABLE_SHARE=1 OPENCODE_DISABLE_LSP_DOWNLOAD=1 OPENCODE_DISABLE_DEFAULT_PLUGINS=1 \
    "$@"
}

opencode_version() {
  [[ -x $OC_BIN_DIR/opencode ]] || return 0
  opencode_probe timeout 60 "$OC_BIN_DIR/opencode" --version 2>/dev/null | tail -n 1 || true
}

opencode_installed() {
  [[ -f $OC_MARKER && $(<"$OC_MARKER") == "opencode-ai@$OPENCODE_VERSION" ]] &&
    [[ $(opencode_version) == "$OPENCODE_VERSION" ]]
}

# --- install -------------------------------------------------------------------------------------

install_litellm() {
  local py start=$SECONDS
  if litellm_installed; then
    log "litellm[proxy]==$LITELLM_VERSION already installed in $VENV"
    return 0
  fi
  py=$(pick_python)
  log "installing litellm[proxy]==$LITELLM_VERSION into $VENV (about a minute, 740 MB)"
  rm -rf "$VENV"
  "$py" -m venv "$VENV" >&2
  if ! "$VENV/bin/pip" install --disable-pip-version-check -q -c "$ASSETS/constraints.txt" \
    "litellm[proxy]==$LITELLM_VERSION" >&2; then
    log "pip could not satisfy $ASSETS/constraints.txt here; retrying with litellm pinned alone"
    "$VENV/bin/pip" install --disable-pip-version-check -q "litellm[proxy]==$LITELLM_VERSION" >&2 ||
      die "pip install litellm[proxy]==$LITELLM_VERSION failed"
  fi
  [[ $(litellm_version) == "$LITELLM_VERSION" ]] || die "litellm $LITELLM_VERSION is not importable from $VENV"
  printf 'litellm[proxy]==%s\n' "$LITELLM_VERSION" >"$LITELLM_MARKER"
  log "litellm installed in $((SECONDS - start)) s"
}

install_prisma() {
  if [[ -f $PRISMA_MARKER && $(<"$PRISMA_MARKER") == "prisma==$PRISMA_PY_VERSION" ]]; then return 0; fi
  log "installing prisma==$PRISMA_PY_VERSION into $VENV (for AGENTDECK_STACK_DB=1)"
  "$VENV/bin/pip" install --disable-pip-version-check -q -c "$ASSETS/constraints.txt" \
    "prisma==$PRISMA_PY_VERSION" >&2 || die "pip install prisma==$PRISMA_PY_VERSION failed"
  printf 'prisma==%s\n' "$PRISMA_PY_VERSION" >"$PRISMA_MARKER"
}

install_opencode() {
  local start=$SECONDS got
  if opencode_installed; then
    log "opencode-ai@$OPENCODE_VERSION already installed in $OC_DIR"
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die "npm is needed to install opencode-ai"
  log "installing opencode-ai@$OPENCODE_VERSION into $OC_DIR (about 10 s, 355 MB)"
  rm -rf "$OC_DIR"
  mkdir -p "$OC_DIR"
  # The postinstall runs `opencode --version`; keep what that writes out of the user's home.
  opencode_probe npm install --prefix "$OC_DIR" --no-audit --no-fund --save-exact \
    "opencode-ai@$OPENCODE_VERSION" >&2 || die "npm install opencode-ai@$OPENCODE_VERSION failed"
  got=$(opencode_version)
  if [[ $got != "$OPENCODE_VERSION" && -f $OC_DIR/node_modules/opencode-ai/postinstall.mjs ]]; then
    # npm with scripts disabled (ignore-scripts, or a future allowScripts default) skips the
    # postinstall that puts the platform binary in place; run it ourselves (it needs no network
    # when npm installed the optional platform package).
    log "opencode --version gave '${got}'; running opencode-ai's postinstall by hand"
    (cd "$OC_DIR/node_modules/opencode-ai" && opencode_probe node ./postinstall.mjs) >&2 || true
    got=$(opencode_version)
  fi
  [[ $got == "$OPENCODE_VERSION" ]] ||
    die "$OC_BIN_DIR/opencode --version gave '${got}', expected $OPENCODE_VERSION"
  printf 'opencode-ai@%s\n' "$OPENCODE_VERSION" >"$OC_MARKER"
  log "opencode installed in $((SECONDS - start)) s"
}

# --- gateway -------------------------------------------------------------------------------------

ensure_master_key() {
  if [[ ! -s $KEY_FILE ]]; then
    local key
    key=sk-agentdeck-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$key" >"$KEY_FILE")
  fi
  chmod 600 "$KEY_FILE"
}

write_gateway_config() {
  [[ -f $ASSETS/scripted_provider.py ]] || die "missing $ASSETS/scripted_provider.py"
  mkdir -p "$GW_DIR"
  cp "$ASSETS/scripted_provider.py" "$GW_DIR/scripted_provider.py"
  # The master key is not in the file: LiteLLM reads it from LITELLM_MASTER_KEY at start.
  cat >"$GW_DIR/config.yaml" <<'YAML'
# Written by scripts/offline-stack.sh on every `up`; edits here are overwritten.
model_list:
  - model_name: mock-gpt
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-fake
      mock_response: "Hello from mock"
  - model_name: scripted
    litellm_params:
      model: scripted/agent
litellm_settings:
  # scripted_provider.py sits beside this file; LiteLLM imports it from here.
  custom_provider_map:
    - provider: scripted
      custom_handler: scripted_provider.handler
YAML
  # Without its database a LiteLLM proxy accepts only its master key, and that key must never
  # enter a sandbox; so on this loopback-only stack the gateway runs without auth unless
  # AGENTDECK_STACK_AUTH=1 (then sandboxes need a key of their own, see the README).
  if ((AUTH_ON)); then
    printf 'general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n' >>"$GW_DIR/config.yaml"
  fi
}

# What the running gateway was started with: a change means restart.
desired_state() {
  local db=off
  ((DB_ON)) && db=$DB_URL
  {
    cat "$GW_DIR/config.yaml" "$GW_DIR/scripted_provider.py"
    printf 'litellm=%s db=%s auth=%s\n' "$LITELLM_VERSION" "$db" "$AUTH_ON"
  } | cksum | cut -d' ' -f1
}

stop_gateway() {
  local pid i
  pid=$(gateway_pid)
  if [[ -z $pid ]]; then
    rm -f "$PID_FILE"
    return 1
  fi
  log "stopping the gateway (pid $pid)"
  # It runs in a session of its own (setsid), so its process group is its pid.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still running after 10 s; SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$PID_FILE" "$STATE_FILE"
  return 0
}

prepare_database() {
  install_prisma
  mkdir -p "$PRISMA_DIR"
  log "creating the database in $DB_URL if it is missing"
  "$VENV/bin/python" - "$DB_URL" <<'PY' >&2 || die "cannot reach or create the database $DB_URL"
import sys, urllib.parse, psycopg
url = sys.argv[1]
parts = urllib.parse.urlsplit(url)
name = parts.path.lstrip("/") or "litellm"
admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
    if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
        conn.execute(f'create database "{name}"')
        print(f"created database {name}")
PY
  if [[ -z $(find "$PRISMA_DIR" \( -name 'prisma-query-engine-*' -o -name 'query-engine-*' -o -name 'libquery_engine-*' \) -print -quit 2>/dev/null) ]]; then
    log "Prisma's engines are not cached in $PRISMA_DIR: Prisma downloads them from binaries.prisma.sh" \
      "on this start, which fails with no internet (no package registry carries them)"
  fi
}

start_gateway() {
  local port=$1 pid deadline timeout=120 i
  ((DB_ON)) && timeout=600
  timeout=${AGENTDECK_GATEWAY_START_TIMEOUT:-$timeout}
  [[ -f $LOG ]] && mv -f "$LOG" "$LOG.1"
  : >"$LOG"
  log "starting LiteLLM on 127.0.0.1:$port (log: $LOG)"
  rm -f "$PID_FILE.new"
  (
    cd "$GW_DIR"
    exec 9>&- # the stack lock stays with this script, not with the gateway
    unset DATABASE_URL DIRECT_URL
    export LITELLM_LOCAL_MODEL_COST_MAP=True
    unset LITELLM_MASTER_KEY
    if ((AUTH_ON)); then
      LITELLM_MASTER_KEY=$(<"$KEY_FILE")
      export LITELLM_MASTER_KEY
    else
      # loopback only, mock models only: LiteLLM's own switch for running without auth
      export LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true
    fi
    if ((DB_ON)); then
      # Everything Prisma caches (its CLI, and its engines in ~/.cache/prisma, a path only HOME
      # moves) goes under the stack dir; npm, which installs the CLI, keeps the user's npmrc.
      if [[ -z ${NPM_CONFIG_USERCONFIG:-} && -f $HOME/.npmrc ]]; then
        export NPM_CONFIG_USERCONFIG=$HOME/.npmrc
      fi
      export DATABASE_URL=$DB_URL HOME=$PRISMA_DIR PRISMA_HOME_DIR=$PRISMA_DIR \
        PRISMA_NODEENV_CACHE_DIR=$PRISMA_DIR/nodeenv
    fi
    # A session of its own, so a Ctrl-C in (or the end of) the shell that ran `up` does not reach
    # it and `down` can signal its whole process group. setsid forks when its caller leads a
    # process group, so the new session's leader writes its own pid before becoming litellm.
    # shellcheck disable=SC2016 # expanded by the inner bash
    exec setsid bash -c 'printf "%s\n" "$$" >"$1" && shift && exec "$@"' _ "$PID_FILE.new" \
      "$VENV/bin/litellm" --config "$GW_DIR/config.yaml" --host 127.0.0.1 --port "$port" \
      </dev/null >>"$LOG" 2>&1
  ) &
  for ((i = 0; i < 200; i++)); do
    [[ -s $PID_FILE.new ]] && break
    sleep 0.05
  done
  [[ -s $PID_FILE.new ]] || die "LiteLLM did not start (no pid after 10 s); see $LOG"
  pid=$(<"$PID_FILE.new")
  mv -f "$PID_FILE.new" "$PID_FILE"
  printf '%s\n' "$port" >"$PORT_FILE"
  deadline=$((SECONDS + timeout))
  until http_ok "http://127.0.0.1:$port/health/liveliness"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      log "LiteLLM exited during startup; the end of $LOG:"
      tail -n 40 "$LOG" >&2
      if ((DB_ON)) && grep -q 'binaries.prisma.sh' "$LOG"; then
        die "the gateway did not start: AGENTDECK_STACK_DB=1 needs Prisma's engines, which come only" \
          "from binaries.prisma.sh (not reachable here); run without AGENTDECK_STACK_DB"
      fi
      die "the gateway did not start"
    fi
    if ((SECONDS >= deadline)); then
      log "LiteLLM is not healthy after ${timeout} s; the end of $LOG:"
      tail -n 40 "$LOG" >&2
      stop_gateway || true
      die "the gateway did not become healthy on http://127.0.0.1:$port/health/liveliness"
    fi
    sleep 0.5
  done
  desired_state >"$STATE_FILE"
  log "gateway healthy on http://127.0.0.1:$port (pid $pid)"
}

print_env() {
  local port=$1 key
  key=$(<"$KEY_FILE")
  printf 'export AGENTDECK_GATEWAY_URL=http://127.0.0.1:%s\n' "$port"
  if ((AUTH_ON)); then
    printf 'export AGENTDECK_GATEWAY_MASTER_KEY=%s\n' "$key"
  fi
  # shellcheck disable=SC2016 # $PATH is for the shell that evals this line
  printf 'export PATH=%s:"$PATH"\n' "$(printf '%q' "$OC_BIN_DIR")"
}

# --- subcommands ---------------------------------------------------------------------------------

cmd_up() {
  local pid port
  command -v curl >/dev/null 2>&1 || die "curl is needed"
  command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is needed"
  lock_stack
  install_litellm
  install_opencode
  ((DB_ON)) && prepare_database
  ensure_master_key
  write_gateway_config
  pid=$(gateway_pid)
  port=$(gateway_port)
  if [[ -n $pid ]]; then
    if ! http_ok "http://127.0.0.1:$port/health/liveliness"; then
      log "the gateway (pid $pid) does not answer on port $port; restarting it"
      stop_gateway || true
      pid=
    elif [[ ! -f $STATE_FILE || $(<"$STATE_FILE") != "$(desired_state)" ]]; then
      log "the gateway's config, provider or database setting changed; restarting it"
      stop_gateway || true
      pid=
    else
      log "reusing the running gateway (pid $pid) on http://127.0.0.1:$port"
    fi
  fi
  if [[ -z $pid ]]; then
    rm -f "$PID_FILE"
    port=$(choose_port)
    start_gateway "$port"
  fi
  print_env "$port"
}

cmd_down() {
  lock_stack
  if stop_gateway; then
    log "gateway stopped; the install stays in $STACK_DIR"
  else
    log "the gateway is not running"
  fi
}

cmd_env() {
  [[ -s $KEY_FILE ]] || die "nothing set up in $STACK_DIR yet; run: $0 up"
  if [[ -z $(gateway_pid) ]]; then log "note: the gateway is not running (start it with: $0 up)"; fi
  print_env "$(gateway_port)"
}

cmd_status() {
  local v pid port rc=3
  printf 'stack dir: %s\n' "$STACK_DIR"
  v=$(litellm_version)
  if [[ -n $v ]]; then
    printf 'litellm:   %s installed (%s)%s\n' "$v" "$VENV" "$([[ $v == "$LITELLM_VERSION" ]] || echo ", pinned is $LITELLM_VERSION")"
  else
    printf 'litellm:   not installed (pinned: %s)\n' "$LITELLM_VERSION"
  fi
  v=$(opencode_version)
  if [[ -n $v ]]; then
    printf 'opencode:  %s installed (%s/opencode)%s\n' "$v" "$OC_BIN_DIR" "$([[ $v == "$OPENCODE_VERSION" ]] || echo ", pinned is $OPENCODE_VERSION")"
  else
    printf 'opencode:  not installed (pinned: %s)\n' "$OPENCODE_VERSION"
  fi
  pid=$(gateway_pid)
  port=$(gateway_port)
  if [[ -n $pid ]]; then
    if http_ok "http://127.0.0.1:$port/health/liveliness"; then
      printf 'gateway:   running, healthy: pid %s, http://127.0.0.1:%s\n' "$pid" "$port"
      rc=0
    else
      printf 'gateway:   running but not answering: pid %s, port %s (log: %s)\n' "$pid" "$port" "$LOG"
    fi
  elif [[ -f $PID_FILE ]]; then
    printf 'gateway:   not running (stale pid file %s)\n' "$PID_FILE"
  else
    printf 'gateway:   not running\n'
  fi
  if [[ -f $PRISMA_MARKER ]]; then
    printf 'database:  prisma installed; AGENTDECK_STACK_DB=%s (%s)\n' "${AGENTDECK_STACK_DB:-0}" "$DB_URL"
  fi
  if [[ -d $STACK_DIR ]]; then
    printf 'disk:      %s\n' "$(du -sh "$STACK_DIR" 2>/dev/null | cut -f1)"
  fi
  return "$rc"
}

main() {
  case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
