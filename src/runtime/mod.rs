//! Sandboxes: one isolated place per session where its agent runs.
//!
//! The [`SandboxRuntime`] trait is what the core drives; its implementations (Kubernetes through
//! agent-sandbox, and local processes) live in their own modules. [`env`] holds the rule for
//! what environment a sandbox gets.

pub mod kubernetes;
pub mod local;
mod pty;
mod shell;
pub mod warm;

pub use shell::{AttachedShell, Shell, ShellExit, ShellInput, ShellOptions, ShellOutput};
pub use warm::{PoolHealth, WarmPool};

use crate::config::AgentSpec;
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// opencode's switches that every sandbox's harness gets, on every runtime: nothing fetched or
/// installed at start or on a first prompt (updates, the models.dev catalogue, language
/// servers, its default auth plugins: the model is the gateway's, and a sandbox's egress may
/// be closed, where each would wait for its timeout), and nothing shared.
pub const OPENCODE_SWITCHES: &[(&str, &str)] = &[
    ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
    ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
    ("OPENCODE_DISABLE_SHARE", "1"),
    ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
    ("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1"),
];

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
    /// The sandbox's whole environment, already resolved by [`crate::model::env::sandbox_env`]. Secret
    /// values may be among them: a runtime never logs them and (on Kubernetes) passes them by
    /// reference only.
    pub env: BTreeMap<String, String>,
    /// Files to place in the sandbox's working folder before the agent starts (relative path →
    /// content), such as the harness's own configuration.
    pub files: BTreeMap<String, String>,
}

// The sandbox's vocabulary (its handle, health, log options) is the model's, shared with the
// core and the front ends; the runtimes speak it.
pub use crate::model::{
    Condition, HealthChange, HealthPhase, LogOptions, SandboxEvent, SandboxHealth, SandboxRef,
    ShellSpec,
};

/// A sandbox's log, line by line.
pub type LogStream = BoxStream<'static, Result<String, RuntimeError>>;

/// A sandbox that exists, as the runtime lists them (for reconciling against sessions).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSandbox {
    pub sandbox: SandboxRef,
    pub session_id: Option<Uuid>,
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
    /// The Kubernetes context in use, when there is one (`in-cluster` inside a cluster).
    fn context(&self) -> Option<String> {
        None
    }
    /// Whether what runs the sandboxes answers now (the cluster's API server); cheap, for the
    /// cockpit's status line. A local runtime always does.
    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Creates the session's sandbox, or finds the one already created for it (idempotent).
    async fn provision(&self, spec: &SandboxSpec) -> Result<SandboxRef, RuntimeError>;
    /// The sandbox's health with a way to reach its harness (`endpoint`, once it is ready):
    /// for those who talk to the harness. On Kubernetes from outside the cluster this opens a
    /// port-forward to the pod.
    async fn health(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError>;
    /// The sandbox's health as seen, opening nothing (no port-forward; `endpoint` only when it
    /// costs nothing): for views, diagnosis and the reconciler, which read it for a whole
    /// fleet.
    async fn observe(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        self.health(sandbox).await
    }
    /// Health changes of every sandbox of this runtime as they happen (from watches and
    /// process events, not polling). A receiver that lags should re-read with `health`.
    fn watch(&self) -> tokio::sync::broadcast::Receiver<HealthChange>;
    /// Every sandbox this runtime manages that exists now.
    async fn list(&self) -> Result<Vec<ListedSandbox>, RuntimeError>;
    /// The sandbox's log (the agent's stdout and stderr).
    async fn logs(
        &self,
        sandbox: &SandboxRef,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError>;
    async fn restart(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    async fn suspend(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    async fn resume(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    /// Removes the sandbox and everything it owns; a sandbox already gone is not an error.
    async fn destroy(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError>;
    /// What `agentdeck doctor` reports about this runtime.
    async fn check(&self) -> Vec<Check>;
    /// Whether this runtime keeps warm pools (the others start every sandbox for its session).
    fn keeps_warm_pools(&self) -> bool {
        false
    }
    /// Keeps the agents' warm pools as `pools` say (a pool absent keeps nothing): starts what
    /// is missing, replaces what is stale or failed, removes what is too many.
    async fn keep_warm(&self, _pools: &[WarmPool]) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// A warm sandbox of `pool` for the session `claim` names, handed the claim and having
    /// taken it; `None` when the pool has none ready (the session starts cold).
    async fn claim_warm(
        &self,
        _pool: &WarmPool,
        _team: &str,
        _claim: &crate::bootstrap::handover::Claim,
    ) -> Result<Option<SandboxRef>, RuntimeError> {
        Ok(None)
    }
    /// Hands `claim` again to the session's sandbox when it was taken from a warm pool and
    /// its bootstrap was started afresh (a new pod after a restart or a resume); false when
    /// the sandbox needs none (made cold, or it keeps its claim itself).
    async fn reclaim(
        &self,
        _sandbox: &SandboxRef,
        _claim: &crate::bootstrap::handover::Claim,
    ) -> Result<bool, RuntimeError> {
        Ok(false)
    }
    /// How the warm pools are doing.
    async fn pool_health(&self) -> Vec<PoolHealth> {
        Vec::new()
    }
    /// An interactive shell in the sandbox for an operator's terminal.
    async fn shell(
        &self,
        _sandbox: &SandboxRef,
        _options: &ShellOptions,
    ) -> Result<Shell, RuntimeError> {
        Err(RuntimeError::Unavailable(format!(
            "a shell in a {} sandbox is not supported yet",
            self.kind()
        )))
    }
}

/// The runtime of a configured kind that cannot be used (no cluster configuration, say).
/// Every call fails with the reason, which an operator reads on the session; listing sessions
/// and everything else that needs no sandbox keeps working.
/// What keeps `agent` from running on the `kind` runtime, from its configuration alone (the
/// runtime refuses it the same way when asked to provision it): why, and the fix.
pub fn agent_unfit(
    kind: crate::config::RuntimeKind,
    agent: &crate::config::AgentSpec,
) -> Option<(String, String)> {
    match kind {
        crate::config::RuntimeKind::Kubernetes => {
            kubernetes::template::image_of(agent).err().map(|e| {
                (
                    e.to_string(),
                    format!("set image = \"…\" under [agents.{}]", agent.id),
                )
            })
        }
        crate::config::RuntimeKind::Local => agent.command.is_empty().then(|| {
            (
                "the agent has no command to run locally".to_string(),
                format!("set command = [...] under [agents.{}]", agent.id),
            )
        }),
    }
}

pub struct Unavailable {
    pub kind: &'static str,
    pub reason: String,
    pub fix: Option<String>,
    pub changes: tokio::sync::broadcast::Sender<HealthChange>,
}

impl Unavailable {
    pub fn new(kind: &'static str, reason: impl Into<String>, fix: Option<String>) -> Self {
        Unavailable {
            kind,
            reason: reason.into(),
            fix,
            changes: tokio::sync::broadcast::channel(1).0,
        }
    }

    fn error(&self) -> RuntimeError {
        RuntimeError::Unavailable(format!(
            "the {} runtime is unavailable: {}",
            self.kind, self.reason
        ))
    }
}

#[async_trait]
impl SandboxRuntime for Unavailable {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        Err(self.error())
    }
    async fn provision(&self, _: &SandboxSpec) -> Result<SandboxRef, RuntimeError> {
        Err(self.error())
    }
    async fn health(&self, _: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        Err(self.error())
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<HealthChange> {
        self.changes.subscribe()
    }
    async fn list(&self) -> Result<Vec<ListedSandbox>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn logs(&self, _: &SandboxRef, _: LogOptions) -> Result<LogStream, RuntimeError> {
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
            detail: self.reason.clone(),
            fix: self.fix.clone(),
        }]
    }
}
