//! What a sandbox is like, in one vocabulary for every runtime and every front end: its handle,
//! its health (phase, reason, restarts, conditions, recent events), a change of it, and what
//! part of its log to read. The runtimes produce these; the core and the cockpit read them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// A runtime's handle on a sandbox, stored on the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRef {
    pub runtime: String,
    pub name: String,
}

/// How a sandbox is doing, in one model for every runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthPhase {
    Pending,
    Scheduling,
    Pulling,
    Starting,
    Running,
    Ready,
    Suspended,
    CrashLooping,
    Failed,
    Gone,
}

impl HealthPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthPhase::Pending => "pending",
            HealthPhase::Scheduling => "scheduling",
            HealthPhase::Pulling => "pulling",
            HealthPhase::Starting => "starting",
            HealthPhase::Running => "running",
            HealthPhase::Ready => "ready",
            HealthPhase::Suspended => "suspended",
            HealthPhase::CrashLooping => "crash-looping",
            HealthPhase::Failed => "failed",
            HealthPhase::Gone => "gone",
        }
    }
    /// Something an operator should look at.
    pub fn is_trouble(self) -> bool {
        matches!(
            self,
            HealthPhase::CrashLooping | HealthPhase::Failed | HealthPhase::Gone
        )
    }
}

/// A condition as Kubernetes reports them (`Ready=False`, reason, message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// Something that happened to a sandbox (a Kubernetes Event, a process exit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxEvent {
    pub at: DateTime<Utc>,
    /// `Normal` or `Warning`.
    pub kind: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxHealth {
    pub phase: HealthPhase,
    /// A human reason: ImagePullBackOff, OOMKilled, "exit code 1" …
    pub reason: Option<String>,
    pub restarts: u32,
    /// Since when it is in this phase.
    pub since: DateTime<Utc>,
    /// Where the harness listens, once it does (`http://host:port`).
    pub endpoint: Option<String>,
    /// The node (Kubernetes) or host (local) it runs on.
    pub node: Option<String>,
    /// Why the last run ended: OOMKilled, Error, "exit code 137" …
    pub last_termination: Option<String>,
    /// When the last run ended, where the runtime knows.
    #[serde(default)]
    pub last_termination_at: Option<DateTime<Utc>>,
    pub conditions: Vec<Condition>,
    /// The most recent events, newest last.
    pub recent_events: Vec<SandboxEvent>,
    /// `warm` for a sandbox claimed from (or waiting in) a warm pool; absent for one started
    /// for its session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
}

impl SandboxHealth {
    pub fn new(phase: HealthPhase) -> Self {
        SandboxHealth {
            phase,
            reason: None,
            restarts: 0,
            since: Utc::now(),
            endpoint: None,
            node: None,
            last_termination: None,
            last_termination_at: None,
            launch: None,
            conditions: Vec::new(),
            recent_events: Vec::new(),
        }
    }
}

/// A change of one sandbox's health, as a runtime's watch reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthChange {
    pub sandbox: SandboxRef,
    /// The session it belongs to, when the runtime knows (labels, its own records).
    pub session_id: Option<Uuid>,
    pub health: SandboxHealth,
}

/// What part of a sandbox's log to read.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last N lines (all when absent).
    pub tail: Option<usize>,
    /// Only lines newer than this.
    pub since: Option<Duration>,
    /// Keep the stream open and send lines as they are written.
    pub follow: bool,
}

/// An interactive shell in a sandbox, to run on an operator's terminal: the program, where it
/// starts and its whole environment (the sandbox's: it may hold secrets, so `Debug` shows only
/// the names).
#[derive(Clone, PartialEq)]
pub struct ShellSpec {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub cwd: std::path::PathBuf,
    pub env: std::collections::BTreeMap<String, std::ffi::OsString>,
}

impl std::fmt::Debug for ShellSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How an agent's warm pool is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolHealth {
    pub agent: String,
    pub want: usize,
    /// Unclaimed sandboxes ready to be claimed.
    pub ready: usize,
    /// Unclaimed sandboxes starting (or warming up).
    pub starting: usize,
    /// Claims served from the pool, and sessions that found it empty, since this process started.
    pub claims: u64,
    pub misses: u64,
    /// How long the last claim took (finding a sandbox, handing it over, until it took it).
    pub last_claim_ms: Option<u64>,
}
