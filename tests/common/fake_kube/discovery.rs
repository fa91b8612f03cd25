//! Discovery documents: `/version`, `/api`, `/apis` (plain and aggregated v2), `/api/v1`,
//! `/apis/{group}` and `/apis/{group}/{version}`.

use super::objects::{KINDS, Kind};
use serde_json::{Value, json};

/// The Accept header of aggregated discovery (kube's `run_aggregated`, kubectl).
pub(crate) const AGGREGATED: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// The groups served, each with its versions in order of preference.
pub(crate) fn groups(sandbox_versions: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let mut sandbox = sandbox_versions.to_vec();
    sandbox.sort_by_key(|v| if v == "v1beta1" { 0 } else { 1 });
    let mut groups = vec![("", vec!["v1".to_string()])];
    if !sandbox.is_empty() {
        groups.push((super::objects::SANDBOX_GROUP, sandbox));
    }
    groups.push(("authorization.k8s.io", vec!["v1".to_string()]));
    groups
}

pub(crate) fn serves(sandbox_versions: &[String], group: &str, version: &str) -> bool {
    groups(sandbox_versions)
        .iter()
        .any(|(g, vs)| *g == group && vs.iter().any(|v| v == version))
}

fn cidrs(host: &str) -> Value {
    json!([{"clientCIDR": "0.0.0.0/0", "serverAddress": host}])
}

pub(crate) fn core_versions(host: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs(host)})
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(gv),
    })
}

pub(crate) fn group(sandbox_versions: &[String], name: &str) -> Option<Value> {
    let groups = groups(sandbox_versions);
    let (_, versions) = groups.iter().find(|(g, _)| !g.is_empty() && *g == name)?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = "APIGroup".into();
    doc["apiVersion"] = "v1".into();
    Some(doc)
}

pub(crate) fn group_list(sandbox_versions: &[String]) -> Value {
    let groups: Vec<Value> = groups(sandbox_versions)
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn kinds_in(group: &str) -> impl Iterator<Item = &'static Kind> + '_ {
    KINDS.iter().filter(move |k| k.group == group)
}

pub(crate) fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for kind in kinds_in(group) {
        resources.push(json!({
            "name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced,
            "kind": kind.kind, "verbs": kind.verbs, "shortNames": kind.short_names,
        }));
        if kind.status {
            resources.push(json!({
                "name": format!("{}/status", kind.plural), "singularName": "",
                "namespaced": kind.namespaced, "kind": kind.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if kind.plural == "pods" {
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod",
                "verbs": ["get"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// Aggregated discovery (apidiscovery.k8s.io/v2) for the core group (`core`) or the others.
pub(crate) fn aggregated(sandbox_versions: &[String], core: bool) -> Value {
    let items: Vec<Value> = groups(sandbox_versions)
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = kinds_in(g)
                        .map(|k| {
                            let gvk = json!({"group": g, "version": v, "kind": k.kind});
                            let mut subs = Vec::new();
                            if k.status {
                                subs.push(json!({"subresource": "status", "responseKind": gvk, "verbs": ["get", "patch", "update"]}));
                            }
                            if k.plural == "pods" {
                                subs.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "", "kind": ""}, "verbs": ["get"]}));
                            }
                            json!({
                                "resource": k.plural, "responseKind": gvk,
                                "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": k.singular, "verbs": k.verbs,
                                "shortNames": k.short_names, "subresources": subs,
                            })
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
