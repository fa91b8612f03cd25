//! `sandbox.json`: what agentdeck knows about a sandbox, so that a later agentdeck over the same
//! root can find it again (and `launch.json`, so that it can start it again).

use super::launch::LaunchSpec;
use super::workdir::{LAUNCH_FILE, RECORD_FILE, write_atomic};
use crate::runtime::SandboxEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use uuid::Uuid;

/// Whether the agent was last left running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Started and not stopped by agentdeck (it may have exited since).
    Running,
    /// Stopped on purpose; `resume` starts it again.
    Suspended,
    /// It exited on its own; `last_termination` says how.
    Exited,
}

/// The contents of `<workdir>/sandbox.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub session_id: Uuid,
    pub state: RecordState,
    /// The last process started (the leader of its process group).
    pub pid: Option<i32>,
    /// Its start time, field 22 of `/proc/<pid>/stat`, telling it from a later process that
    /// got the same pid.
    pub start_time: Option<u64>,
    /// The loopback port its harness listens on.
    pub port: Option<u16>,
    pub restarts: u32,
    pub last_termination: Option<String>,
    #[serde(default)]
    pub last_termination_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The most recent events, newest last.
    #[serde(default)]
    pub events: Vec<SandboxEvent>,
    /// Set on a warm pool's sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolMember>,
}

/// A warm pool's sandbox: whose pool, made from what, and the session that claimed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolMember {
    pub agent: String,
    pub fingerprint: String,
    #[serde(default)]
    pub claimed_by: Option<Uuid>,
    #[serde(default)]
    pub claimed_at: Option<DateTime<Utc>>,
}

impl SandboxRecord {
    /// Reads a sandbox's record from its working folder.
    pub fn read(workdir: &Path) -> Result<SandboxRecord, String> {
        let path = workdir.join(RECORD_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not usable: {e}", path.display()))
    }

    pub fn write(&self, workdir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&workdir.join(RECORD_FILE), &json, false)
    }
}

pub fn read_launch(workdir: &Path) -> Result<LaunchSpec, String> {
    let path = workdir.join(LAUNCH_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not usable: {e}", path.display()))
}

pub fn write_launch(workdir: &Path, launch: &LaunchSpec) -> std::io::Result<()> {
    let json = serde_json::to_vec(launch).map_err(std::io::Error::other)?;
    write_atomic(&workdir.join(LAUNCH_FILE), &json, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_launch_json_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let record = SandboxRecord {
            session_id: Uuid::new_v4(),
            state: RecordState::Running,
            pid: Some(42),
            start_time: Some(4242),
            port: Some(4096),
            restarts: 2,
            last_termination: Some("exit code 1".into()),
            last_termination_at: Some(Utc::now()),
            updated_at: Utc::now(),
            events: Vec::new(),
            pool: Some(PoolMember {
                agent: "coder".into(),
                fingerprint: "f".into(),
                claimed_by: Some(Uuid::new_v4()),
                claimed_at: Some(Utc::now()),
            }),
        };
        record.write(dir.path()).expect("write");
        assert_eq!(SandboxRecord::read(dir.path()), Ok(record));
        let launch = LaunchSpec {
            agent_id: "a".into(),
            command: vec!["x".into()],
            env: [("TOKEN".to_string(), "secret".to_string())].into(),
        };
        write_launch(dir.path(), &launch).expect("write");
        let mode = std::fs::metadata(dir.path().join(LAUNCH_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_launch(dir.path()).expect("read").env["TOKEN"],
            "secret"
        );
    }
}
