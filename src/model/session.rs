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
    /// Tokens and cost so far, over its assistant messages.
    #[serde(default)]
    pub usage: SessionUsage,
    /// Its own budget (USD), when an operator gave it one; otherwise its agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Which of a cockpit's servers holds it, when the cockpit follows several (`[[servers]]`):
    /// set by the client, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// A session's tokens and cost, summed over its assistant messages (by the store, as each
/// message's usage is written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionUsage {
    pub input: i64,
    pub output: i64,
    pub reasoning: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    /// USD, over the messages whose price is known.
    pub cost: f64,
    /// How many messages used tokens at a price nobody knows (their cost is not in `cost`).
    pub unpriced: i64,
}

impl SessionUsage {
    pub fn tokens(&self) -> i64 {
        self.input + self.output + self.reasoning + self.cache_read + self.cache_write
    }

    /// Its cost in words: `$0.42`; `price unknown` when tokens were used at a price nobody
    /// knows (and `$0.42 + unknown` when some were); `-` before any token.
    pub fn cost_text(&self) -> String {
        let dollars = usd(self.cost);
        match (self.unpriced > 0, self.cost > 0.0) {
            (true, true) => format!("{dollars} + unknown"),
            (true, false) => "price unknown".to_string(),
            (false, _) if self.tokens() == 0 => "-".to_string(),
            (false, _) => dollars,
        }
    }

    /// Its tokens in few characters: `950`, `12.3k`, `4.1M`.
    pub fn tokens_text(&self) -> String {
        count(self.tokens())
    }
}

/// USD in few characters: `$0.42`, `$0.0031` (below a cent), `$1,250`.
pub fn usd(amount: f64) -> String {
    if amount >= 1000.0 {
        format!("${:.0}", amount)
    } else if amount > 0.0 && amount < 0.01 {
        format!("${amount:.4}")
    } else {
        format!("${amount:.2}")
    }
}

/// A count in few characters.
pub fn count(n: i64) -> String {
    let f = n as f64;
    if n >= 1_000_000 {
        format!("{:.1}M", f / 1e6)
    } else if n >= 10_000 {
        format!("{:.0}k", f / 1e3)
    } else if n >= 1_000 {
        format!("{:.1}k", f / 1e3)
    } else {
        n.to_string()
    }
}

/// A session's short id: the last 8 hex digits of its id. (A UUIDv7 begins with its creation
/// time, so its first digits are shared by every session made in the same minute; its last
/// ones are random.) Every command takes it, or any unique beginning or end of the id.
pub fn short_id(id: Uuid) -> String {
    let hex = id.simple().to_string();
    hex[hex.len() - 8..].to_string()
}

/// What can stand for a session's id: 4 to 32 hex digits (hyphens ignored), lowercased; `None`
/// when it is something else.
pub fn id_fragment(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() >= 4 && hex.len() <= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// From this share of its budget on, a session (or a team) is flagged.
pub const BUDGET_WARN: f64 = 0.8;

/// What a team spent this calendar month (UTC), and its monthly budget if it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamSpend {
    pub team: String,
    pub spent_usd: f64,
    pub budget_usd: Option<f64>,
}

impl TeamSpend {
    /// The share of its budget spent (`None` with no budget).
    pub fn spent(&self) -> Option<f64> {
        self.budget_usd
            .filter(|b| *b > 0.0)
            .map(|b| self.spent_usd / b)
    }
}

impl Session {
    pub fn short_id(&self) -> String {
        short_id(self.id)
    }

    /// The share of its budget it has spent, when it has one.
    pub fn budget_spent(&self) -> Option<f64> {
        self.budget_usd
            .filter(|b| *b > 0.0)
            .map(|b| self.usage.cost / b)
    }
}

/// What it takes to create a session row.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub id: Option<Uuid>,
    pub agent_id: String,
    pub team: String,
    pub title: String,
    pub env: BTreeMap<String, String>,
    /// Its budget (USD), from its agent's.
    pub budget_usd: Option<f64>,
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
    /// A new budget (USD; `Some(None)` lifts it).
    pub budget_usd: Option<Option<f64>>,
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
