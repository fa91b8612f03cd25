#!/usr/bin/env bash
# screenshots.sh: real pictures of the cockpit, refreshed from the real binary.
#
#   scripts/screenshots.sh            # writes screenshots/*.png (30-40 s once built)
#
# It builds agentdeck (debug; AGENTDECK_SCREENSHOTS_PROFILE=release for a release build), starts
# the offline agent stack (scripts/offline-stack.sh: a real LiteLLM gateway and opencode), runs
# the real cockpit in tmux (120x34, TERM=tmux-256color, its own HOME and XDG dirs in a temp
# folder, the embedded SQLite store), creates sessions with `agentdeck sessions create` on the
# same store (the cockpit's own worker provisions them), drives the cockpit with send-keys and
# captures each view with `tmux capture-pane -e -p`. scripts/screenshots/ansi_to_png.py turns each
# capture (text with SGR colour codes) into a PNG, cell by cell.
#
# Installs, when missing:
#   - tmux and fonts-dejavu-core (DejaVu Sans Mono) with apt-get (Debian packages);
#   - Pillow (PyPI, pillow==11.3.0) into a venv at
#     ${XDG_CACHE_HOME:-$HOME/.cache}/agentdeck/screenshots/venv (about 5 s, 15 MB);
#   - the offline stack, through scripts/offline-stack.sh (about 70 s and 1.1 GB the first time).
# It stops the gateway at the end only if it started it, and ends every process it started
# (the cockpit, the sessions' opencode sandboxes, its tmux server). Idempotent: each run
# replaces the PNGs, and only once every capture worked.
#
# Knobs: AGENTDECK_SCREENSHOTS_PROFILE (debug|release), AGENTDECK_SCREENSHOTS_BIN (a binary to
# use instead of building), AGENTDECK_SCREENSHOTS_OUT (default screenshots/),
# AGENTDECK_SCREENSHOTS_KEEP=1 keeps the temp folder (captures, store, cockpit log).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${AGENTDECK_SCREENSHOTS_OUT:-$ROOT/screenshots}
PROFILE=${AGENTDECK_SCREENSHOTS_PROFILE:-debug}
COLS=120
ROWS=34
PILLOW_VERSION=11.3.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/agentdeck/screenshots
VENV=$CACHE/venv
START=$(date +%s)

log() { printf 'screenshots: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

export LC_ALL=C.UTF-8 LANG=C.UTF-8

# --- what it needs ------------------------------------------------------------------------
apt_install() {
    command -v apt-get >/dev/null || die "$* missing and no apt-get here: install it by hand"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    log "installing $* (apt-get)"
    "${sudo[@]}" apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2
}
command -v tmux >/dev/null || apt_install tmux
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ]] || apt_install fonts-dejavu-core
command -v python3 >/dev/null || apt_install python3 python3-venv
if ! "$VENV/bin/python" -c "import PIL, sys; sys.exit(PIL.__version__ != '$PILLOW_VERSION')" 2>/dev/null; then
    log "installing Pillow $PILLOW_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV" || { apt_install python3-venv && python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q "pillow==$PILLOW_VERSION" >&2
fi
PY=$VENV/bin/python

# --- build --------------------------------------------------------------------------------
if [[ -n ${AGENTDECK_SCREENSHOTS_BIN:-} ]]; then
    BIN=$(realpath "$AGENTDECK_SCREENSHOTS_BIN")
    log "using $BIN (not building)"
else
    log "building agentdeck ($PROFILE) from the work tree"
    if [[ $PROFILE == release ]]; then
        cargo build --release --bin agentdeck >&2
    else
        cargo build --bin agentdeck >&2
    fi
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/agentdeck
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# --- the stack, a temp home, cleanup -------------------------------------------------------
STARTED_STACK=0
SERVES=()
if ! scripts/offline-stack.sh status >/dev/null 2>&1; then
    STARTED_STACK=1
fi
TMP=$(mktemp -d /tmp/deck.XXXXXX) # short: the cockpit shows the store path in its header
SOCKET=agentdeck-shots-$$
TMUX=(tmux -L "$SOCKET" -f /dev/null)
# A tmux inside the pane of the one above, for what tmux itself shows (its status line).
INNER=(tmux -L "$SOCKET-inner" -f /dev/null)

cleanup() {
    local rc=$?
    set +e
    "${TMUX[@]}" kill-server 2>/dev/null
    "${INNER[@]}" kill-server 2>/dev/null
    # The sessions' sandboxes are process groups of their own that outlive the cockpit.
    local f pid pids=()
    for pid in "${SERVES[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for f in "$TMP"/data/agentdeck/sandboxes/*/sandbox.json "$TMP"/servers/*/data/agentdeck/sandboxes/*/sandbox.json; do
        [[ -f $f ]] || continue
        pid=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("pid") or "")' "$f" 2>/dev/null)
        [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
    done
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
    if ((STARTED_STACK)); then
        log "stopping the offline stack (this script started it)"
        scripts/offline-stack.sh down >&2
    fi
    if [[ ${AGENTDECK_SCREENSHOTS_KEEP:-0} == 1 || $rc != 0 ]]; then
        log "kept $TMP (captures/, cli.log, the store, the cockpit log in state/)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the offline stack"
eval "$(scripts/offline-stack.sh up)"
mkdir -p "$TMP"/config/agentdeck "$TMP"/data "$TMP"/state "$TMP"/cache "$TMP"/captures

# Agents: the built-in `opencode` (mock-gpt), a `coder` on the scripted model (tool calls) with a
# warm pool of one (the Sandboxes view shows it), and one whose command does not exist (its
# sessions fail).
cat >"$TMP/config/agentdeck/config.toml" <<'EOF'
[agents.coder]
name = "Coder"
model = "litellm/scripted"
system_prompt = "You are a careful engineering agent."
command = ["opencode", "serve", "--hostname", "{host}", "--port", "{port}"]
warm = 1

[agents.careful]
name = "Careful"
model = "litellm/scripted"
command = ["opencode", "serve", "--hostname", "{host}", "--port", "{port}"]
[agents.careful.permission]
bash = "ask"

[agents.nightly]
name = "Nightly"
model = "litellm/mock-gpt"
command = ["nightly-agent-not-installed", "--port", "{port}"]
EOF

ENV=(env -u NO_COLOR -u AGENTDECK_CONFIG -u AGENTDECK_DATABASE_URL -u AGENTDECK_RUNTIME
    HOME="$TMP" XDG_CONFIG_HOME="$TMP/config" XDG_DATA_HOME="$TMP/data"
    XDG_STATE_HOME="$TMP/state" XDG_CACHE_HOME="$TMP/cache" PATH="$PATH"
    AGENTDECK_GATEWAY_URL="$AGENTDECK_GATEWAY_URL" TERM=tmux-256color)
# The CLI on the same store; its log lines go to cli.log in the temp folder.
deck() { "${ENV[@]}" "$BIN" "$@" 2>>"$TMP/cli.log"; }

# The cockpit in a detached tmux session; arguments are extra VAR=value for it (NO_COLOR=1).
RUN=0
cockpit() {
    local cmd
    RUN=$((RUN + 1))
    printf -v cmd '%q ' "${ENV[@]}" "$@" "$BIN"
    cmd+="; echo EXITED-$RUN \$?; sleep 3600"
    if "${TMUX[@]}" has-session -t deck 2>/dev/null; then
        "${TMUX[@]}" respawn-pane -k -t deck "$cmd"
    else
        "${TMUX[@]}" new-session -d -s deck -x "$COLS" -y "$ROWS" "$cmd"
        "${TMUX[@]}" set-option -t deck status off >/dev/null
    fi
}
# quit: q, and the cockpit must exit 0.
quit() {
    keys q
    wait_for 20 "EXITED-$RUN 0"
}
keys() { "${TMUX[@]}" send-keys -t deck "$@"; }
text() { "${TMUX[@]}" send-keys -t deck -l "$1"; }
screen() { "${TMUX[@]}" capture-pane -p -t deck; }
# wait_for TIMEOUT PATTERN...: until every (extended regex) pattern is on one screen.
wait_for() {
    local timeout=$1 deadline p ok
    shift
    deadline=$(($(date +%s) + timeout))
    while :; do
        local s
        s=$(screen)
        ok=1
        for p in "$@"; do grep -Eq -- "$p" <<<"$s" || ok=0; done
        ((ok)) && return 0
        if (($(date +%s) > deadline)); then
            log "the screen never showed: $*; it shows:"
            printf '%s\n' "$s" >&2
            exit 1
        fi
        sleep 0.2
    done
}
wait_for_quietly() { (wait_for "$@") 2>/dev/null; }
# shot NAME: the screen with its colours, after a moment for the last keys to be drawn.
shot() {
    sleep 0.6
    "${TMUX[@]}" capture-pane -e -p -N -t deck >"$TMP/captures/$1.ansi"
    "${TMUX[@]}" display -p -t deck '#{pane_width}' >"$TMP/captures/$1.cols"
    log "captured $1"
}
create() { deck sessions create -o json "$@" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

# --- the sessions --------------------------------------------------------------------------
cockpit
wait_for 30 "No sessions yet"

log "creating sessions"
create --agent nightly --title "nightly dependency audit" --prompt "audit the lockfile" >/dev/null
old=$(create --agent opencode --title "spike: retry budget" --prompt "sketch a retry budget")
create --agent coder --team payments --title "summarise the incident" \
    --prompt "summarise yesterday's payment incident for the channel" >/dev/null
create --agent opencode --title "say hello" --prompt "hello there" >/dev/null
create --agent coder --title "look around the sandbox" --prompt "run: ls -la" >/dev/null
# Sessions list newest first, so the table reads (top to bottom):
#   look around the sandbox, say hello, summarise the incident, spike: retry budget, nightly…
wait_for 120 "look around the sandbox +idle" "say hello +idle" "summarise the incident +idle" \
    "spike: retry budget +idle" "! failed +nightly +default +nightly dependency audit"
# End one. Ending a live session can race the reconciler, which then provisions the ended
# session again ("sandbox vanished; provisioning again") and it comes back `ready`: end it again.
for try in 1 2 3; do
    deck sessions end "$old" >/dev/null
    # (ended sessions leave the list: the title counts them)
    if wait_for_quietly 30 "Sessions \(4 · 1 ended hidden\)"; then break; fi
    ((try < 3)) || wait_for 1 "Sessions \(4 · 1 ended hidden\)"
    log "the ended session came back (end raced the reconciler); ending it again"
done

# Suspend one from the cockpit itself: the third row, S, then y to confirm.
keys g j j
sleep 0.3
keys S
wait_for 10 'suspend "summarise the incident"\?'
keys y
wait_for 60 "suspended +[a-z]+ +payments"
# Start the cockpit again: its status line ("suspend requested …") would stay in every picture.
quit
cockpit
wait_for 30 "Sessions \(4 · 1 ended hidden\)" "look around the sandbox +idle"
shot sessions

# --- a transcript with a tool call ---------------------------------------------------------
keys Enter
wait_for 60 "bash done" "Ran it\. Output:"
shot transcript
keys o
wait_for 10 "out +total"
shot transcript-tools

keys /
text "drwx"
keys Enter
wait_for 10 'search "drwx"' "match 1 of"
shot transcript-search

keys i
wait_for 10 "ctrl-s send"
text "now run the tests and tell me what fails"
shot composer
# esc keeps the draft (saved in the state dir) and says so on the status line: start over.
keys Escape
sleep 0.3
quit
cockpit
wait_for 30 "Sessions \(4 · 1 ended hidden\)" "look around the sandbox +idle"

# --- sandboxes, a log, diagnose -------------------------------------------------------------
keys h
wait_for 30 "Sandboxes \([0-9]+\)" "ready"
shot sandboxes
keys Escape
sleep 0.3
keys g l
wait_for 30 "Log · look around the sandbox" "opencode"
shot logs
keys Escape
sleep 0.3
keys G d
wait_for 30 "Diagnose · nightly dependency audit" "What to do" "Phase history"
shot diagnose
keys Escape
wait_for 10 "Sessions \(4 · 1 ended hidden\)"

# --- the new-session dialog, help ----------------------------------------------------------
keys n
wait_for 10 "New session"
keys Tab
text "triage the flaky checkout test"
keys Tab
text "run: cargo test checkout -- --nocapture"
shot new-session
keys Escape
wait_for 10 "Sessions \(4 · 1 ended hidden\)"
sleep 0.3

keys '?'
wait_for 10 "On this screen"
shot help
keys Escape
sleep 0.3
quit

# --- NO_COLOR ------------------------------------------------------------------------------
cockpit NO_COLOR=1
wait_for 30 "Sessions \(4 · 1 ended hidden\)" "look around the sandbox"
shot sessions-mono
quit

# --- the human in the loop: an agent whose bash needs a person's yes -----------------------
cockpit
wait_for 30 "Sessions \(4 · 1 ended hidden\)"
create --agent careful --title "clean the build cache" --prompt "run: rm -rf build/cache" >/dev/null
wait_for 120 "\? waiting +careful" "1 waiting for you"
shot sessions-waiting
keys g Enter
wait_for 30 "the agent waits for you" "bash wants to run: rm -rf build/cache"
shot transcript-permission
keys r
wait_for 10 "Reject \(why\?\)"
text "not on the shared runner; use the cache API"
shot permission-reject
keys Enter
wait_for 60 "bash: rejected: not on the shared runner"
quit

# --- what it cost, and what the agent changed ----------------------------------------------
create --agent coder --title "write the release notes" \
    --prompt "run: printf '# 1.4.0\n\n- sessions start from warm pools\n- a COST column\n' > RELEASE.md" >/dev/null
cockpit
# COST has a column from 130 columns (the preview goes under the list below 160).
"${TMUX[@]}" resize-window -t deck -x 132 -y "$ROWS"
wait_for 120 "write the release notes .*unknown" "COST" "say hello .*[$]0[.][0-9]"
shot sessions-cost
# The turn's diff comes once the turn is over: c until its file is there.
keys g
for try in $(seq 30); do
    keys c
    if wait_for_quietly 5 "RELEASE.md \+4 -0"; then break; fi
    ((try < 30)) || wait_for 1 "RELEASE.md \+4 -0"
    keys Escape
    sleep 1
done
wait_for 10 "sessions start from warm pools"
shot changes
keys Escape
sleep 0.3
quit
"${TMUX[@]}" resize-window -t deck -x "$COLS" -y "$ROWS"

# --- an answer in markdown: laid out, with the turn's time ---------------------------------
create --agent coder --title "write the build report" --prompt "markdown: the build report" >/dev/null
cockpit
wait_for 120 "write the build report +idle"
keys g Enter
wait_for 60 "lint +│ ok" "turn [0-9.]+s"
shot transcript-markdown
quit

# --- a notification's effect in tmux: the bell marks the cockpit's window ------------------
# An operator in window 0 of their tmux, the cockpit in window 1; a turn ends elsewhere, the
# cockpit rings the bell, and tmux flags its window (`monitor-bell`, on by default).
printf -v deck_cmd '%q ' "${ENV[@]}" "$BIN"
"${INNER[@]}" new-session -d -s work -n shell -x "$COLS" -y "$ROWS" "env -i TERM=tmux-256color PS1='ops\$ ' bash --norc --noprofile"
"${INNER[@]}" set-option -g monitor-bell on >/dev/null
"${INNER[@]}" set-option -g visual-bell off >/dev/null
"${INNER[@]}" new-window -d -t work:1 -n deck "$deck_cmd; sleep 3600"
"${TMUX[@]}" respawn-pane -k -t deck "$(printf '%q ' "${INNER[@]}") attach -t work:0"
wait_for 10 "ops[$]"
text "git log --oneline -3"
keys Enter
# Give the cockpit time to list the sessions, then start a turn it will hear end.
for _ in $(seq 50); do
    "${INNER[@]}" capture-pane -p -t work:1 | grep -q "Sessions (6 · 1 ended hidden)" && break
    sleep 0.2
done
# (its cursor away from the top, where the new session comes: what is previewed does not ring)
"${INNER[@]}" send-keys -t work:1 j j
sleep 0.5
create --agent opencode --title "check the on-call rota" --prompt "hello" >/dev/null
for try in $(seq 300); do
    [[ $("${INNER[@]}" display -p -t work:1 '#{window_bell_flag}') == 1 ]] && break
    ((try < 300)) || die "the cockpit's window was never flagged by its bell"
    sleep 0.2
done
shot notification
"${TMUX[@]}" respawn-pane -k -t deck "sleep 3600"
"${INNER[@]}" kill-server

# --- several servers in one cockpit: two `serve`s, a store each, a token each ---------------
# serve NAME PORT: `agentdeck serve` with a home of its own under $TMP/servers/NAME.
serve() {
    local home=$TMP/servers/$1
    mkdir -p "$home/config/agentdeck"
    cat >"$home/config/agentdeck/config.toml" <<EOF
[[api.tokens]]
token = "payments-token-0123456789"
team = "payments"
name = "ana"
[agents.coder]
name = "Coder"
model = "litellm/scripted"
command = ["opencode", "serve", "--hostname", "{host}", "--port", "{port}"]
EOF
    env -u NO_COLOR -u AGENTDECK_CONFIG -u AGENTDECK_DATABASE_URL -u AGENTDECK_RUNTIME \
        HOME="$home" XDG_CONFIG_HOME="$home/config" XDG_DATA_HOME="$home/data" \
        XDG_STATE_HOME="$home/state" XDG_CACHE_HOME="$home/cache" PATH="$PATH" \
        AGENTDECK_GATEWAY_URL="$AGENTDECK_GATEWAY_URL" \
        "$BIN" serve --listen "127.0.0.1:$2" >/dev/null 2>>"$TMP/serve-$1.log" &
    SERVES+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0
        sleep 0.1
    done
    die "serve $1 did not answer on port $2"
}
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EU=$(free_port)
US=$(free_port)
serve eu-west "$EU"
serve us-east "$US"
on() {
    local port=$1
    shift
    AGENTDECK_TOKEN=payments-token-0123456789 deck --server "http://127.0.0.1:$port" "$@" >/dev/null
}
on "$EU" sessions create --agent coder --title "rotate the TLS certificates" --prompt "run: ls -la"
on "$EU" sessions create --agent opencode --title "draft the release notes" --prompt "hello"
on "$US" sessions create --agent coder --title "triage the flaky checkout test" --prompt "run: ls -la"
on "$US" sessions create --agent opencode --title "answer the on-call handover" --prompt "hello"
mkdir -p "$TMP/servers/config/agentdeck"
cat >"$TMP/servers/config/agentdeck/config.toml" <<EOF
[[servers]]
name = "eu-west"
url = "http://127.0.0.1:$EU"
token_env = "PAYMENTS_TOKEN"
[[servers]]
name = "us-east"
url = "http://127.0.0.1:$US"
token_env = "PAYMENTS_TOKEN"
EOF
cockpit XDG_CONFIG_HOME="$TMP/servers/config" PAYMENTS_TOKEN=payments-token-0123456789
wait_for 120 "eu-west ok us-east ok" "SERVER" "rotate the TLS certificates +idle" \
    "draft the release notes +idle" "triage the flaky checkout test +idle" \
    "answer the on-call handover +idle"
shot servers
quit

# --- pictures ------------------------------------------------------------------------------
mkdir -p "$TMP/png"
for f in "$TMP"/captures/*.ansi; do
    name=$(basename "$f" .ansi)
    "$PY" "$ROOT/scripts/screenshots/ansi_to_png.py" "$f" "$TMP/png/$name.png" \
        --cols "$(cat "${f%.ansi}.cols" 2>/dev/null || echo "$COLS")" --rows "$ROWS"
done
mkdir -p "$OUT"
pngs=("$TMP"/png/*.png)
cp "${pngs[@]}" "$OUT"/
log "wrote ${#pngs[@]} pictures to ${OUT#"$ROOT"/} in $(($(date +%s) - START)) s"
