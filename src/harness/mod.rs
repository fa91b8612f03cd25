//! The agent inside a sandbox: the harness (opencode's server API) that the core talks to.
//!
//! The core drives it through the [`Harness`] trait: open a conversation, send a prompt, abort,
//! read the whole conversation, and follow the harness's event bus, decoded into [`Update`]s
//! that the core turns into stored messages.

pub mod json;
pub mod opencode;
pub mod sse;

use crate::config::AgentSpec;
use crate::model::{Answer, AskStatus, MessageRole, NewAsk, Part};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("the harness at {endpoint} is not reachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the harness does not know the session: {0}")]
    UnknownSession(String),
    #[error("the harness refused the request: {0}")]
    Refused(String),
    /// What an answer was for is not waiting in the harness (any more).
    #[error("the agent no longer waits for it: {0}")]
    NotWaiting(String),
}

/// Where a session's harness answers, and the password it was started with (none for a
/// sandbox made before agentdeck set one). The password never shows in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    password: Option<String>,
}

impl Endpoint {
    pub fn new(url: impl Into<String>, password: Option<String>) -> Self {
        Endpoint {
            url: url.into(),
            password,
        }
    }
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What the core sends for one turn.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub text: String,
    /// `provider/model`.
    pub model: String,
    pub system: Option<String>,
    /// Add the text to the conversation without asking for a reply (used to replay history).
    pub no_reply: bool,
}

/// How a sandbox reaches the LLM gateway.
#[derive(Debug, Clone)]
pub struct GatewayAccess {
    /// The gateway's OpenAI-compatible base URL as seen from inside the sandbox.
    pub base_url: String,
    /// The environment variable that holds the sandbox's key.
    pub key_env: String,
    /// What the agent's model costs, when the gateway knows (the harness then prices each
    /// message).
    pub price: Option<crate::model::ModelPrice>,
}

/// A message's state as the harness reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageInfo {
    pub id: String,
    pub role: MessageRole,
    /// The turn (or this step of it) is over.
    pub done: bool,
    pub error: Option<String>,
    /// The turn was stopped by an abort (then `error` says how the harness put it).
    pub aborted: bool,
    /// What an assistant message used and cost, when the harness says.
    pub usage: Option<crate::model::Usage>,
    /// What the turn answering a person's message changed in files, when the harness says.
    pub diffs: Option<Vec<crate::model::FileDiff>>,
}

/// One decoded event of the harness's bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Message(MessageInfo),
    Part {
        message_id: String,
        part_id: String,
        part: Part,
    },
    /// Streamed text appended to a part.
    Delta {
        message_id: String,
        part_id: String,
        field: String,
        delta: String,
    },
    Busy,
    Idle,
    Error(String),
    /// The agent asks a person (a permission, a question) and waits.
    Asked(NewAsk),
    /// An ask was settled in the harness: answered (with the answer it reports) or dropped.
    AskSettled {
        id: String,
        status: AskStatus,
        answer: Option<serde_json::Value>,
    },
    /// Anything else (kept in the raw event log only).
    Other,
}

/// An event with the session it belongs to and its raw form (for the event log).
#[derive(Debug, Clone, PartialEq)]
pub struct HarnessEvent {
    /// The harness's session id, when the event is about one.
    pub session: Option<String>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub update: Update,
}

/// A whole message as the harness keeps it (for catching up after a gap).
#[derive(Debug, Clone, PartialEq)]
pub struct HarnessMessage {
    pub info: MessageInfo,
    /// (the harness's part id, the part)
    pub parts: Vec<(String, Part)>,
}

pub type EventStream = BoxStream<'static, Result<HarnessEvent, HarnessError>>;

#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Whether the harness at `endpoint` answers.
    async fn health(&self, endpoint: &Endpoint) -> Result<(), HarnessError>;
    /// Creates a conversation in the harness; returns its id.
    async fn create_session(
        &self,
        endpoint: &Endpoint,
        title: &str,
    ) -> Result<String, HarnessError>;
    /// Whether the harness still knows a conversation (it may have lost it in a restart).
    async fn has_session(&self, endpoint: &Endpoint, session: &str) -> Result<bool, HarnessError>;
    /// Sends a prompt; returns once the harness accepted it (the reply streams as events).
    async fn send(
        &self,
        endpoint: &Endpoint,
        session: &str,
        prompt: &Prompt,
    ) -> Result<(), HarnessError>;
    /// Stops the running turn.
    async fn abort(&self, endpoint: &Endpoint, session: &str) -> Result<(), HarnessError>;
    /// Deletes a conversation (the bootstrap's warm-up leaves none behind).
    async fn delete_session(
        &self,
        _endpoint: &Endpoint,
        _session: &str,
    ) -> Result<(), HarnessError> {
        Ok(())
    }
    /// The whole conversation as the harness has it.
    async fn messages(
        &self,
        endpoint: &Endpoint,
        session: &str,
    ) -> Result<Vec<HarnessMessage>, HarnessError>;
    /// Everything the harness waits for a person to answer, with the harness session each is
    /// in (after a reconnect: what was asked while nobody listened).
    async fn pending_asks(
        &self,
        _endpoint: &Endpoint,
    ) -> Result<Vec<(String, NewAsk)>, HarnessError> {
        Ok(Vec::new())
    }
    /// Gives the harness a person's answer to ask `id`. `NotWaiting` when it does not wait for
    /// it (any more).
    async fn answer(
        &self,
        _endpoint: &Endpoint,
        id: &str,
        _answer: &Answer,
    ) -> Result<(), HarnessError> {
        Err(HarnessError::NotWaiting(format!(
            "this harness asks nothing, so {id} is not waiting"
        )))
    }
    /// The harness's event bus, decoded; ends when the connection does (reconnect to go on).
    async fn events(&self, endpoint: &Endpoint) -> Result<EventStream, HarnessError>;
    /// The harness's own configuration files for a sandbox of `agent` (relative path →
    /// content). No secret is written in them: keys come from the environment.
    fn sandbox_files(&self, agent: &AgentSpec, gateway: &GatewayAccess)
    -> BTreeMap<String, String>;
    /// The environment that makes the harness in a sandbox ask for `password` on every call.
    fn auth_env(&self, password: &str) -> BTreeMap<String, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_never_shows_its_password() {
        let e = Endpoint::new("http://10.0.0.7:4096", Some("hunter2-secret".into()));
        assert_eq!(e.to_string(), "http://10.0.0.7:4096");
        let debug = format!("{e:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
        assert_eq!(e.password(), Some("hunter2-secret"));
    }
}
