//! What can go wrong when a front end asks the core for something.

use crate::runtime::env::EnvError;
use crate::store::StoreError;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown agent {id:?}; known agents: {known}")]
    UnknownAgent { id: String, known: String },
    #[error("session {0} not found")]
    SessionNotFound(Uuid),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(msg) => CoreError::Conflict(msg),
            other => CoreError::Store(other),
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
