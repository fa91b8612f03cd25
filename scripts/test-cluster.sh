#!/usr/bin/env bash
# test-cluster.sh: a real Kubernetes control plane on loopback, built from the Go module proxy,
# for agentdeck's tests and for trying the Kubernetes runtime on a machine with no Docker and no
# internet (the envtest way: a real kube-apiserver and etcd; plus the garbage collector and the
# agent-sandbox controller; no nodes: tests/common/kubelet plays one).
#
#   eval "$(scripts/test-cluster.sh up)"   # build once, start, export AGENTDECK_TEST_KUBECONFIG
#   scripts/test-cluster.sh status          # what runs (exit 3: not running)
#   scripts/test-cluster.sh env             # print the export line again, start nothing
#   scripts/test-cluster.sh down            # stop everything; binaries and state stay
#   scripts/test-cluster.sh reset           # down, and forget the cluster's data and certs
#
# `up` prints ONLY these lines on stdout (everything else goes to stderr):
#   export AGENTDECK_TEST_KUBECONFIG=<run>/admin.kubeconfig   (cluster-admin, by client certificate)
#   export AGENTDECK_TEST_KUBECTL=<cache>/bin/kubectl          (the same Kubernetes version)
#
# Pinned in scripts/cluster-versions.sh (kind-up.sh installs the same agent-sandbox; override at
# your own risk with the variables of the same name):
#   Kubernetes      K8S_VERSION=1.36.3      kube-apiserver, kube-controller-manager and kubectl,
#                   from k8s.io/kubernetes with every k8s.io staging module pinned to v0.36.3
#   etcd            ETCD_VERSION=3.6.16     go.etcd.io/etcd/server/v3
#   agent-sandbox   AGENT_SANDBOX_VERSION=v1.0.1   sigs.k8s.io/agent-sandbox: its CRDs (k8s/crds)
#                   and cmd/agent-sandbox-controller. v1.0.1 serves agents.x-k8s.io/v1beta1 only
#                   (v1alpha1 went with v1.0; v0.5.x served both through a conversion webhook).
#
# Built once into ${AGENTDECK_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentdeck/cluster}/bin
# (a stamp records the pins; a changed pin builds again). Measured on a 2-core machine of this
# project: the first build on a fresh machine (empty Go module and build caches) 11 min 5 s,
# module downloads included, with other work sharing the cores; 1.5 GB of modules and 4 GB of
# Go build cache. A second `up` with the binaries built: about 6 s (certs exist, etcd and the
# apiserver start, the CRDs are there), plus the kubelet's `cargo build` when that is stale;
# 1-2 s when it is already running.
#
# What runs, all on 127.0.0.1 (ports: TEST_CLUSTER_APISERVER_PORT 16443, TEST_CLUSTER_ETCD_PORT
# 12379 and +1 for peers, TEST_CLUSTER_KCM_PORT 10357), logs and pids in <run>/:
#   etcd                      --unsafe-no-fsync (a test cluster: speed over durability)
#   kube-apiserver            TLS with a CA made here; RBAC on; clients by certificate
#                             (admin: O=system:masters); service account tokens signed by a key
#                             made here; it reaches kubelets with a client certificate
#   kube-controller-manager   only the controllers a test cluster needs: garbage collector (a
#                             session's Secret goes with its Sandbox), namespaces, service
#                             accounts (the `default` one pods need), pod GC (pods of a node
#                             that is gone, as a test's kubelet is at its end), kube-root-ca.crt
#   agent-sandbox-controller  with the admin kubeconfig, no leader election, with its extensions
#                             (SandboxTemplate, SandboxWarmPool, SandboxClaim: warm pools)
#   agentdeck's namespace `agentdeck` with config/kubernetes/rbac.yaml applied
# and, unless TEST_CLUSTER_KUBELET=0, the tests' kubelet (tests/common/kubelet, built with cargo
# as the example `test-kubelet`) serving the namespace `agentdeck`, so that a session made from
# the cockpit gets a running pod. Tests run kubelets of their own for their own namespaces.
#
# <run> is ${AGENTDECK_CLUSTER_DIR:-<cache>/run}. Concurrent calls are serialised by flock.
# Requires: go (1.26), openssl, curl, flock, setsid.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=cluster-versions.sh
. "$HERE/scripts/cluster-versions.sh"
CACHE=${AGENTDECK_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentdeck/cluster}
RUN=${AGENTDECK_CLUSTER_DIR:-$CACHE/run}
BIN=$CACHE/bin
PKI=$RUN/pki
APISERVER_PORT=${TEST_CLUSTER_APISERVER_PORT:-16443}
ETCD_PORT=${TEST_CLUSTER_ETCD_PORT:-12379}
KCM_PORT=${TEST_CLUSTER_KCM_PORT:-10357}
KUBECONFIG_ADMIN=$RUN/admin.kubeconfig
NAMESPACE=agentdeck
# (build=2: the Kubernetes binaries carry their version)
STAMP="k8s=$K8S_VERSION etcd=$ETCD_VERSION agent-sandbox=$AGENT_SANDBOX_VERSION build=2"

log() { printf 'test-cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is needed: $2"; }

# ---------------------------------------------------------------------------------------------
# Building

# Every k8s.io module that k8s.io/kubernetes's own go.mod replaces with ./staging/...: a module
# download does not contain those folders, so each is pinned to its published v0.X.Y instead.
staging_modules() {
  local mod
  mod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod
  [[ -f $mod ]] || (cd "$1" && GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@v$K8S_VERSION") >&2
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$mod" | awk '{print $1}'
}

build_kubernetes() {
  local src=$CACHE/src/kubernetes staging=0.${K8S_VERSION#1.}
  mkdir -p "$src"
  cat >"$src/go.mod" <<EOF
module agentdeck.test/kubernetes

go 1.26.0

require k8s.io/kubernetes v$K8S_VERSION
EOF
  cat >"$src/tools.go" <<'EOF'
//go:build tools

// The Kubernetes programs the test cluster runs, built from the module proxy.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  local m
  for m in $(staging_modules "$src"); do
    printf 'replace %s => %s v%s\n' "$m" "$m" "$staging" >>"$src/go.mod"
  done
  # The version the binaries report (/version, `kubectl version`), as Kubernetes' own build sets it.
  local ldflags="-s -w" pkg minor=${K8S_VERSION#1.}
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (the first time takes about 9 min on 2 cores)"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >&2 &&
    GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl >&2)
}

build_etcd() {
  local src=$CACHE/src/etcd
  mkdir -p "$src"
  cat >"$src/go.mod" <<EOF
module agentdeck.test/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
EOF
  cat >"$src/tools.go" <<'EOF'
//go:build tools

// etcd for the test cluster, built from the module proxy.
package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  log "building etcd $ETCD_VERSION"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >&2 &&
    GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2)
}

build_agent_sandbox() {
  log "building agent-sandbox-controller $AGENT_SANDBOX_VERSION"
  (cd "$CACHE" && GOFLAGS= GOBIN=$BIN go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/agent-sandbox/cmd/agent-sandbox-controller@$AGENT_SANDBOX_VERSION" >&2)
  local dir
  dir=$(cd "$CACHE" && GOFLAGS= go mod download -json "sigs.k8s.io/agent-sandbox@$AGENT_SANDBOX_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $dir/k8s/crds ]] || die "no k8s/crds in sigs.k8s.io/agent-sandbox@$AGENT_SANDBOX_VERSION ($dir)"
  rm -rf "$CACHE/crds" && mkdir -p "$CACHE/crds"
  cp "$dir"/k8s/crds/*.yaml "$CACHE/crds/"
  chmod -R u+w "$CACHE/crds"
}

ensure_built() {
  if [[ -f $BIN/.stamp && $(cat "$BIN/.stamp") == "$STAMP" ]]; then
    local b missing=
    for b in etcd kube-apiserver kube-controller-manager kubectl agent-sandbox-controller; do
      [[ -x $BIN/$b ]] || missing=1
    done
    [[ -z $missing && -d $CACHE/crds ]] && return 0
  fi
  need go "Go 1.26 (the module proxy must be reachable)"
  mkdir -p "$BIN"
  local start=$SECONDS
  build_etcd
  build_agent_sandbox
  build_kubernetes
  echo "$STAMP" >"$BIN/.stamp"
  log "built in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------------------------------------
# Certificates and credentials (made once per <run>; `reset` forgets them)

cert() { # name subject [san] : a key and a certificate signed by the CA
  local name=$1 subject=$2 san=${3:-}
  [[ -f $PKI/$name.crt ]] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" \
    -out "$PKI/$name.csr" 2>/dev/null
  local ext=$PKI/$name.ext
  if [[ -n $san ]]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

ensure_pki() {
  need openssl "Debian's openssl package"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [[ ! -f $PKI/ca.crt ]]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -days 3650 -sha256 \
      -subj "/CN=agentdeck-test-cluster-ca" -out "$PKI/ca.crt" 2>/dev/null
  fi
  cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  cert admin "/O=system:masters/CN=admin"
  cert controller-manager "/O=system:masters/CN=system:kube-controller-manager"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert kubelet "/CN=agentdeck-test-kubelet" "IP:127.0.0.1,DNS:localhost"
  if [[ ! -f $PKI/sa.key ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  write_kubeconfig "$KUBECONFIG_ADMIN" admin
  write_kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() { # path user: a kubeconfig with the user's client certificate, inline
  cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: agentdeck-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$PKI/$2.crt")
    client-key-data: $(b64 "$PKI/$2.key")
contexts:
- name: agentdeck-test
  context:
    cluster: agentdeck-test
    user: $2
    namespace: $NAMESPACE
current-context: agentdeck-test
EOF
  chmod 600 "$1.tmp"
  mv "$1.tmp" "$1"
}

# ---------------------------------------------------------------------------------------------
# Processes

pid_of() { # name: the pid when it runs, else nothing
  local f=$RUN/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

start() { # name command...: in its own session, output to <run>/name.log
  local name=$1
  shift
  if [[ -n $(pid_of "$name") ]]; then return 0; fi
  log "starting $name"
  # (9>&-: the lock of this script is not theirs to keep)
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/$name.pid"
}

stop() { # name
  local pid
  pid=$(pid_of "$1")
  [[ -n $pid ]] || { rm -f "$RUN/$1.pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$RUN/$1.pid"
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2 name=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [[ -z $(pid_of "$name") ]]; then
      log "$name exited; the end of $RUN/$name.log:"
      tail -n 30 "$RUN/$name.log" >&2 || true
      exit 1
    fi
    if ((SECONDS > deadline)); then
      log "$what did not happen within $seconds s; the end of $RUN/$name.log:"
      tail -n 30 "$RUN/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

apiserver_ready() {
  curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_etcd() {
  mkdir -p "$RUN/etcd"
  start etcd "$BIN/etcd" --name test --data-dir "$RUN/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "test=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "" --log-level warn
  wait_for "etcd to answer" 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged \
    --enable-priority-and-fairness=false \
    --profiling=false
  wait_for "kube-apiserver to be ready" 90 kube-apiserver apiserver_ready
}

start_controller_manager() {
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --leader-elect=false \
    --controllers garbage-collector-controller,namespace-controller,serviceaccount-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller \
    --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=false --authentication-skip-lookup
}

apply_cluster_objects() {
  # CRDs by server-side apply: the Sandbox CRD is too large for kubectl's last-applied annotation.
  kubectl_ apply --server-side --force-conflicts -f "$CACHE/crds" >&2
  kubectl_ wait --for condition=Established --timeout 60s crd/sandboxes.agents.x-k8s.io \
    crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io \
    crd/sandboxclaims.extensions.agents.x-k8s.io >&2
  kubectl_ create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl_ apply -f - >&2
  kubectl_ -n "$NAMESPACE" apply -f "$HERE/config/kubernetes/rbac.yaml" >&2
}

start_agent_sandbox() {
  # --extensions: the template, warm pool and claim controllers too (warm pools). A pool sandbox
  # not ready within the grace period is replaced (20 s here, 5 min by default).
  start agent-sandbox-controller "$BIN/agent-sandbox-controller" \
    --kubeconfig "$KUBECONFIG_ADMIN" --leader-elect=false \
    --metrics-bind-address 0 --health-probe-bind-address 0 \
    --extensions --sandbox-warm-pool-readiness-grace-period 20s
}

start_kubelet() {
  [[ ${TEST_CLUSTER_KUBELET:-1} == 1 ]] || return 0
  if [[ -z $(pid_of test-kubelet) ]]; then
    log "building the tests' kubelet (cargo build --example test-kubelet)"
    (cd "$HERE" && cargo build --quiet --example test-kubelet >&2)
  fi
  local target
  target=$(cd "$HERE" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  start test-kubelet "$target/debug/examples/test-kubelet" \
    --kubeconfig "$KUBECONFIG_ADMIN" --node agentdeck-test-node --namespace "$NAMESPACE" \
    --root "$RUN/kubelet" --tls-cert "$PKI/kubelet.crt" --tls-key "$PKI/kubelet.key"
}

# ---------------------------------------------------------------------------------------------
# Commands

lock() {
  mkdir -p "$RUN"
  exec 9>"$RUN/.lock"
  flock 9
}

print_env() {
  printf 'export AGENTDECK_TEST_KUBECONFIG=%s\n' "$KUBECONFIG_ADMIN"
  printf 'export AGENTDECK_TEST_KUBECTL=%s\n' "$BIN/kubectl"
}

cmd_up() {
  need curl "Debian's curl package"
  lock
  local start=$SECONDS
  ensure_built
  ensure_pki
  start_etcd
  start_apiserver
  start_controller_manager
  apply_cluster_objects
  start_agent_sandbox
  start_kubelet
  log "up in $((SECONDS - start)) s: kubectl --kubeconfig $KUBECONFIG_ADMIN get sandboxes,pods -A"
  print_env
}

cmd_down() {
  lock
  local name
  for name in test-kubelet agent-sandbox-controller kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
  log "stopped"
}

cmd_reset() {
  cmd_down
  rm -rf "$RUN/etcd" "$PKI" "$RUN/kubelet" "$RUN"/*.kubeconfig "$RUN"/*.log
  log "forgot the cluster's data and certificates (the binaries stay in $BIN)"
}

cmd_status() {
  local name code=0
  for name in etcd kube-apiserver kube-controller-manager agent-sandbox-controller test-kubelet; do
    local pid
    pid=$(pid_of "$name")
    if [[ -n $pid ]]; then
      printf '%-26s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-26s stopped\n' "$name"
      [[ $name == test-kubelet ]] || code=3
    fi
  done
  printf 'binaries: %s\n' "$( [[ -f $BIN/.stamp ]] && cat "$BIN/.stamp" || echo 'not built')"
  exit "$code"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  reset) cmd_reset ;;
  env) print_env ;;
  status) cmd_status ;;
  build) lock; ensure_built ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
