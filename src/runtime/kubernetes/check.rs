//! What `agentdeck doctor` says about the cluster: reachable, agent-sandbox installed (and which
//! version is used), and whether agentdeck may do everything it needs in its namespaces.

use super::{KubernetesRuntime, names};
use crate::runtime::Check;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

/// (API group, resource, verbs) agentdeck needs in each of its namespaces: what
/// config/kubernetes/rbac.yaml grants, and nothing more (tests/cluster_real.rs checks both ways
/// against a real API server).
pub const NEEDS: &[(&str, &str, &[&str])] = &[
    (
        names::GROUP,
        "sandboxes",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("", "pods", &["get", "list", "watch", "delete"]),
    ("", "pods/log", &["get"]),
    // A WebSocket port-forward is a GET upgrade: Kubernetes 1.35+ checks both verbs.
    ("", "pods/portforward", &["get", "create"]),
    // The operators' shells (`pods/exec` over WebSocket): the same two verbs.
    ("", "pods/exec", &["get", "create"]),
    ("", "secrets", &["get", "create", "patch", "delete"]),
    ("", "events", &["list", "watch"]),
    // Warm pools (agent-sandbox's extensions): each agent's template and pool, kept by
    // server-side apply, and a claim per session taken from one (listed by the reconciler,
    // which ends those of ended sessions whose Sandbox never got the session's labels).
    (
        names::EXTENSIONS_GROUP,
        "sandboxtemplates",
        &["get", "create", "patch", "delete"],
    ),
    (
        names::EXTENSIONS_GROUP,
        "sandboxwarmpools",
        &["get", "list", "create", "patch", "delete"],
    ),
    (
        names::EXTENSIONS_GROUP,
        "sandboxclaims",
        &["get", "list", "create", "delete"],
    ),
];

async fn allowed(
    rt: &KubernetesRuntime,
    ns: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Result<bool, String> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(rt.client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

pub async fn run(rt: &KubernetesRuntime) -> Vec<Check> {
    let mut checks = Vec::new();
    match rt.client.apiserver_version().await {
        Ok(v) => checks.push(Check {
            name: "cluster".into(),
            ok: true,
            detail: format!(
                "reachable, Kubernetes {}.{} ({})",
                v.major, v.minor, v.git_version
            ),
            fix: None,
        }),
        Err(e) => {
            checks.push(Check {
                name: "cluster".into(),
                ok: false,
                detail: format!("not reachable: {e}"),
                fix: Some("check your kubeconfig context ([kubernetes] context) and that the cluster is up".into()),
            });
            return checks;
        }
    }
    match rt.discover_version().await {
        Ok(version) => checks.push(Check {
            name: "agent-sandbox".into(),
            ok: true,
            detail: format!("{} served; using {}", names::GROUP, version.as_str()),
            fix: None,
        }),
        Err(e) => checks.push(Check {
            name: "agent-sandbox".into(),
            ok: false,
            detail: e.to_string(),
            fix: Some("install agent-sandbox (scripts/kind-up.sh shows how) or set [kubernetes] api_version".into()),
        }),
    }
    for ns in rt.namespaces() {
        let mut granted = Vec::new();
        let mut missing = Vec::new();
        let mut error = None;
        for (group, resource, verbs) in NEEDS {
            for verb in *verbs {
                match allowed(rt, &ns, group, resource, verb).await {
                    Ok(true) => granted.push(format!("{verb} {resource}")),
                    Ok(false) => missing.push(format!("{verb} {resource}")),
                    Err(e) => error = Some(e),
                }
            }
        }
        checks.push(match (error, missing.is_empty()) {
            (Some(e), _) => Check {
                name: format!("rbac ({ns})"),
                ok: false,
                detail: format!("cannot ask the cluster what is allowed: {e}"),
                fix: None,
            },
            (None, true) => Check {
                name: format!("rbac ({ns})"),
                ok: true,
                detail: format!("all {} verbs allowed", granted.len()),
                fix: None,
            },
            (None, false) => Check {
                name: format!("rbac ({ns})"),
                ok: false,
                detail: format!("not allowed: {}", missing.join(", ")),
                fix: Some("apply config/kubernetes/rbac.yaml in this namespace".into()),
            },
        });
    }
    checks
}
