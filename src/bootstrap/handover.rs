//! What a warm sandbox is handed when a session claims it: the session's harness password, its
//! gateway key and its environment. The runtime writes it into the sandbox's hand-over folder
//! (locally the sandbox's own folder; on Kubernetes a memory-backed volume, through
//! `pods/exec`), never into a pod spec or any other stored object; the bootstrap takes it and
//! removes it, which tells the runtime it was taken.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The hand-over, while it waits to be taken.
pub const CLAIM_FILE: &str = "claim.json";
/// The session's environment as a shell script (`export NAME='value'` lines), sourced by every
/// command the agent runs (`BASH_ENV`).
pub const ENV_FILE: &str = "session.env";
/// The claim the sandbox took, kept (readable by its owner only) so that the harness started
/// again in the same sandbox is the same session's at once.
pub const SAVED_FILE: &str = "claim.saved";

/// A session's claim on a warm sandbox.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub session: Uuid,
    /// The password the session's harness calls come with.
    pub password: String,
    /// The key the agent's model calls go to the gateway with; the sandbox's own when absent.
    #[serde(default)]
    pub gateway_key: Option<String>,
    /// The session's environment for the agent's commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.keys().map(String::as_str).collect();
        f.debug_struct("Claim")
            .field("session", &self.session)
            .field("password", &"<redacted>")
            .field(
                "gateway_key",
                &self.gateway_key.as_ref().map(|_| "<redacted>"),
            )
            .field("env", &names)
            .finish()
    }
}

impl Claim {
    /// The claim as its file holds it.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Writes `bytes` as the hand-over in `dir`, readable by its owner only, all at once (a
/// temporary file renamed): the bootstrap never reads half of it.
pub fn put(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{CLAIM_FILE}.{}", std::process::id()));
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(CLAIM_FILE))
}

/// The hand-over waiting in `dir`, if any. It stays until [`taken`] says it was taken (once
/// the sandbox is open to its session); an unreadable one is removed at once.
pub fn read(dir: &Path) -> std::io::Result<Option<Claim>> {
    let path = dir.join(CLAIM_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        let _ = std::fs::remove_file(&path);
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    })
}

/// Keeps the claim taken.
pub fn save(dir: &Path, claim: &Claim) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{SAVED_FILE}.tmp"));
    write_private(&tmp, &claim.to_bytes())?;
    std::fs::rename(&tmp, dir.join(SAVED_FILE))
}

/// The claim this sandbox took before, if any.
pub fn saved(dir: &Path) -> std::io::Result<Option<Claim>> {
    match std::fs::read(dir.join(SAVED_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Says the hand-over in `dir` was taken: whoever put it stops waiting.
pub fn taken(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(CLAIM_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether a hand-over still waits in `dir` (not taken yet).
pub fn waiting(dir: &Path) -> bool {
    dir.join(CLAIM_FILE).exists()
}

/// Writes the session's environment as the script every agent command sources; its path.
pub fn put_env(dir: &Path, env: &BTreeMap<String, String>) -> std::io::Result<PathBuf> {
    let path = dir.join(ENV_FILE);
    let tmp = dir.join(format!(".{ENV_FILE}.tmp"));
    write_private(&tmp, env_script(env).as_bytes())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// `export NAME='value'` for each variable whose name a shell takes; values quoted so that
/// nothing in them is run.
pub fn env_script(env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (name, value) in env {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            continue;
        }
        out.push_str("export ");
        out.push_str(name);
        out.push_str("='");
        out.push_str(&value.replace('\'', r"'\''"));
        out.push_str("'\n");
    }
    out
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            session: Uuid::nil(),
            password: "pw-secret".into(),
            gateway_key: Some("sk-secret".into()),
            env: BTreeMap::from([
                ("TOKEN".to_string(), "it's $(rm -rf /) `x`".to_string()),
                ("BAD NAME".to_string(), "x".to_string()),
                ("1X".to_string(), "x".to_string()),
            ]),
        }
    }

    #[test]
    fn a_claim_waits_privately_until_it_is_said_taken() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        put(dir.path(), &claim().to_bytes()).unwrap();
        assert!(waiting(dir.path()));
        let mode = std::fs::metadata(dir.path().join(CLAIM_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Read, it still waits until it is said taken.
        assert_eq!(read(dir.path()).unwrap(), Some(claim()));
        assert!(waiting(dir.path()));
        taken(dir.path()).unwrap();
        assert!(!waiting(dir.path()));
        assert_eq!(read(dir.path()).unwrap(), None);
        // Garbage is an error, and is not left to be read again.
        put(dir.path(), b"{not json").unwrap();
        assert!(read(dir.path()).is_err());
        assert!(!waiting(dir.path()));
    }

    #[test]
    fn a_claim_never_shows_its_secrets() {
        let shown = format!("{:?}", claim());
        assert!(
            !shown.contains("pw-secret") && !shown.contains("sk-secret"),
            "{shown}"
        );
        assert!(!shown.contains("rm -rf"), "{shown}");
    }

    #[test]
    fn the_env_script_gives_values_as_written_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = put_env(dir.path(), &claim().env).unwrap();
        let script = std::fs::read_to_string(&path).unwrap();
        assert!(
            !script.contains("BAD NAME") && !script.contains("1X"),
            "{script}"
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(". '{}' && printf %s \"$TOKEN\"", path.display()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $(rm -rf /) `x`");
    }
}
