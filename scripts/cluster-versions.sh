# The versions of Kubernetes, etcd and agent-sandbox that agentdeck is tested against, in one
# place: scripts/test-cluster.sh builds exactly these, and scripts/kind-up.sh installs the same
# agent-sandbox. Sourced by both; a variable already set in the environment wins.
K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
# v1.0.1 serves agents.x-k8s.io/v1beta1 only (v1alpha1 went with v1.0).
AGENT_SANDBOX_VERSION=${AGENT_SANDBOX_VERSION:-v1.0.1}
