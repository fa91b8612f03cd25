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
/// On a warm pool's objects and pods: the pool.
pub const LABEL_POOL: &str = "agentdeck.dev/pool";
/// On a warm pool's objects and pods: what its sandboxes are made from (see `WarmPool`).
pub const LABEL_FINGERPRINT: &str = "agentdeck.dev/fingerprint";
/// agent-sandbox's label on a Sandbox a claim made (`cold`) or took from a pool (`warm`).
pub const LABEL_LAUNCH_TYPE: &str = "agents.x-k8s.io/launch-type";

/// agent-sandbox's extensions: templates, warm pools and claims.
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
pub const EXTENSIONS_VERSION: &str = "v1beta1";

/// Where a warm sandbox's bootstrap takes its claim: a memory-backed volume of the pod.
pub const HANDOVER_DIR: &str = "/run/agentdeck";
/// Where the pool's Secret (its env and the harness's files) is mounted in a warm sandbox.
pub const POOL_FILES_DIR: &str = "/agentdeck/pool";
/// Where an init container puts the agentdeck binary in a warm sandbox.
pub const BIN_DIR: &str = "/agentdeck/bin";

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

/// The warm pool of an agent (also its SandboxTemplate's and, with `-env`, its Secret's name):
/// short enough that the pool's Sandboxes (`<pool>-xxxxx`) and their Services are valid names.
pub fn pool_name(agent: &str) -> String {
    let mut dns = String::new();
    for c in agent.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (dns.is_empty() || dns.ends_with('-'))) && dns.len() < 32 {
            dns.push(c);
        }
    }
    while dns.ends_with('-') {
        dns.pop();
    }
    if dns == agent && !dns.is_empty() {
        return format!("ad-pool-{dns}");
    }
    // Written differently from the agent's id: a hash keeps two such ids apart.
    let mut hash: u32 = 2166136261;
    for b in agent.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(16777619);
    }
    let hash = format!("{:06x}", hash & 0xff_ffff);
    if dns.is_empty() {
        format!("ad-pool-{hash}")
    } else {
        format!("ad-pool-{dns}-{hash}")
    }
}

/// A session's SandboxClaim. Not its cold Sandbox's name: a claim the controller can only
/// meet with a new Sandbox names it after itself, and agentdeck gives such a claim up (that
/// Sandbox goes with it) and makes the session's own.
pub fn claim_name(session: Uuid) -> String {
    format!("{CLAIM_PREFIX}{session}")
}

const CLAIM_PREFIX: &str = "ad-claim-";

/// Whether a name is a session's SandboxClaim's (see [`claim_name`]).
pub fn is_claim_name(name: &str) -> bool {
    name.strip_prefix(CLAIM_PREFIX)
        .is_some_and(|s| Uuid::parse_str(s).is_ok())
}

/// The session a sandbox name belongs to (a Sandbox made for it cold; one taken from a warm
/// pool is known by its label, [`LABEL_SESSION`]).
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
        assert_eq!(session_of(&claim_name(id)), None);
        assert!(claim_name(id).len() <= 63);
        assert_eq!(
            split_ref(&sandbox_ref("ns", &name)),
            Some(("ns", name.as_str()))
        );
        assert_eq!(label_value("Platform Team!"), "Platform_Team");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn pool_names_are_valid_and_kept_apart() {
        assert_eq!(pool_name("coder"), "ad-pool-coder");
        let odd = pool_name("Coder_2");
        assert!(odd.starts_with("ad-pool-coder-2-"), "{odd}");
        assert_ne!(pool_name("Coder_2"), pool_name("coder-2"));
        for agent in ["x", "Ünï códe", &"a".repeat(80), "--", "a.b"] {
            let name = pool_name(agent);
            // The pool's Sandboxes are `<pool>-` and five more characters, and a Service's
            // name is a DNS-1035 label of at most 63.
            assert!(name.len() + 6 <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
            assert!(name.starts_with("ad-"), "{name}");
        }
    }
}
