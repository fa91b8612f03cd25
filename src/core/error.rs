//! What can go wrong when a front end asks the core for something.

use crate::harness::HarnessError;
use crate::model::env::EnvError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown agent {id:?}; known agents: {known}")]
    UnknownAgent { id: String, known: String },
    #[error("session {0} not found")]
    SessionNotFound(Uuid),
    #[error("session {session} has no ask {id:?}")]
    AskNotFound { session: Uuid, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(StoreError),
    /// The sandbox runtime (the cluster, local processes) failed or did not answer.
    #[error("sandbox runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// The agent's harness in the sandbox failed or did not answer.
    #[error("agent harness: {0}")]
    Harness(#[from] HarnessError),
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(msg) => CoreError::Conflict(msg),
            other => CoreError::Store(other),
        }
    }
}

impl CoreError {
    /// A runtime or harness error: what was asked of does not exist (the sandbox is gone).
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            CoreError::Runtime(RuntimeError::NotFound(_))
                | CoreError::Harness(HarnessError::UnknownSession(_))
        )
    }

    /// A runtime or harness error: it is not there or not answering now (worth trying again
    /// later), rather than answering with a failure.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CoreError::Runtime(RuntimeError::Unavailable(_) | RuntimeError::Transient(_))
                | CoreError::Harness(HarnessError::Unreachable { .. })
        )
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
