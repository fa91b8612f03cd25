//! The raw per-session event log: everything the harness, the sandbox and the core said about a
//! session, in order, so it can be replayed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub session_id: Uuid,
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// Dotted name of what happened: `session.phase`, `harness.message.updated`, …
    pub kind: String,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        NewEvent {
            kind: kind.into(),
            payload,
        }
    }
}
