//! The store: the source of truth for agents, sessions, transcripts, event logs and tasks.
//!
//! One [`Store`] trait with two implementations: [`postgres`] for production and [`sqlite`] for
//! the embedded default. Both keep the same change feed (see [`feed`]) so that every cockpit and
//! worker learns what changed without polling the tables.

pub mod deltas;
pub mod feed;
mod pg_text;
pub mod postgres;
pub mod sqlite;

use crate::model::{
    AgentRecord, Ask, AskStatus, CoreInfo, CoreKind, Event, Fence, LiveDelta, Message,
    MessagePatch, NewAsk, NewEvent, NewMessage, NewSession, NewTask, Notice, Session,
    SessionCreation, SessionPatch, SessionQuery, SessionStatus, Task, TaskQuery, TaskStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use deltas::DeltaWatch;

/// One team's sessions of one agent: their tokens and cost, summed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageTotal {
    pub team: String,
    pub agent_id: String,
    pub sessions: i64,
    pub usage: crate::model::SessionUsage,
}
pub use feed::{Change, ChangeFeed};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    /// A write made under a lease this process no longer holds (it was stopped, frozen or cut
    /// off for longer than the lease): refused, and the work it was part of is someone else's.
    #[error("this process no longer holds {0}: its lease ran out, so it writes nothing more")]
    Fenced(String),
    // (Not `#[from]`: that would make the error its source too, and a chain of causes would
    // say it twice.)
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database could not be reached or refused us: what it said, in words.
    #[error("{0}")]
    Unreachable(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error(
        "unsupported database URL {0:?}: use postgres://user@host/db or sqlite:///path/to/file.db"
    )]
    BadUrl(String),
    #[error("cannot prepare the database file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Database(err)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(err)
    }
}

impl StoreError {
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Everything the control core keeps. Every write is durable when the call returns and is
/// announced on the change feed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// A URL safe to show: no password.
    fn describe(&self) -> String;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // --- agents
    /// Records the configured agents; agents not in `agents` are kept but marked absent.
    async fn sync_agents(&self, agents: &[AgentRecord]) -> Result<()>;
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;

    // --- sessions
    async fn insert_session(&self, new: &NewSession) -> Result<Session>;
    /// A session with its history event, first message and provisioning task: all or nothing.
    async fn create_session(&self, new: &SessionCreation) -> Result<Session>;
    async fn get_session(&self, id: Uuid) -> Result<Option<Session>>;
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<Session>>;
    async fn count_sessions(&self) -> Result<Vec<(SessionStatus, i64)>>;
    /// The status of each of `ids` this store knows (one read for many sessions).
    async fn session_statuses(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, SessionStatus)>>;
    /// Applies a patch; `NotFound` when the session does not exist, `Conflict` when
    /// `only_if_status` does not hold.
    async fn update_session(&self, id: Uuid, patch: &SessionPatch) -> Result<Session>;
    /// A command: `patch` (with its history event) and the `task` that carries it out, in one
    /// transaction, so that a crash never leaves a session in a transitional phase with no task
    /// to move it on. Errors as `update_session`.
    async fn command_session(
        &self,
        id: Uuid,
        patch: &SessionPatch,
        task: &NewTask,
    ) -> Result<(Session, Task)>;
    /// The per-session environment (may hold secrets; never shown).
    async fn session_env(&self, id: Uuid) -> Result<BTreeMap<String, String>>;
    /// Sets (or, with `None`, removes) one variable of the per-session environment. Names
    /// starting with `AGENTDECK_` are agentdeck's own (a session's gateway key, say) and are
    /// left out of `env_keys`.
    async fn set_session_env(&self, id: Uuid, name: &str, value: Option<&str>) -> Result<()>;

    // --- transcript
    async fn append_message(&self, session: Uuid, new: &NewMessage) -> Result<Message>;
    /// A message and the task that acts on it (delivering it to the agent), in one transaction:
    /// a crash never leaves a stored message that nothing will deliver.
    async fn append_message_with_task(
        &self,
        session: Uuid,
        new: &NewMessage,
        task: &NewTask,
    ) -> Result<(Message, Task)>;
    async fn update_message(
        &self,
        session: Uuid,
        seq: i64,
        patch: &MessagePatch,
    ) -> Result<Message>;
    /// Messages with `seq > after_seq`, in order.
    async fn list_messages(
        &self,
        session: Uuid,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Message>>;

    // --- ingest
    /// Writes what ingest gathered for each of `writes` (a session's raw events and its
    /// messages' changes), each all or nothing, in as few transactions as can be: the writes of
    /// many sessions commit together. Each write is fenced by its own `fence` (whatever this
    /// view's is): one whose fence no longer holds is refused with [`StoreError::Fenced`], and
    /// one that fails fails alone. One result per write, in order.
    async fn write_ingest(&self, writes: &[IngestWrite]) -> Vec<Result<()>>;

    // --- raw event log
    /// Appends in order; returns the events with their seqs.
    async fn append_events(&self, session: Uuid, events: &[NewEvent]) -> Result<Vec<Event>>;
    /// Events with `seq > after_seq`, in order.
    async fn list_events(&self, session: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Event>>;
    /// The latest `limit` events of one kind, oldest first (a long session's history of phases,
    /// under however many harness events).
    async fn latest_events(&self, session: Uuid, kind: &str, limit: i64) -> Result<Vec<Event>>;

    // --- asks: what an agent waits for a person to answer
    /// Records an ask the harness raised and counts it as waiting; a second record of the same
    /// id changes nothing. Returns whether it was new.
    async fn record_ask(&self, session: Uuid, ask: &NewAsk) -> Result<bool>;
    /// The session's asks, oldest first; only those still waiting when `pending_only`.
    async fn list_asks(&self, session: Uuid, pending_only: bool) -> Result<Vec<Ask>>;
    /// Takes the answer to a waiting ask. The first answer wins: a later one is a conflict that
    /// says who answered what, and when (or that the agent no longer waits for it).
    async fn answer_ask(
        &self,
        session: Uuid,
        id: &str,
        answer: &serde_json::Value,
        message: Option<&str>,
        by: &str,
    ) -> Result<Ask>;
    /// Puts an ask answered by `by` back to waiting: the harness did not take the answer.
    async fn reopen_ask(&self, session: Uuid, id: &str, by: &str) -> Result<()>;
    /// Settles a waiting ask without a person of ours: answered in the harness itself
    /// (`AskStatus::Answered`, with the answer it reported) or no longer waited for
    /// (`AskStatus::Gone`). Returns whether it was waiting.
    async fn settle_ask(
        &self,
        session: Uuid,
        id: &str,
        status: AskStatus,
        answer: Option<&serde_json::Value>,
    ) -> Result<bool>;

    // --- tasks
    /// Queues a task. With a dedupe key, an already queued task with that key is returned
    /// instead of a new one.
    async fn enqueue_task(&self, new: &NewTask) -> Result<Task>;
    /// Takes the next due task for `worker` with a lease. Tasks whose holder's lease ran out are
    /// first put back in the queue (with `backoff`), or dead-lettered if they had no attempts
    /// left. Only tasks a worker of `runtime` can carry out are taken: a task of a session whose
    /// sandbox is on another runtime waits for a worker of that one.
    async fn claim_task(
        &self,
        worker: &str,
        runtime: &str,
        lease: Duration,
        backoff: Duration,
    ) -> Result<Option<Task>>;
    /// Extends the lease; false if `worker` no longer holds the task.
    async fn renew_lease(&self, id: Uuid, worker: &str, lease: Duration) -> Result<bool>;
    /// Marks the task done; false if `worker` no longer held it.
    async fn complete_task(&self, id: Uuid, worker: &str) -> Result<bool>;
    /// Records a failure: queued again after `retry_in`, or dead when no attempts are left
    /// (or `permanent`). Returns the new status, or None if `worker` no longer held it.
    async fn fail_task(
        &self,
        id: Uuid,
        worker: &str,
        error: &str,
        retry_in: Duration,
        permanent: bool,
    ) -> Result<Option<TaskStatus>>;
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>>;

    /// Sessions whose id (as 32 hex digits) begins or ends with `fragment` (lowercase hex), of
    /// `teams` (every team's when `None`), at most `limit`.
    async fn sessions_matching(
        &self,
        fragment: &str,
        teams: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<Session>>;
    /// Tokens and cost summed over every session, by team and agent (ordered by both).
    async fn usage_totals(&self) -> Result<Vec<UsageTotal>>;
    /// What a team's sessions spent (USD) on messages finished since `since`.
    async fn team_spend(&self, team: &str, since: DateTime<Utc>) -> Result<f64>;

    // --- notices (written by the store itself, with the session change that caused them)
    /// The oldest notices not yet handed on (at most `limit`), in order, with their session's
    /// team.
    async fn list_notices(&self, limit: i64) -> Result<Vec<Notice>>;
    /// Hands notices on in one write: enqueues `tasks`, and deletes every notice up to `upto`.
    async fn hand_on_notices(&self, upto: i64, tasks: &[NewTask]) -> Result<()>;
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>>;
    async fn count_tasks(&self) -> Result<Vec<(TaskStatus, i64)>>;

    // --- the fleet (see `model::fleet`): cores with leases, what they hold, fenced writes
    /// Registers core `id` or renews its lease for `lease` from now (the database's clock on
    /// Postgres). Returns its epoch: the one it had while its lease ran, a new one when the
    /// lease had run out (it was frozen or cut off) or on its first heartbeat.
    async fn heartbeat(
        &self,
        id: &str,
        kind: CoreKind,
        fleet: bool,
        lease: Duration,
    ) -> Result<i64>;
    /// Core `id` leaves (a clean shutdown): what it held is free at once.
    async fn leave(&self, id: &str) -> Result<()>;
    /// The cores whose lease runs, oldest first, with what each holds.
    async fn list_cores(&self) -> Result<Vec<CoreInfo>>;
    /// Takes role `name` for `core` at `epoch` unless another core with a running lease holds
    /// it; true when `core` holds it now.
    async fn take_role(&self, name: &str, core: &str, epoch: i64) -> Result<bool>;
    async fn release_role(&self, name: &str, core: &str) -> Result<()>;
    /// The live sessions of `runtime` whose event stream is followed (a harness session and a
    /// sandbox), each with the core that follows it now, if a core with a running lease does.
    async fn followed_sessions(&self, runtime: &str) -> Result<Vec<(Uuid, Option<String>)>>;
    /// Takes those of `ids` that no core with a running lease holds, for `core` at `epoch`;
    /// returns those it holds now.
    async fn take_sessions(&self, core: &str, epoch: i64, ids: &[Uuid]) -> Result<Vec<Uuid>>;
    async fn release_sessions(&self, core: &str, ids: &[Uuid]) -> Result<()>;
    /// A view of this store whose every write first checks, in its own transaction, that
    /// `fence` is still held, and is refused with [`StoreError::Fenced`] otherwise.
    fn fenced(&self, fence: Fence) -> Arc<dyn Store>;

    // --- change feed
    fn subscribe(&self) -> ChangeFeed;

    // --- live text across processes (see `deltas`)
    /// Sends streamed text to the other processes that watch its session now (ephemeral: the
    /// stored text follows at the next flush). `origin` names the sending process. The embedded
    /// store has no other processes to send to: nothing is sent.
    async fn publish_deltas(&self, origin: &str, deltas: &[LiveDelta]) -> Result<()>;
    /// Streamed text of `session` that other processes send, while the watch lives.
    fn watch_deltas(&self, session: Uuid) -> DeltaWatch;
}

/// What a session's ingest writes at once (see [`Store::write_ingest`]).
#[derive(Debug, Clone)]
pub struct IngestWrite {
    pub session: Uuid,
    /// What must still be held for the write to be made (the session, by its core).
    pub fence: Option<Fence>,
    /// Raw events, appended in order.
    pub events: Vec<NewEvent>,
    /// Changes to the session's messages, by seq, applied in order.
    pub messages: Vec<(i64, MessagePatch)>,
}

impl IngestWrite {
    /// Whether the write holds nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.messages.is_empty()
    }
}

/// Opens the store a URL names (`postgres://…` or `sqlite://…`), without migrating.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "postgres" | "postgresql" => Ok(Arc::new(postgres::PgStore::connect(url).await?)),
        "sqlite" => Ok(Arc::new(sqlite::SqliteStore::open(url).await?)),
        _ => Err(StoreError::BadUrl(redact_url(url))),
    }
}

/// Hides the password of a URL (`postgres://u:secret@h/db` → `postgres://u:***@h/db`).
/// Why a conditional session update touched nothing, said of the session as it was found: its
/// status, and the command on its way when it is in a phase of transition.
pub(crate) fn ask_conflict(found: &Ask) -> StoreError {
    StoreError::Conflict(match found.status {
        AskStatus::Answered => format!(
            "{} {} was already answered ({}) by {} at {}",
            found.kind,
            found.id,
            found
                .answer_said()
                .or_else(|| found.answer.as_ref().map(ToString::to_string))
                .unwrap_or_default(),
            found.answered_by.as_deref().unwrap_or("someone"),
            found
                .answered_at
                .map(|t| t.format("%F %T UTC").to_string())
                .unwrap_or_default()
        ),
        _ => format!(
            "the agent no longer waits for {} {} (its turn ended or its harness restarted)",
            found.kind, found.id
        ),
    })
}

pub(crate) fn conflict_text(found: &Session) -> String {
    if found.phase.in_transition() {
        format!("session {} is {} ({})", found.id, found.status, found.phase)
    } else {
        format!("session {} is {}", found.id, found.status)
    }
}

pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://bob:s3cret@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
