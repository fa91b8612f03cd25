//! Names and labels agentdeck gives to what it creates in a cluster.

use uuid::Uuid;

pub const GROUP: &str = "agents.x-k8s.io";
pub const KIND: &str = "Sandbox";
pub const PLURAL: &str = "sandboxes";

pub const LABEL_MANAGED: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "agentdeck";
pub const LABEL_SESSION: &str = "agentdeck.dev/session";
pub const LABEL_AGENT: &str = "agentdeck.dev/agent";
pub const LABEL_TEAM: &str = "agentdeck.dev/team";

/// The container the agent runs in.
pub const CONTAINER: &str = "agent";
/// Where the sandbox's working folder is inside the pod.
pub const WORKDIR: &str = "/workspace";

/// The Sandbox (and its pod and service) of a session.
pub fn sandbox_name(session: Uuid) -> String {
    format!("ad-{session}")
}

/// The Secret that carries a session's env and files.
pub fn secret_name(sandbox: &str) -> String {
    format!("{sandbox}-env")
}

/// The session a sandbox name belongs to.
pub fn session_of(sandbox: &str) -> Option<Uuid> {
    sandbox
        .strip_prefix("ad-")
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(text: &str) -> String {
    let mut v: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

/// `namespace/name` as stored in a session's sandbox reference.
pub fn sandbox_ref(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Splits a sandbox reference into namespace and name.
pub fn split_ref(reference: &str) -> Option<(&str, &str)> {
    reference
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_labels_are_valid() {
        let id = Uuid::now_v7();
        let name = sandbox_name(id);
        assert!(name.len() <= 63);
        assert_eq!(session_of(&name), Some(id));
        assert_eq!(
            split_ref(&sandbox_ref("ns", &name)),
            Some(("ns", name.as_str()))
        );
        assert_eq!(label_value("Platform Team!"), "Platform_Team");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }
}
