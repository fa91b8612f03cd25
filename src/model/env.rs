//! What environment a sandbox gets, and which names nobody may set.
//!
//! The rule: every `CONTAINER_ENV_X=v` in agentdeck's own environment reaches every sandbox as
//! `X=v`; the agent's configured env comes next, and the session's own env vars win over both.
//! Nothing else of agentdeck's environment (its database URL, the gateway's master key) ever
//! enters a sandbox.

use std::collections::BTreeMap;

pub const PREFIX: &str = "CONTAINER_ENV_";

/// Names the platform sets itself inside a sandbox.
const RESERVED: &[&str] = &[
    "HOME",
    "PATH",
    "USER",
    "SHELL",
    "PWD",
    "HOSTNAME",
    "TMPDIR",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
];
const RESERVED_PREFIXES: &[&str] = &["AGENTDECK_", "OPENCODE_", "XDG_", "KUBERNETES_"];

/// Limits on a session's own env vars.
pub const MAX_SESSION_VARS: usize = 50;
pub const MAX_SESSION_ENV_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("too many env vars: {0} (at most {MAX_SESSION_VARS})")]
    TooMany(usize),
    #[error("env vars too large: {0} bytes of names and values (at most {MAX_SESSION_ENV_BYTES})")]
    TooLarge(usize),
    #[error("invalid env var name {0:?}: use letters, digits and '_', not starting with a digit")]
    BadName(String),
    #[error("env var {0:?} is reserved by agentdeck and cannot be set")]
    Reserved(String),
}

pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a session's own env vars against the limits and the reserved names.
pub fn validate_session_env(env: &BTreeMap<String, String>) -> Result<(), EnvError> {
    if env.len() > MAX_SESSION_VARS {
        return Err(EnvError::TooMany(env.len()));
    }
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_SESSION_ENV_BYTES {
        return Err(EnvError::TooLarge(bytes));
    }
    for name in env.keys() {
        if !valid_name(name) {
            return Err(EnvError::BadName(name.clone()));
        }
        if is_reserved(name) {
            return Err(EnvError::Reserved(name.clone()));
        }
    }
    Ok(())
}

/// The `CONTAINER_ENV_` variables of an environment, prefix stripped. Reserved or malformed
/// names are skipped with a warning (by name only, never the value).
pub fn from_prefixed(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in vars {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if !valid_name(name) || is_reserved(name) {
            tracing::warn!(variable = %key, "ignoring CONTAINER_ENV_ variable with a reserved or invalid name");
            continue;
        }
        out.insert(name.to_string(), value);
    }
    out
}

/// A sandbox's environment: `CONTAINER_ENV_*` < the agent's env < the session's env.
pub fn sandbox_env(
    prefixed: &BTreeMap<String, String>,
    agent: &BTreeMap<String, String>,
    session: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = prefixed.clone();
    env.extend(agent.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(session.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn prefix_is_stripped_and_others_are_dropped() {
        let env = from_prefixed(
            [
                ("CONTAINER_ENV_GITHUB_TOKEN", "t"),
                ("DATABASE_URL", "secret"),
                ("CONTAINER_ENV_HOME", "/evil"),
                ("CONTAINER_ENV_", "empty"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert_eq!(env, map(&[("GITHUB_TOKEN", "t")]));
    }

    #[test]
    fn session_env_wins() {
        let env = sandbox_env(
            &map(&[("A", "prefixed"), ("B", "prefixed")]),
            &map(&[("B", "agent"), ("C", "agent")]),
            &map(&[("C", "session")]),
        );
        assert_eq!(
            env,
            map(&[("A", "prefixed"), ("B", "agent"), ("C", "session")])
        );
    }

    #[test]
    fn limits_and_reserved_names() {
        assert_eq!(
            validate_session_env(&map(&[("PATH", "/x")])),
            Err(EnvError::Reserved("PATH".into()))
        );
        assert_eq!(
            validate_session_env(&map(&[("AGENTDECK_X", "1")])),
            Err(EnvError::Reserved("AGENTDECK_X".into()))
        );
        assert_eq!(
            validate_session_env(&map(&[("1X", "1")])),
            Err(EnvError::BadName("1X".into()))
        );
        let many: BTreeMap<String, String> = (0..51)
            .map(|i| (format!("V{i}"), "x".to_string()))
            .collect();
        assert_eq!(validate_session_env(&many), Err(EnvError::TooMany(51)));
        let big = map(&[("BIG", &"x".repeat(17 * 1024))]);
        assert!(matches!(
            validate_session_env(&big),
            Err(EnvError::TooLarge(_))
        ));
        assert_eq!(validate_session_env(&map(&[("GITHUB_TOKEN", "x")])), Ok(()));
    }
}
