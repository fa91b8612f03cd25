//! What the watches keep of each object: only the fields a sandbox's health and endpoint are
//! read from (`health::derive`, `Version::wants_running`, the endpoint function). A Pod as the
//! API server sends it carries its whole spec, managed fields and annotations (several KiB);
//! kept whole for a thousand sandboxes, with their Sandboxes and Events, that was most of the
//! cockpit's memory.

use super::names;
use super::watch::Object;
use k8s_openapi::api::core::v1::{
    ContainerStatus, Event, ObjectReference, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde_json::{Value, json};

/// Longest message kept of a condition or an event (a pathological one can be huge).
const MESSAGE_MAX: usize = 2048;

fn short(text: Option<String>) -> Option<String> {
    text.map(|mut t| {
        if t.len() > MESSAGE_MAX {
            let mut end = MESSAGE_MAX;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
            t.push('…');
        }
        t
    })
}

/// The labels agentdeck reads: its own (session, agent, pool …) and how agent-sandbox launched
/// a Sandbox.
fn kept_labels(
    labels: Option<std::collections::BTreeMap<String, String>>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let kept: std::collections::BTreeMap<String, String> = labels?
        .into_iter()
        .filter(|(k, _)| k.starts_with("agentdeck.dev/") || k == names::LABEL_LAUNCH_TYPE)
        .collect();
    (!kept.is_empty()).then_some(kept)
}

fn meta(m: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        labels: kept_labels(m.labels),
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        ..Default::default()
    }
}

/// A Sandbox: its name, the spec fields that say whether it should run, and its status's
/// conditions and service name.
pub(super) fn sandbox(o: DynamicObject) -> Object {
    let data = o.data;
    let conditions: Vec<Value> = data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "type": c["type"],
                "status": c["status"],
                "reason": c["reason"],
                "message": short(c["message"].as_str().map(str::to_string)),
            })
        })
        .collect();
    Object::Sandbox(json!({
        "metadata": {
            "name": o.metadata.name,
            "namespace": o.metadata.namespace,
            "labels": kept_labels(o.metadata.labels),
        },
        "spec": {
            "replicas": data["spec"]["replicas"],
            "operatingMode": data["spec"]["operatingMode"],
        },
        "status": {
            "conditions": conditions,
            "serviceFQDN": data["status"]["serviceFQDN"],
        },
    }))
}

/// A Pod: its identity, node, phase, IP, conditions and its containers' states.
pub(super) fn pod(p: Pod) -> Object {
    let status = p.status.map(|s| PodStatus {
        phase: s.phase,
        reason: s.reason,
        message: short(s.message),
        pod_ip: s.pod_ip,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: short(c.message),
                    ..Default::default()
                })
                .collect()
        }),
        container_statuses: s.container_statuses.map(|cs| {
            cs.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    ready: c.ready,
                    started: c.started,
                    restart_count: c.restart_count,
                    state: c.state,
                    last_state: c.last_state,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
    Object::Pod(Box::new(Pod {
        metadata: meta(p.metadata),
        spec: p.spec.map(|s| PodSpec {
            node_name: s.node_name,
            ..Default::default()
        }),
        status,
    }))
}

/// An Event: what it is about, when, and what it says.
pub(super) fn event(e: Event) -> Object {
    Object::Event(Box::new(Event {
        metadata: meta(e.metadata),
        involved_object: ObjectReference {
            name: e.involved_object.name,
            ..Default::default()
        },
        reason: e.reason,
        message: short(e.message),
        type_: e.type_,
        last_timestamp: e.last_timestamp,
        event_time: e.event_time,
        first_timestamp: e.first_timestamp,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::HealthPhase;
    use crate::runtime::kubernetes::health;
    use crate::runtime::kubernetes::template::Version;
    use kube::ResourceExt;

    fn full_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "ad-x", "namespace": "agentdeck", "uid": "u1",
                "labels": {"app": "x", "agentdeck.dev/pool": "ad-pool-coder"},
                "annotations": {"big": "x".repeat(5000)},
                "managedFields": [{"manager": "kubelet", "operation": "Update",
                    "fieldsV1": {"f:status": {"f:phase": {}}}}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "agent", "image": "img",
                "command": ["opencode", "serve"], "env": [{"name": "A", "value": "1"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 2,
                    "image": "img", "imageID": "sha", "started": true,
                    "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }))
        .expect("a pod")
    }

    #[test]
    fn a_trimmed_pod_reads_as_the_whole_one_and_is_much_smaller() {
        let whole = full_pod();
        let Object::Pod(trimmed) = pod(whole.clone()) else {
            panic!("a pod stays a pod");
        };
        let (a, b) = (
            health::derive(
                Version::V1beta1,
                Some(&json!({})),
                Some(&whole),
                &[],
                None,
                None,
            ),
            health::derive(
                Version::V1beta1,
                Some(&json!({})),
                Some(&trimmed),
                &[],
                None,
                None,
            ),
        );
        assert_eq!(a.phase, HealthPhase::Ready);
        assert_eq!(
            (
                a.phase,
                a.restarts,
                &a.last_termination,
                &a.node,
                &a.conditions
            ),
            (
                b.phase,
                b.restarts,
                &b.last_termination,
                &b.node,
                &b.conditions
            )
        );
        assert_eq!(
            trimmed.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
            Some("10.0.0.7")
        );
        assert_eq!(
            trimmed
                .labels()
                .get("agentdeck.dev/pool")
                .map(String::as_str),
            Some("ad-pool-coder")
        );
        assert!(!trimmed.labels().contains_key("app"));
        let size = |p: &Pod| serde_json::to_string(p).map(|s| s.len()).unwrap_or(0);
        assert!(
            size(&trimmed) * 10 < size(&whole),
            "{} vs {}",
            size(&trimmed),
            size(&whole)
        );
    }

    #[test]
    fn a_trimmed_sandbox_keeps_what_says_it_should_run_and_its_conditions() {
        let whole: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": "ad-x", "namespace": "agentdeck",
                "labels": {"agentdeck.dev/session": "s1", "agents.x-k8s.io/launch-type": "warm",
                    "agents.x-k8s.io/claim-uid": "u"},
                "managedFields": [{"manager": "agentdeck"}]},
            "spec": {"operatingMode": "Stopped", "podTemplate": {"spec": {"containers": [{"name": "agent"}]}}},
            "status": {"serviceFQDN": "ad-x.agentdeck.svc.cluster.local",
                "conditions": [{"type": "Ready", "status": "False", "reason": "Stopped", "message": "m"}]}
        }))
        .expect("a sandbox");
        let Object::Sandbox(kept) = sandbox(whole) else {
            panic!("a sandbox stays a sandbox");
        };
        assert!(!Version::V1beta1.wants_running(&kept));
        assert_eq!(
            kept["status"]["serviceFQDN"],
            "ad-x.agentdeck.svc.cluster.local"
        );
        assert_eq!(kept["status"]["conditions"][0]["reason"], "Stopped");
        assert!(kept["spec"].get("podTemplate").is_none());
        assert!(kept["metadata"].get("managedFields").is_none());
        assert_eq!(
            kept["metadata"]["labels"],
            json!({"agentdeck.dev/session": "s1", "agents.x-k8s.io/launch-type": "warm"})
        );
    }

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        let cut = short(Some("é".repeat(3000))).unwrap_or_default();
        assert!(cut.len() <= MESSAGE_MAX + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
