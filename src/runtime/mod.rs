//! Sandboxes: one isolated place per session where its agent runs.
//!
//! The [`SandboxRuntime`] trait is what the core drives; its implementations (Kubernetes through
//! agent-sandbox, and local processes) live in their own modules. [`env`] holds the rule for
//! what environment a sandbox gets.

pub mod env;

use crate::config::AgentSpec;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot do this at all (not configured, not built, not allowed): retrying
    /// will not help.
    #[error("{0}")]
    Unavailable(String),
    /// The sandbox does not exist (any more).
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// Something that may pass: a network error, a busy API server.
    #[error("{0}")]
    Transient(String),
    /// The sandbox could not be made to work: a missing command, a bad image.
    #[error("{0}")]
    Failed(String),
}

impl RuntimeError {
    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Transient(_))
    }
}

/// Everything a runtime needs to create a session's sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub session_id: Uuid,
    pub team: String,
    pub agent: AgentSpec,
    /// The sandbox's whole environment, already resolved by [`env::sandbox_env`].
    pub env: BTreeMap<String, String>,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxHealth {
    pub phase: HealthPhase,
    /// A human reason: ImagePullBackOff, OOMKilled, "exit code 1" …
    pub reason: Option<String>,
    pub restarts: u32,
    pub since: DateTime<Utc>,
    /// Where the harness listens, once it does.
    pub endpoint: Option<String>,
    pub recent_events: Vec<String>,
}

/// One line of `agentdeck doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do when it is not ok.
    pub fix: Option<String>,
}

#[async_trait]
pub trait SandboxRuntime: Send + Sync + 'static {
    /// `local` or `kubernetes`, as stored on the session.
    fn kind(&self) -> &'static str;
    /// Creates the session's sandbox, or finds the one already created for it (idempotent).
    async fn provision(&self, spec: &SandboxSpec) -> Result<SandboxRef, RuntimeError>;
    async fn health(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError>;
    async fn restart(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    async fn suspend(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    async fn resume(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    /// Removes the sandbox and everything it owns; a sandbox already gone is not an error.
    async fn destroy(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    /// What `agentdeck doctor` reports about this runtime.
    async fn check(&self) -> Vec<Check>;
}

/// The runtime for a configured kind that this build cannot drive yet. Every call fails with a
/// reason an operator can read on the session; nothing pretends to work.
pub struct NotBuilt {
    pub kind: &'static str,
}

impl NotBuilt {
    fn error(&self) -> RuntimeError {
        RuntimeError::Unavailable(format!(
            "the {} sandbox runtime is not available in this build of agentdeck yet",
            self.kind
        ))
    }
}

#[async_trait]
impl SandboxRuntime for NotBuilt {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn provision(&self, _: &SandboxSpec) -> Result<SandboxRef, RuntimeError> {
        Err(self.error())
    }
    async fn health(&self, _: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        Err(self.error())
    }
    async fn restart(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Err(self.error())
    }
    async fn suspend(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Err(self.error())
    }
    async fn resume(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Err(self.error())
    }
    async fn destroy(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn check(&self) -> Vec<Check> {
        vec![Check {
            name: format!("{} runtime", self.kind),
            ok: false,
            detail: self.error().to_string(),
            fix: None,
        }]
    }
}
