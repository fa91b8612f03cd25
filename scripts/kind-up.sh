#!/usr/bin/env bash
# Creates a local kind cluster with agent-sandbox installed, and the namespace and RBAC agentdeck
# needs, for trying the Kubernetes runtime on a machine with Docker:
#   scripts/kind-up.sh            # create (or reuse) the cluster `agentdeck`
#   scripts/kind-up.sh down       # delete it
# Then: agentdeck --runtime kubernetes doctor
#
# agent-sandbox is the release agentdeck's tests run against (scripts/cluster-versions.sh; they
# build it from the Go module proxy, see scripts/test-cluster.sh), installed from that release's
# `sandbox.yaml` (the asset name its README gives for that version). The manifest and the
# controller image come from GitHub and registry.k8s.io, so this needs the internet; agentdeck's
# own tests do not (they use scripts/test-cluster.sh).
set -euo pipefail

CLUSTER="${CLUSTER:-agentdeck}"
NAMESPACE="${NAMESPACE:-agentdeck}"
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=cluster-versions.sh
. "$here/scripts/cluster-versions.sh"

need() { command -v "$1" >/dev/null 2>&1 || { echo "kind-up: $1 is needed: $2" >&2; exit 1; }; }
need docker "install Docker and start its engine"
need kind "see https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "see https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 || { echo "kind-up: the Docker engine is not running" >&2; exit 1; }

if [ "${1:-up}" = "down" ]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "kind-up: installing agent-sandbox $AGENT_SANDBOX_VERSION" >&2
release="https://github.com/kubernetes-sigs/agent-sandbox/releases/download/${AGENT_SANDBOX_VERSION}"
kubectl apply --server-side -f "$release/sandbox.yaml"
# Its extensions (templates, warm pools, claims), after the core: the controller runs again with
# --extensions.
kubectl apply --server-side -f "$release/extensions.yaml"
kubectl wait --for=condition=Established --timeout=120s crd/sandboxes.agents.x-k8s.io \
  crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io \
  crd/sandboxclaims.extensions.agents.x-k8s.io

kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f "$here/config/kubernetes/rbac.yaml"

cat >&2 <<MSG
kind-up: ready. Try:
  agentdeck --runtime kubernetes doctor
  AGENTDECK_TEST_KUBECONFIG=\$HOME/.kube/config cargo test --test runtime_kubernetes
MSG
