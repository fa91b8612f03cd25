//! Work for the worker: durable, leased, retried with backoff, dead-lettered at the end.

use super::{TaskKind, TaskStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    /// As stored: a [`TaskKind`] when this agentdeck knows it (see [`Task::known_kind`]).
    pub kind: String,
    pub session_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub status: TaskStatus,
    /// How many times it was claimed.
    pub attempts: i32,
    pub max_attempts: i32,
    /// Not to be claimed before this time.
    pub run_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub completed_by: Option<String>,
    pub last_error: Option<String>,
    /// At most one unfinished task per key.
    pub dedupe_key: Option<String>,
    /// The session's command this task carries out ([`super::Session::command_seq`]), for the
    /// tasks of lifecycle commands.
    pub command: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    /// The task's kind, when this agentdeck knows it.
    pub fn known_kind(&self) -> Result<TaskKind, super::ParseEnumError> {
        self.kind.parse()
    }
}

#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: TaskKind,
    pub session_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub dedupe_key: Option<String>,
    /// Set by the store for a command's task (the session's new `command_seq`).
    pub command: Option<i64>,
}

impl NewTask {
    pub fn new(kind: TaskKind, payload: serde_json::Value) -> Self {
        NewTask {
            kind,
            session_id: None,
            payload,
            max_attempts: 5,
            run_at: None,
            dedupe_key: None,
            command: None,
        }
    }
    pub fn for_session(mut self, id: Uuid) -> Self {
        self.session_id = Some(id);
        self
    }
    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub statuses: Option<Vec<TaskStatus>>,
    pub kind: Option<String>,
    pub session_id: Option<Uuid>,
    pub limit: Option<i64>,
}
