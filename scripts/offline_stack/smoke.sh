#!/usr/bin/env bash
# End-to-end check of the offline agent stack: scripts/offline-stack.sh up, then a real
# `opencode serve` in a temp dir that talks to the LiteLLM gateway, driven over its HTTP API:
#   1. POST /session, then "say hi"               -> a text part with "Scripted reply"
#   2. "run: echo agentdeck-ok" (model `scripted`) -> a completed `bash` tool part whose output has
#      agentdeck-ok, and a final text "Ran it. Output: agentdeck-ok"
#   3. GET /event during that turn                 -> tool part pending/running/completed, session.idle
# Needs nothing but the registries (first run installs, about 80 s); about 15 s once installed.
# Stops the gateway at the end if it was not running before (AGENTDECK_SMOKE_KEEP_GATEWAY=1 keeps it).
# AGENTDECK_SMOKE_SAMPLES=DIR writes sample-events.txt and sample-messages.json there.
# Last line: "smoke: N passed, N failed"; exit 1 on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK=$HERE/../offline-stack.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/agentdeck-smoke.XXXXXX")
OC_PID=
EV_PID=
STARTED_GATEWAY=0
PASSED=0
FAILED=0

say() { printf 'smoke: %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  if [[ -n $EV_PID ]]; then kill "$EV_PID" 2>/dev/null || true; fi
  if [[ -n $OC_PID ]]; then
    # opencode takes from 0.2 s to several seconds to exit on SIGTERM after a turn.
    kill -TERM -- "-$OC_PID" 2>/dev/null || kill -TERM "$OC_PID" 2>/dev/null || true
    local t0=$SECONDS
    for _ in $(seq 150); do kill -0 "$OC_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$OC_PID" 2>/dev/null; then
      say "opencode still running 15 s after SIGTERM; SIGKILL"
      kill -KILL -- "-$OC_PID" 2>/dev/null || kill -KILL "$OC_PID" 2>/dev/null || true
    else
      say "opencode stopped $((SECONDS - t0)) s after SIGTERM"
    fi
  fi
  if ((STARTED_GATEWAY)) && [[ ${AGENTDECK_SMOKE_KEEP_GATEWAY:-0} != 1 ]]; then
    "$STACK" down || true
  fi
  if ((rc != 0 || FAILED)) && [[ -f $TMP/opencode.log ]]; then
    say "opencode's log ($TMP/opencode.log), last lines:"
    tail -n 30 "$TMP/opencode.log" >&2 || true
  fi
  if ((rc == 0 && FAILED == 0)) && [[ ${AGENTDECK_SMOKE_KEEP_TMP:-0} != 1 ]]; then
    rm -rf "$TMP"
  else
    say "kept $TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT

check() { # check NAME COMMAND...
  local name=$1
  shift
  if "$@"; then
    PASSED=$((PASSED + 1))
    say "ok: $name"
  else
    FAILED=$((FAILED + 1))
    say "FAILED: $name"
  fi
}

# JSON assertions in Python (python3 is needed by the stack anyway).
pyjson() { # pyjson FILE EXPR: exit 0 when EXPR (with d = the parsed file) is true
  python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def texts(parts):
    return " ".join(p.get("text", "") for p in parts if p.get("type") == "text")
def tools(messages):
    return [p for m in messages for p in m.get("parts", []) if p.get("type") == "tool"]
def tool_statuses(events):
    return [e["properties"]["part"]["state"]["status"] for e in events
            if e["type"] == "message.part.updated" and e["properties"]["part"].get("type") == "tool"]
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
PY
}

curl_json() { # curl_json METHOD PATH [BODY] -> stdout
  local args=(-fsS --noproxy '*' -m 120 -X "$1" "$BASE$2")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' -d "$3")
  curl "${args[@]}"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- the gateway ---------------------------------------------------------------------------------
mkdir -p "$TMP/home" "$TMP/xdg/config" "$TMP/xdg/data" "$TMP/xdg/cache" "$TMP/xdg/state" "$TMP/work"
if ! "$STACK" status >/dev/null 2>&1; then STARTED_GATEWAY=1; fi
ENV_LINES=$("$STACK" up)
eval "$ENV_LINES"
say "gateway at $AGENTDECK_GATEWAY_URL"
only_exports() { ! grep -qv '^export ' <<<"$ENV_LINES"; }
opencode_runs() {
  command -v opencode >/dev/null &&
    env HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/xdg/config" XDG_DATA_HOME="$TMP/xdg/data" \
      XDG_CACHE_HOME="$TMP/xdg/cache" XDG_STATE_HOME="$TMP/xdg/state" opencode --version >/dev/null </dev/null
}
same_again() { [[ $("$STACK" up 2>/dev/null) == "$ENV_LINES" ]]; } # reuses the running gateway
check "up printed only export lines" only_exports
check "opencode on PATH after eval" opencode_runs
check "a second up prints the same lines" same_again

# --- opencode serve ------------------------------------------------------------------------------
python3 - "$TMP/work/opencode.json" <<'PY'
import json, os, sys
url = os.environ["AGENTDECK_GATEWAY_URL"]
config = {
    "$schema": "https://opencode.ai/config.json",
    "provider": {
        "litellm": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "LiteLLM (offline stack)",
            "options": {"baseURL": url + "/v1", "apiKey": os.environ.get("AGENTDECK_GATEWAY_MASTER_KEY", "sk-no-auth")},
            "models": {
                "mock-gpt": {"name": "mock-gpt", "tool_call": True},
                "scripted": {"name": "scripted", "tool_call": True},
            },
        }
    },
    "model": "litellm/scripted",
    "small_model": "litellm/scripted",
    "autoupdate": False,
    "share": "disabled",
    "permission": {"bash": "allow", "edit": "allow", "webfetch": "allow"},
}
json.dump(config, open(sys.argv[1], "w"), indent=2)
PY
# On start, opencode npm-installs @opencode-ai/plugin into its global config dir
# ($XDG_CONFIG_HOME/opencode) in the background, from the npm registry, unless that dir already
# has node_modules and a lock listing it. Seed that state: no registry traffic, and no install
# still running when we stop it.
mkdir -p "$TMP/xdg/config/opencode/node_modules"
printf '{"dependencies":{"@opencode-ai/plugin":"*"}}\n' >"$TMP/xdg/config/opencode/package.json"
printf '{"lockfileVersion":3,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}\n' \
  >"$TMP/xdg/config/opencode/package-lock.json"
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
(
  cd "$TMP/work"
  export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/xdg/config XDG_DATA_HOME=$TMP/xdg/data \
    XDG_CACHE_HOME=$TMP/xdg/cache XDG_STATE_HOME=$TMP/xdg/state \
    OPENCODE_DISABLE_AUTOUPDATE=1 OPENCODE_DISABLE_MODELS_FETCH=1 OPENCODE_DISABLE_SHARE=1 \
    OPENCODE_DISABLE_LSP_DOWNLOAD=1 OPENCODE_DISABLE_DEFAULT_PLUGINS=1
  # Its own session (so cleanup can signal the group); the leader writes its pid, as setsid
  # forks when its caller leads a process group.
  # shellcheck disable=SC2016 # expanded by the inner bash
  exec setsid bash -c 'printf "%s\n" "$$" >"$1" && shift && exec "$@"' _ "$TMP/opencode.pid" \
    opencode serve --hostname 127.0.0.1 --port "$PORT" </dev/null >"$TMP/opencode.log" 2>&1
) &
for _ in $(seq 100); do [[ -s $TMP/opencode.pid ]] && break; sleep 0.05; done
OC_PID=$(cat "$TMP/opencode.pid")
say "opencode serve on $BASE (pid $OC_PID, dir $TMP)"
for i in $(seq 120); do
  if curl -fsS --noproxy '*' -m 2 "$BASE/global/health" >"$TMP/health.json" 2>/dev/null; then break; fi
  kill -0 "$OC_PID" 2>/dev/null || { say "opencode exited"; exit 1; }
  ((i < 120)) || { say "opencode did not answer /global/health in 60 s"; exit 1; }
  sleep 0.5
done
check "GET /global/health is healthy" pyjson "$TMP/health.json" 'd["healthy"] is True'

# --- a plain turn --------------------------------------------------------------------------------
curl_json POST /session '{}' >"$TMP/session.json"
SID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/session.json")
check "POST /session gives ses_ id" pyjson "$TMP/session.json" 'd["id"].startswith("ses_")'
curl_json POST "/session/$SID/message" \
  '{"model":{"providerID":"litellm","modelID":"scripted"},"parts":[{"type":"text","text":"say hi"}]}' \
  >"$TMP/reply1.json"
check "say hi -> Scripted reply" pyjson "$TMP/reply1.json" \
  '"Scripted reply to: say hi" in texts(d["parts"]) and d["info"]["finish"] == "stop"'

# --- a tool turn, with the event stream ----------------------------------------------------------
curl -sSN --noproxy '*' -m 120 "$BASE/event" >"$TMP/events.txt" 2>/dev/null &
EV_PID=$!
for _ in $(seq 50); do [[ -s $TMP/events.txt ]] && break; sleep 0.1; done
curl_json POST "/session/$SID/message" \
  '{"model":{"providerID":"litellm","modelID":"scripted"},"parts":[{"type":"text","text":"run: echo agentdeck-ok"}]}' \
  >"$TMP/reply2.json"
for _ in $(seq 50); do grep -q '"type":"session.idle"' "$TMP/events.txt" && break; sleep 0.1; done
sleep 0.3
kill "$EV_PID" 2>/dev/null || true
wait "$EV_PID" 2>/dev/null || true
EV_PID=
check "run: -> final text 'Ran it. Output: agentdeck-ok'" pyjson "$TMP/reply2.json" \
  '"Ran it. Output: agentdeck-ok" in texts(d["parts"])'
curl_json GET "/session/$SID/message" >"$TMP/messages.json"
check "GET messages has a completed bash tool part with agentdeck-ok" pyjson "$TMP/messages.json" \
  'any(t["tool"] == "bash" and t["state"]["status"] == "completed" and "agentdeck-ok" in t["state"]["output"] for t in tools(d))'
check "GET messages: user, assistant, user, assistant(tool-calls), assistant(stop)" pyjson "$TMP/messages.json" \
  '[(m["info"]["role"], m["info"].get("finish")) for m in d] == [("user", None), ("assistant", "stop"), ("user", None), ("assistant", "tool-calls"), ("assistant", "stop")]'
python3 - "$TMP/events.txt" >"$TMP/events.json" <<'PY'
import json, sys
events = [json.loads(l[6:]) for l in open(sys.argv[1]) if l.startswith("data: ")]
json.dump(events, sys.stdout)
PY
check "events: server.connected first, bash tool part pending -> running -> completed, session.idle" \
  pyjson "$TMP/events.json" 'd[0]["type"] == "server.connected" and tool_statuses(d)[:1] == ["pending"]
    and "running" in tool_statuses(d) and tool_statuses(d)[-1:] == ["completed"]
    and any(e["type"] == "session.idle" for e in d)'


# --- the other model -----------------------------------------------------------------------------
curl_json POST "/session/$SID/message" \
  '{"model":{"providerID":"litellm","modelID":"mock-gpt"},"parts":[{"type":"text","text":"hello?"}]}' \
  >"$TMP/reply3.json"
check "mock-gpt -> Hello from mock" pyjson "$TMP/reply3.json" \
  '"Hello from mock" in texts(d["parts"]) and d["info"]["modelID"] == "mock-gpt"'

if [[ -n ${AGENTDECK_SMOKE_SAMPLES:-} ]]; then
  mkdir -p "$AGENTDECK_SMOKE_SAMPLES"
  grep -v '^$' "$TMP/events.txt" >"$AGENTDECK_SMOKE_SAMPLES/sample-events.txt"
  python3 -m json.tool "$TMP/messages.json" >"$AGENTDECK_SMOKE_SAMPLES/sample-messages.json"
  say "wrote samples to $AGENTDECK_SMOKE_SAMPLES"
fi

printf 'smoke: %d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
