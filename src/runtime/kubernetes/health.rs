//! A sandbox's health, read off its Sandbox, its Pod and the Events about them: one pure
//! function, so that every reason an operator may see is tested without a cluster.

use super::template::Version;
use crate::runtime::{Condition, HealthPhase, SandboxEvent, SandboxHealth};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use serde_json::Value;

/// How many recent events a health report carries.
const RECENT_EVENTS: usize = 10;

fn chrono_time(t: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.as_millisecond())
}

fn event_time(e: &Event) -> DateTime<Utc> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .and_then(chrono_time)
        .unwrap_or_else(Utc::now)
}

fn container(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|c| c.name == super::names::CONTAINER)
        .or_else(|| statuses.first())
}

fn termination(c: &ContainerStatus) -> Option<String> {
    let t = c.last_state.as_ref()?.terminated.as_ref()?;
    Some(match t.reason.as_deref() {
        Some(reason) => format!("{reason} (exit code {})", t.exit_code),
        None => format!("exit code {}", t.exit_code),
    })
}

fn with_message(reason: &str, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    }
}

/// Phase and reason from a pod.
fn from_pod(pod: &Pod) -> (HealthPhase, Option<String>) {
    if pod.metadata.deletion_timestamp.is_some() {
        return (
            HealthPhase::Pending,
            Some("pod is being replaced".to_string()),
        );
    }
    let Some(status) = &pod.status else {
        return (HealthPhase::Pending, None);
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
    let c = container(pod);
    if let Some(waiting) = c.and_then(|c| c.state.as_ref()?.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or("Waiting");
        let text = Some(with_message(reason, waiting.message.as_deref()));
        return match reason {
            "CrashLoopBackOff" => (HealthPhase::CrashLooping, text),
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => {
                (HealthPhase::Pulling, text)
            }
            "CreateContainerConfigError" | "CreateContainerError" => (HealthPhase::Failed, text),
            _ => (HealthPhase::Starting, text),
        };
    }
    match status.phase.as_deref() {
        Some("Succeeded") | Some("Failed") => {
            let reason = c
                .and_then(|c| c.state.as_ref()?.terminated.as_ref())
                .map(|t| match t.reason.as_deref() {
                    Some(r) => format!("{r} (exit code {})", t.exit_code),
                    None => format!("exit code {}", t.exit_code),
                })
                .or_else(|| status.reason.clone());
            (HealthPhase::Failed, reason)
        }
        Some("Running") => {
            if c.is_some_and(|c| c.ready) || condition("Ready").is_some_and(|r| r.status == "True")
            {
                (HealthPhase::Ready, None)
            } else if c.is_some_and(|c| c.started == Some(false)) {
                (HealthPhase::Starting, None)
            } else {
                (
                    HealthPhase::Running,
                    Some("waiting for the harness to be ready".to_string()),
                )
            }
        }
        _ => match condition("PodScheduled") {
            Some(s) if s.status == "False" => (
                HealthPhase::Scheduling,
                Some(with_message(
                    s.reason.as_deref().unwrap_or("Unschedulable"),
                    s.message.as_deref(),
                )),
            ),
            None => (HealthPhase::Scheduling, None),
            Some(_) => (HealthPhase::Starting, None),
        },
    }
}

/// The health of one sandbox. `previous` keeps `since` when the phase did not change.
pub fn derive(
    version: Version,
    sandbox: Option<&Value>,
    pod: Option<&Pod>,
    events: &[Event],
    endpoint: Option<String>,
    previous: Option<&SandboxHealth>,
) -> SandboxHealth {
    let (phase, reason) = match (sandbox, pod) {
        (None, _) => (
            HealthPhase::Gone,
            Some("the Sandbox no longer exists".to_string()),
        ),
        (Some(s), pod) if !version.wants_running(s) => match pod {
            Some(_) => (HealthPhase::Suspended, Some("stopping the pod".to_string())),
            None => (HealthPhase::Suspended, None),
        },
        (Some(_), None) => (
            HealthPhase::Pending,
            Some("waiting for the agent-sandbox controller to create the pod".to_string()),
        ),
        (Some(_), Some(pod)) => from_pod(pod),
    };
    let mut health = SandboxHealth::new(phase);
    health.reason = reason;
    if let Some(prev) = previous.filter(|p| p.phase == phase) {
        health.since = prev.since;
    }
    if let Some(pod) = pod {
        let c = container(pod);
        health.restarts = c.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0));
        health.last_termination = c.and_then(termination);
        health.last_termination_at = c.and_then(|c| {
            let at = c
                .last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()?;
            chrono_time(at.0)
        });
        health.node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        health.conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| Condition {
                        kind: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    if let Some(s) = sandbox {
        // Taken from a warm pool (agent-sandbox's label; a claim that made one cold says so
        // too, though agentdeck gives such a claim up).
        health.launch = s["metadata"]["labels"][super::names::LABEL_LAUNCH_TYPE]
            .as_str()
            .filter(|t| *t == "warm")
            .map(str::to_string);
        for c in s["status"]["conditions"].as_array().into_iter().flatten() {
            health.conditions.push(Condition {
                kind: format!("Sandbox{}", c["type"].as_str().unwrap_or("")),
                status: c["status"].as_str().unwrap_or("").to_string(),
                reason: c["reason"].as_str().map(str::to_string),
                message: c["message"].as_str().map(str::to_string),
            });
        }
    }
    if phase == HealthPhase::Ready {
        health.endpoint = endpoint;
    }
    let mut recent: Vec<SandboxEvent> = events
        .iter()
        .map(|e| SandboxEvent {
            at: event_time(e),
            kind: e.type_.clone().unwrap_or_else(|| "Normal".to_string()),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    recent.sort_by_key(|e| e.at);
    let skip = recent.len().saturating_sub(RECENT_EVENTS);
    health.recent_events = recent.split_off(skip);
    health
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "ad-x"}, "spec": {"containers": [{"name": "agent"}], "nodeName": "node-1"}, "status": status}))
            .unwrap_or_default()
    }

    fn sandbox() -> Value {
        json!({"spec": {"replicas": 1}})
    }

    fn health(pod: &Pod) -> SandboxHealth {
        derive(
            Version::V1alpha1,
            Some(&sandbox()),
            Some(pod),
            &[],
            Some("http://x:1".into()),
            None,
        )
    }

    #[test]
    fn reasons_from_the_pod() {
        let ready = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 2, "image": "i", "imageID": "",
              "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-12-07T06:00:00Z"}}, "state": {"running": {}}}]}),
        );
        let h = health(&ready);
        assert_eq!(
            h.last_termination_at.map(|t| t.to_rfc3339()),
            Some("2026-12-07T06:00:00+00:00".to_string())
        );
        assert_eq!(h.phase, HealthPhase::Ready);
        assert_eq!(h.endpoint.as_deref(), Some("http://x:1"));
        assert_eq!(h.restarts, 2);
        assert_eq!(
            h.last_termination.as_deref(),
            Some("OOMKilled (exit code 137)")
        );
        assert_eq!(h.node.as_deref(), Some("node-1"));

        let pull = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}),
        );
        let h = health(&pull);
        assert_eq!(h.phase, HealthPhase::Pulling);
        assert_eq!(
            h.reason.as_deref(),
            Some("ImagePullBackOff: Back-off pulling image \"nope\"")
        );
        assert_eq!(h.endpoint, None);

        let crash = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        assert_eq!(health(&crash).phase, HealthPhase::CrashLooping);

        let unschedulable = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        );
        let h = health(&unschedulable);
        assert_eq!(h.phase, HealthPhase::Scheduling);
        assert_eq!(
            h.reason.as_deref(),
            Some("Unschedulable: 0/3 nodes are available")
        );

        let failed = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        let h = health(&failed);
        assert_eq!(
            (h.phase, h.reason.as_deref()),
            (HealthPhase::Failed, Some("Error (exit code 1)"))
        );
    }

    #[test]
    fn sandbox_level_states() {
        let h = derive(Version::V1alpha1, None, None, &[], None, None);
        assert_eq!(h.phase, HealthPhase::Gone);
        let h = derive(
            Version::V1alpha1,
            Some(&json!({"spec": {"replicas": 0}})),
            None,
            &[],
            None,
            None,
        );
        assert_eq!(h.phase, HealthPhase::Suspended);
        let h = derive(
            Version::V1beta1,
            Some(&json!({"spec": {"operatingMode": "Running"}})),
            None,
            &[],
            None,
            None,
        );
        assert_eq!(h.phase, HealthPhase::Pending);
        let earlier = Utc::now() - chrono::Duration::minutes(5);
        let mut prev = h.clone();
        prev.since = earlier;
        let again = derive(
            Version::V1beta1,
            Some(&json!({"spec": {}})),
            None,
            &[],
            None,
            Some(&prev),
        );
        assert_eq!(again.since, earlier, "since is kept while the phase holds");
    }
}
