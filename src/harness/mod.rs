//! The agent inside a sandbox: the harness (opencode's server API) that the core talks to.
//!
//! The core drives it through the [`Harness`] trait; the opencode client implements it.

pub mod sse;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("the harness at {endpoint} is not reachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the harness does not know session {0}")]
    UnknownSession(String),
    #[error("the harness refused the request: {0}")]
    Refused(String),
    #[error("no harness is available in this build of agentdeck yet")]
    NotBuilt,
}

#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Whether the harness at `endpoint` answers.
    async fn health(&self, endpoint: &str) -> Result<(), HarnessError>;
    /// Creates a conversation in the harness; returns its id.
    async fn create_session(&self, endpoint: &str, title: &str) -> Result<String, HarnessError>;
    /// Sends a user's text; returns once the harness accepted it (the reply streams later).
    async fn send(&self, endpoint: &str, session: &str, text: &str) -> Result<(), HarnessError>;
    /// Stops the running turn.
    async fn abort(&self, endpoint: &str, session: &str) -> Result<(), HarnessError>;
}

/// The harness for a build that has no harness client yet: every call says so.
pub struct NotBuilt;

#[async_trait]
impl Harness for NotBuilt {
    async fn health(&self, _: &str) -> Result<(), HarnessError> {
        Err(HarnessError::NotBuilt)
    }
    async fn create_session(&self, _: &str, _: &str) -> Result<String, HarnessError> {
        Err(HarnessError::NotBuilt)
    }
    async fn send(&self, _: &str, _: &str, _: &str) -> Result<(), HarnessError> {
        Err(HarnessError::NotBuilt)
    }
    async fn abort(&self, _: &str, _: &str) -> Result<(), HarnessError> {
        Err(HarnessError::NotBuilt)
    }
}
