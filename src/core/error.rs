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
    /// No session matches what was given for its id (a short id, a part of one).
    #[error("{0}")]
    NoSuchSession(String),
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
    /// The sandbox runtime (the cluster, local processes) failed or did not answer. (Its text
    /// is in this one's, so it is not also given as the source: `{:#}` says it once.)
    #[error("sandbox runtime: {0}")]
    Runtime(RuntimeError),
    /// The agent's harness in the sandbox failed or did not answer (said once, as above).
    #[error("agent harness: {0}")]
    Harness(HarnessError),
    /// What `serve` said, for a cockpit or command that is its client (its own words, which
    /// name what went wrong), or that it could not be reached.
    #[error("{0}")]
    Server(String),
}

impl From<RuntimeError> for CoreError {
    fn from(err: RuntimeError) -> Self {
        CoreError::Runtime(err)
    }
}

impl From<HarnessError> for CoreError {
    fn from(err: HarnessError) -> Self {
        CoreError::Harness(err)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CLI prints (`{:#}`, the whole chain) says each thing once: the harness's
    /// reason was printed twice, once as this error's text and again as its source.
    #[test]
    fn an_error_is_said_once() {
        let reason = "the sandbox has no endpoint";
        let errors = [
            anyhow::Error::from(CoreError::Harness(HarnessError::Unreachable {
                endpoint: "session x".into(),
                reason: reason.into(),
            })),
            anyhow::Error::from(CoreError::Runtime(RuntimeError::Unavailable(reason.into()))),
        ];
        for err in errors {
            let text = format!("{err:#}");
            assert_eq!(text.matches(reason).count(), 1, "{text}");
        }
    }
}
