//! A session: one conversation with one agent in one sandbox.

use super::{Phase, SessionStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A session as stored. Its per-session environment is kept apart (it may hold secrets) and
/// only the names of its variables travel with the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub agent_id: String,
    pub team: String,
    pub title: String,
    pub status: SessionStatus,
    pub phase: Phase,
    pub phase_detail: Option<String>,
    /// The runtime that owns the sandbox (`local`, `kubernetes`), once provisioned.
    pub runtime: Option<String>,
    /// The runtime's name for the sandbox (a namespace/name, a process id …).
    pub sandbox_ref: Option<String>,
    pub harness_session_id: Option<String>,
    pub failure_reason: Option<String>,
    /// Names of the per-session environment variables (never their values).
    pub env_keys: Vec<String>,
    /// Highest message seq assigned so far (0 when there is none).
    pub last_message_seq: i64,
    /// Highest event seq assigned so far (0 when there is none).
    pub last_event_seq: i64,
    /// How many of the agent's asks (permissions, questions) wait for a person.
    #[serde(default)]
    pub waiting: i32,
    /// The session this one was forked from, if any (it may since have been deleted)…
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// …and the message of the parent's transcript it was forked at.
    #[serde(default)]
    pub fork_seq: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    /// When an idle session will be reaped, if it is idle.
    pub idle_deadline: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// How many lifecycle commands (restart, suspend, resume, end, a re-provision) the session
    /// was given: each one's task acts only while this is still its number, so a task overtaken
    /// by a newer command writes nothing.
    #[serde(default)]
    pub command_seq: i64,
    /// Which of a cockpit's servers holds it, when the cockpit follows several (`[[servers]]`):
    /// set by the client, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// What it takes to create a session row.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub id: Option<Uuid>,
    pub agent_id: String,
    pub team: String,
    pub title: String,
    pub env: BTreeMap<String, String>,
}

/// A new session with everything that must exist with it or not at all: its row, its
/// `session.created` history event, its first message (the initial prompt, if any) and the task
/// that provisions it (for `session.id`, which must then be set).
#[derive(Debug, Clone)]
pub struct SessionCreation {
    pub session: NewSession,
    pub created: super::NewEvent,
    pub first_message: Option<super::NewMessage>,
    pub task: super::NewTask,
    /// For a fork: the parent and the message it is forked at, and the parent's transcript up
    /// to that message, copied (before the first message).
    pub fork: Option<Fork>,
}

/// What a fork starts from.
#[derive(Debug, Clone)]
pub struct Fork {
    pub parent: Uuid,
    pub at_seq: i64,
    pub history: Vec<super::NewMessage>,
}

/// A partial update of a session; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct SessionPatch {
    pub status: Option<SessionStatus>,
    pub phase: Option<Phase>,
    pub phase_detail: Option<Option<String>>,
    pub title: Option<String>,
    pub runtime: Option<Option<String>>,
    pub sandbox_ref: Option<Option<String>>,
    pub harness_session_id: Option<Option<String>>,
    pub failure_reason: Option<Option<String>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub idle_deadline: Option<Option<DateTime<Utc>>>,
    pub stopped_at: Option<Option<DateTime<Utc>>>,
    /// Apply only when the session's status is one of these (a compare-and-set); the update
    /// then fails with a conflict naming the status it found.
    pub only_if_status: Option<Vec<SessionStatus>>,
    /// Apply only when the session's phase is none of these (the same kind of conflict).
    pub unless_phase: Option<Vec<Phase>>,
    /// A new lifecycle command: the session's `command_seq` counts one up.
    pub new_command: bool,
    /// Apply only while the session's `command_seq` is this one (a command's task landing: a
    /// newer command makes it a conflict).
    pub only_if_command: Option<i64>,
}

impl SessionPatch {
    pub fn status(status: SessionStatus, phase: Phase) -> Self {
        SessionPatch {
            status: Some(status),
            phase: Some(phase),
            ..Default::default()
        }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.phase_detail = Some(Some(detail.into()));
        self
    }
    pub fn only_if(mut self, statuses: &[SessionStatus]) -> Self {
        self.only_if_status = Some(statuses.to_vec());
        self
    }
    /// Fenced by the command a task carries out (see [`Session::command_seq`]).
    pub fn for_command(mut self, command: Option<i64>) -> Self {
        self.only_if_command = command;
        self
    }
}

/// Which sessions to list: filters, newest first, paged by id.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub teams: Option<Vec<String>>,
    pub agent_id: Option<String>,
    pub statuses: Option<Vec<SessionStatus>>,
    /// Only the forks of this session.
    pub parent: Option<Uuid>,
    /// Only sessions whose idle deadline is before this time.
    pub idle_before: Option<DateTime<Utc>>,
    /// Only sessions older than this one (ids are time-ordered UUIDv7).
    pub before: Option<Uuid>,
    pub limit: Option<i64>,
}
