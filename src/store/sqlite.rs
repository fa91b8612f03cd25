//! The embedded store: one SQLite file (WAL), used when no database URL is configured.
//!
//! SQLite serialises writers, so sequence numbers are assigned inside `BEGIN IMMEDIATE`
//! transactions. The change feed is the `changes` table, filled by triggers in the writing
//! transaction; a poller reads new rows when a local write wakes it or when `PRAGMA
//! data_version` shows that another process (a `serve` beside a cockpit) wrote to the file.

use super::feed::FANOUT_CAPACITY;
use super::{
    Backend, Change, ChangeFeed, IngestWrite, Result, Store, StoreError, ask_conflict,
    conflict_text,
};
use crate::model::{
    AgentRecord, Ask, AskStatus, CoreInfo, CoreKind, Event, Fence, LiveDelta, Message,
    MessagePatch, NewAsk, NewEvent, NewMessage, NewSession, NewTask, Notice, Session,
    SessionCreation, SessionPatch, SessionQuery, SessionStatus, SessionUsage, Task, TaskQuery,
    TaskStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, SqliteConnection};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

const SESSION_COLUMNS: &str = "id, agent_id, team, title, status, phase, phase_detail, runtime, \
    sandbox_ref, harness_session_id, failure_reason, \
    (SELECT json_group_array(key) FROM (SELECT key FROM json_each(env) \
        WHERE key NOT LIKE 'AGENTDECK\\_%' ESCAPE '\\' ORDER BY key)) AS env_keys, \
    last_message_seq, last_event_seq, waiting, parent_id, fork_seq, created_at, updated_at, last_activity_at, idle_deadline, \
    stopped_at, command_seq, tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, \
    tokens_cache_write, cost_usd, unpriced, budget_usd";
const MESSAGE_COLUMNS: &str = "id, session_id, seq, role, status, parts, error, harness_message_id, usage, diffs, \
    created_at, \
    updated_at";
const TASK_COLUMNS: &str = "id, kind, session_id, payload, status, attempts, max_attempts, \
    run_at, lease_until, locked_by, completed_by, last_error, dedupe_key, command, created_at, \
    updated_at";

/// How often the poller looks for writes by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Change rows older than this are pruned; a reader further behind resyncs.
const CHANGE_RETENTION: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: String,
    changes: broadcast::Sender<Change>,
    wake: Arc<Notify>,
    poller: Arc<PollerSlot>,
    options: SqliteConnectOptions,
    /// Set on a fenced view ([`Store::fenced`]): every write checks it first.
    fence: Option<Fence>,
}

/// The change poller, stopped when the last view of the store goes.
#[derive(Default)]
struct PollerSlot(tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Drop for PollerSlot {
    fn drop(&mut self) {
        if let Ok(mut poller) = self.0.try_lock()
            && let Some(handle) = poller.take()
        {
            handle.abort();
        }
    }
}

/// Checks what `fence` says is held, inside a write transaction (SQLite's writers take turns,
/// so nobody takes it over before the write commits).
async fn check_fence(conn: &mut SqliteConnection, fence: &Fence) -> Result<()> {
    let now = now_ms();
    let held = match fence {
        Fence::Role { name, core, epoch } => sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM roles r JOIN cores c ON c.id = r.core AND c.epoch = r.epoch \
             WHERE r.name = ?1 AND r.core = ?2 AND r.epoch = ?3 AND c.expires_at > ?4",
        )
        .bind(name)
        .bind(core)
        .bind(epoch)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
        .is_some(),
        Fence::Session { id, core, epoch } => sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM session_owners o JOIN cores c ON c.id = o.core AND c.epoch = o.epoch \
             WHERE o.session_id = ?1 AND o.core = ?2 AND o.epoch = ?3 AND c.expires_at > ?4",
        )
        .bind(id.to_string())
        .bind(core)
        .bind(epoch)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
        .is_some(),
    };
    if held {
        Ok(())
    } else {
        Err(StoreError::Fenced(fence.to_string()))
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn at(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("time", ms))
}

fn opt_at(ms: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    ms.map(at).transpose()
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

fn parse<T: FromStr>(row: &SqliteRow, column: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse::<T>().map_err(|e| corrupt(column, e))
}

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid> {
    parse(row, column)
}

fn opt_uuid(row: &SqliteRow, column: &str) -> Result<Option<Uuid>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt("json", e))
}

fn session_from_row(row: &SqliteRow) -> Result<Session> {
    Ok(Session {
        id: uuid(row, "id")?,
        agent_id: row.try_get("agent_id")?,
        team: row.try_get("team")?,
        title: row.try_get("title")?,
        status: parse(row, "status")?,
        phase: parse(row, "phase")?,
        phase_detail: row.try_get("phase_detail")?,
        runtime: row.try_get("runtime")?,
        sandbox_ref: row.try_get("sandbox_ref")?,
        harness_session_id: row.try_get("harness_session_id")?,
        failure_reason: row.try_get("failure_reason")?,
        env_keys: json(row, "env_keys")?,
        last_message_seq: row.try_get("last_message_seq")?,
        last_event_seq: row.try_get("last_event_seq")?,
        waiting: row.try_get("waiting")?,
        parent_id: opt_uuid(row, "parent_id")?,
        fork_seq: row.try_get("fork_seq")?,
        created_at: at(row.try_get("created_at")?)?,
        updated_at: at(row.try_get("updated_at")?)?,
        last_activity_at: at(row.try_get("last_activity_at")?)?,
        idle_deadline: opt_at(row.try_get("idle_deadline")?)?,
        stopped_at: opt_at(row.try_get("stopped_at")?)?,
        command_seq: row.try_get("command_seq")?,
        usage: SessionUsage {
            input: row.try_get("tokens_input")?,
            output: row.try_get("tokens_output")?,
            reasoning: row.try_get("tokens_reasoning")?,
            cache_read: row.try_get("tokens_cache_read")?,
            cache_write: row.try_get("tokens_cache_write")?,
            cost: row.try_get("cost_usd")?,
            unpriced: row.try_get::<i32, _>("unpriced")?.into(),
        },
        budget_usd: row.try_get("budget_usd")?,
        server: None,
    })
}

const ASK_COLUMNS: &str = "session_id, id, kind, status, title, detail, asked_at, answer, message, \
    answered_by, answered_at";

fn ask_from_row(row: &SqliteRow) -> Result<Ask> {
    let answer: Option<String> = row.try_get("answer")?;
    Ok(Ask {
        session_id: uuid(row, "session_id")?,
        id: row.try_get("id")?,
        kind: parse(row, "kind")?,
        status: parse(row, "status")?,
        title: row.try_get("title")?,
        detail: json(row, "detail")?,
        asked_at: at(row.try_get("asked_at")?)?,
        answer: answer
            .map(|a| serde_json::from_str(&a).map_err(|e| corrupt("answer", e)))
            .transpose()?,
        message: row.try_get("message")?,
        answered_by: row.try_get("answered_by")?,
        answered_at: opt_at(row.try_get("answered_at")?)?,
    })
}

/// Counts a session's waiting asks up or down (and marks it changed, for the change feed).
async fn count_waiting(conn: &mut SqliteConnection, session: Uuid, by: i32) -> Result<()> {
    sqlx::query(
        "UPDATE sessions SET waiting = max(waiting + ?2, 0), updated_at = ?3 WHERE id = ?1",
    )
    .bind(session.to_string())
    .bind(by)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn get_ask(conn: &mut SqliteConnection, session: Uuid, id: &str) -> Result<Option<Ask>> {
    let sql = format!("SELECT {ASK_COLUMNS} FROM asks WHERE session_id = ? AND id = ?");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session.to_string())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(ask_from_row)
        .transpose()
}

fn message_from_row(row: &SqliteRow) -> Result<Message> {
    Ok(Message {
        id: uuid(row, "id")?,
        session_id: uuid(row, "session_id")?,
        seq: row.try_get("seq")?,
        role: parse(row, "role")?,
        status: parse(row, "status")?,
        parts: json(row, "parts")?,
        error: row.try_get("error")?,
        harness_message_id: row.try_get("harness_message_id")?,
        usage: row
            .try_get::<Option<String>, _>("usage")?
            .map(|t| serde_json::from_str(&t).map_err(|e| corrupt("message usage", e)))
            .transpose()?,
        diffs: row
            .try_get::<Option<String>, _>("diffs")?
            .map(|t| serde_json::from_str(&t).map_err(|e| corrupt("message diffs", e)))
            .transpose()?
            .unwrap_or_default(),
        created_at: at(row.try_get("created_at")?)?,
        updated_at: at(row.try_get("updated_at")?)?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event> {
    Ok(Event {
        session_id: uuid(row, "session_id")?,
        seq: row.try_get("seq")?,
        at: at(row.try_get("at")?)?,
        kind: row.try_get("kind")?,
        payload: json(row, "payload")?,
    })
}

fn task_from_row(row: &SqliteRow) -> Result<Task> {
    Ok(Task {
        id: uuid(row, "id")?,
        kind: row.try_get("kind")?,
        session_id: opt_uuid(row, "session_id")?,
        payload: json(row, "payload")?,
        status: parse(row, "status")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_at: at(row.try_get("run_at")?)?,
        lease_until: opt_at(row.try_get("lease_until")?)?,
        locked_by: row.try_get("locked_by")?,
        completed_by: row.try_get("completed_by")?,
        last_error: row.try_get("last_error")?,
        dedupe_key: row.try_get("dedupe_key")?,
        command: row.try_get("command")?,
        created_at: at(row.try_get("created_at")?)?,
        updated_at: at(row.try_get("updated_at")?)?,
    })
}

fn agent_from_row(row: &SqliteRow) -> Result<AgentRecord> {
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        harness: row.try_get("harness")?,
        model: row.try_get("model")?,
        spec: json(row, "spec")?,
        present: row.try_get::<i64, _>("present")? != 0,
        updated_at: at(row.try_get("updated_at")?)?,
    })
}

/// `?, ?, ?` for an IN list.
fn push_in<'a, T: ToString + 'a>(
    b: &mut QueryBuilder<sqlx::Sqlite>,
    items: impl Iterator<Item = &'a T>,
) {
    b.push("(");
    let mut sep = b.separated(", ");
    let mut any = false;
    for item in items {
        sep.push_bind(item.to_string());
        any = true;
    }
    if !any {
        sep.push("NULL");
    }
    b.push(")");
}

impl SqliteStore {
    /// Opens (creating when missing) the database file a `sqlite://` URL names, and starts the
    /// change feed; the feed is live when this returns.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::BadUrl(url.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let path = options.get_filename().to_string_lossy().into_owned();
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options.clone())
            .await?;
        let (changes, _) = broadcast::channel(FANOUT_CAPACITY);
        Ok(SqliteStore {
            pool,
            path,
            changes,
            wake: Arc::new(Notify::new()),
            poller: Arc::default(),
            options,
            fence: None,
        })
    }

    /// Starts the change poller (after migrations, since it reads the `changes` table).
    async fn start_poller(&self) -> Result<()> {
        let mut slot = self.poller.0.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let mut conn = SqliteConnection::connect_with(&self.options).await?;
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM changes")
            .fetch_one(&mut conn)
            .await?;
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await?;
        let poller = Poller {
            conn,
            last,
            version,
            tx: self.changes.clone(),
            wake: self.wake.clone(),
            last_prune: std::time::Instant::now(),
        };
        *slot = Some(tokio::spawn(poller.run()));
        Ok(())
    }

    /// The session an update returned, or why there was none.
    async fn updated_or_why(&self, id: Uuid, updated: Option<Session>) -> Result<Session> {
        match updated {
            Some(session) => Ok(session),
            None => Err(self.why_not_updated(id).await?),
        }
    }

    /// Why a conditional update touched no row: no such session, or it is in another status.
    async fn why_not_updated(&self, id: Uuid) -> Result<StoreError> {
        Ok(match self.get_session(id).await? {
            None => StoreError::not_found("session", id),
            Some(found) => StoreError::Conflict(conflict_text(&found)),
        })
    }

    fn wrote(&self) {
        self.wake.notify_one();
    }

    /// A write transaction; on a fenced view, the fence is checked first.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(fence) = &self.fence {
            check_fence(&mut tx, fence).await?;
        }
        Ok(tx)
    }
}

struct Poller {
    conn: SqliteConnection,
    last: i64,
    version: i64,
    tx: broadcast::Sender<Change>,
    wake: Arc<Notify>,
    last_prune: std::time::Instant,
}

impl Poller {
    async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            if let Err(err) = self.tick().await {
                tracing::warn!(%err, "change feed poll failed; readers will resync");
                let _ = self.tx.send(Change::Resync);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn tick(&mut self) -> Result<()> {
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut self.conn)
            .await?;
        if version == self.version {
            return Ok(());
        }
        self.version = version;
        let oldest: Option<i64> = sqlx::query_scalar("SELECT min(id) FROM changes")
            .fetch_one(&mut self.conn)
            .await?;
        if oldest.is_some_and(|oldest| oldest > self.last + 1) {
            // Rows we never read were pruned: we were asleep too long.
            let _ = self.tx.send(Change::Resync);
        }
        loop {
            let rows = sqlx::query(
                "SELECT id, kind, session_id, seq FROM changes WHERE id > ? ORDER BY id LIMIT 1000",
            )
            .bind(self.last)
            .fetch_all(&mut self.conn)
            .await?;
            let Some(last) = rows.last() else { break };
            self.last = last.try_get("id")?;
            let mut previous: Option<Change> = None;
            for row in &rows {
                let kind: String = row.try_get("kind")?;
                let session: Option<String> = row.try_get("session_id")?;
                let seq: Option<i64> = row.try_get("seq")?;
                let change = Change::from_parts(&kind, session.as_deref(), seq);
                if previous.as_ref() != Some(&change) {
                    let _ = self.tx.send(change.clone());
                }
                previous = Some(change);
            }
            if rows.len() < 1000 {
                break;
            }
        }
        if self.last_prune.elapsed() > Duration::from_secs(60) {
            self.last_prune = std::time::Instant::now();
            sqlx::query("DELETE FROM changes WHERE at < ?")
                .bind(now_ms() - ms(CHANGE_RETENTION))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }
}

// --- writes that take part in a caller's transaction

async fn insert_session_in(conn: &mut SqliteConnection, new: &NewSession) -> Result<Session> {
    let id = new.id.unwrap_or_else(Uuid::now_v7);
    let now = now_ms();
    let sql = format!(
        "INSERT INTO sessions (id, agent_id, team, title, status, phase, env, created_at, \
             updated_at, last_activity_at, budget_usd) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?9) RETURNING {SESSION_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(&new.agent_id)
        .bind(&new.team)
        .bind(&new.title)
        .bind(SessionStatus::Creating.as_str())
        .bind(crate::model::Phase::CreatingSandbox.as_str())
        .bind(to_json(&new.env)?)
        .bind(now)
        .bind(new.budget_usd)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(format!("session {id} already exists"))
            }
            _ => StoreError::Database(e),
        })?;
    session_from_row(&row)
}

async fn get_session_in(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Session>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// Applies `p` (with its history event); `None` when there is no such session in the statuses
/// the patch allows.
async fn update_session_in(
    conn: &mut SqliteConnection,
    id: Uuid,
    p: &SessionPatch,
) -> Result<Option<Session>> {
    // A change of status or phase and its entry in the session's history are one write.
    let log = p.status.is_some() || p.phase.is_some();
    let now = now_ms();
    let mut b = QueryBuilder::new("UPDATE sessions SET updated_at = ");
    b.push_bind(now);
    if log {
        b.push(", last_event_seq = last_event_seq + 1");
    }
    if let Some(v) = p.status {
        b.push(", status = ").push_bind(v.as_str());
    }
    if let Some(v) = p.phase {
        b.push(", phase = ").push_bind(v.as_str());
    }
    if let Some(v) = &p.phase_detail {
        b.push(", phase_detail = ").push_bind(v.clone());
    }
    if let Some(v) = &p.title {
        b.push(", title = ").push_bind(v.clone());
    }
    if let Some(v) = p.budget_usd {
        b.push(", budget_usd = ").push_bind(v);
    }
    if let Some(v) = &p.runtime {
        b.push(", runtime = ").push_bind(v.clone());
    }
    if let Some(v) = &p.sandbox_ref {
        b.push(", sandbox_ref = ").push_bind(v.clone());
    }
    if let Some(v) = &p.harness_session_id {
        b.push(", harness_session_id = ").push_bind(v.clone());
    }
    if let Some(v) = &p.failure_reason {
        b.push(", failure_reason = ").push_bind(v.clone());
    }
    if let Some(v) = p.last_activity_at {
        b.push(", last_activity_at = ")
            .push_bind(v.timestamp_millis());
    }
    if let Some(v) = p.idle_deadline {
        b.push(", idle_deadline = ")
            .push_bind(v.map(|t| t.timestamp_millis()));
    }
    if let Some(v) = p.stopped_at {
        b.push(", stopped_at = ")
            .push_bind(v.map(|t| t.timestamp_millis()));
    }
    if p.new_command {
        b.push(", command_seq = command_seq + 1");
    }
    b.push(" WHERE id = ").push_bind(id.to_string());
    if let Some(command) = p.only_if_command {
        b.push(" AND command_seq = ").push_bind(command);
    }
    if let Some(only) = &p.only_if_status {
        b.push(" AND status IN ");
        push_in(&mut b, only.iter());
    }
    if let Some(not) = p.unless_phase.as_ref().filter(|n| !n.is_empty()) {
        b.push(" AND phase NOT IN ");
        push_in(&mut b, not.iter());
    }
    b.push(format!(" RETURNING {SESSION_COLUMNS}"));
    let Some(row) = b.build().fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let session = session_from_row(&row)?;
    if log {
        let payload = serde_json::json!({
            "status": session.status,
            "phase": session.phase,
            "detail": session.phase_detail,
            "failure_reason": session.failure_reason,
        });
        sqlx::query(
            "INSERT INTO events (session_id, seq, at, kind, payload) \
             VALUES (?, ?, ?, 'session.phase', ?)",
        )
        .bind(id.to_string())
        .bind(session.last_event_seq)
        .bind(now)
        .bind(to_json(&payload)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(session))
}

async fn append_message_in(
    conn: &mut SqliteConnection,
    session: Uuid,
    new: &NewMessage,
) -> Result<Message> {
    let now = now_ms();
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET last_message_seq = last_message_seq + 1, last_activity_at = ?2 \
         WHERE id = ?1 RETURNING last_message_seq",
    )
    .bind(session.to_string())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let seq = seq.ok_or_else(|| StoreError::not_found("session", session))?;
    let sql = format!(
        "INSERT INTO messages (session_id, seq, id, role, status, parts, harness_message_id, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
         RETURNING {MESSAGE_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session.to_string())
        .bind(seq)
        .bind(Uuid::now_v7().to_string())
        .bind(new.role.as_str())
        .bind(new.status.as_str())
        .bind(to_json(&new.parts)?)
        .bind(&new.harness_message_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    let message = message_from_row(&row)?;
    Ok(message)
}

async fn append_events_in(
    conn: &mut SqliteConnection,
    session: Uuid,
    events: &[NewEvent],
) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let last: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET last_event_seq = last_event_seq + ?2 WHERE id = ?1 \
         RETURNING last_event_seq",
    )
    .bind(session.to_string())
    .bind(n)
    .fetch_optional(&mut *conn)
    .await?;
    let last = last.ok_or_else(|| StoreError::not_found("session", session))?;
    let at_time = at(now)?;
    let mut out = Vec::with_capacity(events.len());
    for (i, chunk) in events.chunks(200).enumerate() {
        let base = last - n + 1 + (i as i64) * 200;
        let mut b = QueryBuilder::new("INSERT INTO events (session_id, seq, at, kind, payload) ");
        let mut payloads = Vec::with_capacity(chunk.len());
        for e in chunk {
            payloads.push(to_json(&e.payload)?);
        }
        b.push_values(
            chunk.iter().zip(payloads).enumerate(),
            |mut row, (j, (e, p))| {
                row.push_bind(session.to_string())
                    .push_bind(base + j as i64)
                    .push_bind(now)
                    .push_bind(e.kind.clone())
                    .push_bind(p);
            },
        );
        b.build().execute(&mut *conn).await?;
        for (j, e) in chunk.iter().enumerate() {
            out.push(Event {
                session_id: session,
                seq: base + j as i64,
                at: at_time,
                kind: e.kind.clone(),
                payload: e.payload.clone(),
            });
        }
    }
    Ok(out)
}

async fn update_message_in(
    conn: &mut SqliteConnection,
    session: Uuid,
    seq: i64,
    p: &MessagePatch,
) -> Result<Message> {
    let mut b = QueryBuilder::new("UPDATE messages SET updated_at = ");
    b.push_bind(now_ms());
    if let Some(v) = p.status {
        b.push(", status = ").push_bind(v.as_str());
    }
    if let Some(v) = &p.parts {
        b.push(", parts = ").push_bind(to_json(v)?);
    }
    if let Some(v) = &p.error {
        b.push(", error = ").push_bind(v.clone());
    }
    if let Some(v) = &p.harness_message_id {
        b.push(", harness_message_id = ").push_bind(v.clone());
    }
    if let Some(v) = &p.usage {
        b.push(", usage = ").push_bind(to_json(v)?);
    }
    if let Some(v) = &p.diffs {
        b.push(", diffs = ").push_bind(to_json(v)?);
    }
    b.push(" WHERE session_id = ")
        .push_bind(session.to_string())
        .push(" AND seq = ")
        .push_bind(seq)
        .push(format!(" RETURNING {MESSAGE_COLUMNS}"));
    let row = b
        .build()
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("message", format!("{session}#{seq}")))?;
    message_from_row(&row)
}

impl SqliteStore {
    /// Ingest's writes of many sessions in one transaction (see [`Store::write_ingest`]); any
    /// failure fails them all (the caller then writes each alone).
    async fn write_ingest_at_once(&self, writes: &[IngestWrite]) -> Result<Vec<Result<()>>> {
        if writes.iter().all(IngestWrite::is_empty) {
            return Ok(writes.iter().map(|_| Ok(())).collect());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            if let Some(fence) = &w.fence {
                match check_fence(&mut tx, fence).await {
                    Ok(()) => {}
                    Err(err @ StoreError::Fenced(_)) => {
                        results.push(Err(err));
                        continue;
                    }
                    Err(err) => return Err(err),
                }
            }
            append_events_in(&mut tx, w.session, &w.events).await?;
            for (seq, patch) in &w.messages {
                update_message_in(&mut tx, w.session, *seq, patch).await?;
            }
            results.push(Ok(()));
        }
        tx.commit().await?;
        Ok(results)
    }
}

async fn enqueue_task_in(conn: &mut SqliteConnection, new: &NewTask) -> Result<Task> {
    let now = now_ms();
    if let Some(key) = &new.dedupe_key {
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE dedupe_key = ? AND status = 'queued'");
        if let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
        {
            return task_from_row(&row);
        }
    }
    let sql = format!(
        "INSERT INTO tasks (id, kind, session_id, payload, status, max_attempts, run_at, \
             dedupe_key, created_at, updated_at, command) \
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?8, ?9) RETURNING {TASK_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7().to_string())
        .bind(new.kind.as_str())
        .bind(new.session_id.map(|s| s.to_string()))
        .bind(to_json(&new.payload)?)
        .bind(new.max_attempts.max(1))
        .bind(new.run_at.map_or(now, |t| t.timestamp_millis()))
        .bind(&new.dedupe_key)
        .bind(now)
        .bind(new.command)
        .fetch_one(&mut *conn)
        .await?;
    let task = task_from_row(&row)?;
    Ok(task)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        self.start_poller().await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn sync_agents(&self, agents: &[AgentRecord]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let mut b = QueryBuilder::new("UPDATE agents SET present = 0, updated_at = ");
        b.push_bind(now).push(" WHERE present = 1 AND id NOT IN ");
        push_in(&mut b, agents.iter().map(|a| &a.id));
        b.build().execute(&mut *tx).await?;
        for agent in agents {
            sqlx::query(
                "INSERT INTO agents (id, name, harness, model, spec, present, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, harness = excluded.harness, \
                 model = excluded.model, spec = excluded.spec, present = 1, updated_at = excluded.updated_at \
                 WHERE agents.name IS NOT excluded.name OR agents.harness IS NOT excluded.harness \
                    OR agents.model IS NOT excluded.model OR agents.spec IS NOT excluded.spec \
                    OR agents.present = 0",
            )
            .bind(&agent.id)
            .bind(&agent.name)
            .bind(&agent.harness)
            .bind(&agent.model)
            .bind(to_json(&agent.spec)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.wrote();
        Ok(())
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn insert_session(&self, new: &NewSession) -> Result<Session> {
        let mut tx = self.begin().await?;
        let session = insert_session_in(&mut tx, new).await?;
        tx.commit().await?;
        self.wrote();
        Ok(session)
    }

    async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
        get_session_in(&mut *self.pool.acquire().await?, id).await
    }

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<Session>> {
        let mut b = QueryBuilder::new(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE 1"));
        if let Some(teams) = &q.teams {
            b.push(" AND team IN ");
            push_in(&mut b, teams.iter());
        }
        if let Some(agent) = &q.agent_id {
            b.push(" AND agent_id = ").push_bind(agent.clone());
        }
        if let Some(statuses) = &q.statuses {
            b.push(" AND status IN ");
            push_in(&mut b, statuses.iter());
        }
        if let Some(parent) = q.parent {
            b.push(" AND parent_id = ").push_bind(parent.to_string());
        }
        if let Some(t) = q.idle_before {
            b.push(" AND idle_deadline < ")
                .push_bind(t.timestamp_millis());
        }
        if let Some(before) = q.before {
            b.push(" AND id < ").push_bind(before.to_string());
        }
        b.push(" ORDER BY id DESC");
        if let Some(limit) = q.limit {
            b.push(" LIMIT ").push_bind(limit);
        }
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn count_sessions(&self) -> Result<Vec<(SessionStatus, i64)>> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM sessions GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((parse(r, "status")?, r.try_get("n")?)))
            .collect()
    }

    async fn update_session(&self, id: Uuid, p: &SessionPatch) -> Result<Session> {
        let mut tx = self.begin().await?;
        let updated = update_session_in(&mut tx, id, p).await?;
        if updated.is_some() {
            tx.commit().await?;
            self.wrote();
        } else {
            tx.rollback().await?;
        }
        self.updated_or_why(id, updated).await
    }

    async fn session_env(&self, id: Uuid) -> Result<BTreeMap<String, String>> {
        let row = sqlx::query("SELECT env FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("session", id))?;
        json(&row, "env")
    }

    async fn set_session_env(&self, id: Uuid, name: &str, value: Option<&str>) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = match value {
            Some(v) => sqlx::query(
                "UPDATE sessions SET env = json_set(env, '$.' || json_quote(?2), ?3) WHERE id = ?1",
            )
            .bind(id.to_string())
            .bind(name)
            .bind(v)
            .execute(&mut *tx)
            .await?,
            None => sqlx::query(
                "UPDATE sessions SET env = json_remove(env, '$.' || json_quote(?2)) WHERE id = ?1",
            )
            .bind(id.to_string())
            .bind(name)
            .execute(&mut *tx)
            .await?,
        };
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("session", id));
        }
        tx.commit().await?;
        self.wrote();
        Ok(())
    }

    async fn append_message(&self, session: Uuid, new: &NewMessage) -> Result<Message> {
        let mut tx = self.begin().await?;
        let message = append_message_in(&mut tx, session, new).await?;
        tx.commit().await?;
        self.wrote();
        Ok(message)
    }

    async fn update_message(&self, session: Uuid, seq: i64, p: &MessagePatch) -> Result<Message> {
        let mut tx = self.begin().await?;
        let message = update_message_in(&mut tx, session, seq, p).await?;
        tx.commit().await?;
        self.wrote();
        Ok(message)
    }

    async fn write_ingest(&self, writes: &[IngestWrite]) -> Vec<Result<()>> {
        let results = match self.write_ingest_at_once(writes).await {
            Ok(results) => results,
            Err(err) if writes.len() > 1 => {
                // One of them failed: each is written alone, so that it fails alone.
                tracing::debug!(%err, count = writes.len(), "a grouped ingest write failed; writing each alone");
                let mut out = Vec::with_capacity(writes.len());
                for w in writes {
                    out.push(
                        match self.write_ingest_at_once(std::slice::from_ref(w)).await {
                            Ok(mut r) => r.pop().unwrap_or(Ok(())),
                            Err(err) => Err(err),
                        },
                    );
                }
                out
            }
            Err(err) => vec![Err(err)],
        };
        self.wrote();
        results
    }

    async fn list_messages(&self, session: Uuid, after: i64, limit: i64) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND seq > ? \
             ORDER BY seq LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session.to_string())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn append_events(&self, session: Uuid, events: &[NewEvent]) -> Result<Vec<Event>> {
        let mut tx = self.begin().await?;
        let out = append_events_in(&mut tx, session, events).await?;
        tx.commit().await?;
        self.wrote();
        Ok(out)
    }

    async fn list_events(&self, session: Uuid, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT session_id, seq, at, kind, payload FROM events \
             WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(session.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn latest_events(&self, session: Uuid, kind: &str, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT session_id, seq, at, kind, payload FROM events \
             WHERE session_id = ? AND kind = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(session.to_string())
        .bind(kind)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }

    async fn session_statuses(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, SessionStatus)>> {
        let mut out = Vec::with_capacity(ids.len());
        // SQLite binds at most a few thousand values per statement.
        for chunk in ids.chunks(500) {
            let mut b = QueryBuilder::new("SELECT id, status FROM sessions WHERE id IN ");
            push_in(&mut b, chunk.iter());
            for row in b.build().fetch_all(&self.pool).await? {
                out.push((uuid(&row, "id")?, parse(&row, "status")?));
            }
        }
        Ok(out)
    }

    async fn record_ask(&self, session: Uuid, ask: &NewAsk) -> Result<bool> {
        let mut tx = self.begin().await?;
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM sessions WHERE id = ?")
            .bind(session.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(StoreError::not_found("session", session));
        }
        let new = sqlx::query(
            "INSERT INTO asks (session_id, id, kind, status, title, detail, asked_at) \
             VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(session.to_string())
        .bind(&ask.id)
        .bind(ask.kind.as_str())
        .bind(&ask.title)
        .bind(to_json(&ask.detail)?)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if new {
            count_waiting(&mut tx, session, 1).await?;
        }
        tx.commit().await?;
        self.wrote();
        Ok(new)
    }

    async fn list_asks(&self, session: Uuid, pending_only: bool) -> Result<Vec<Ask>> {
        let sql = format!(
            "SELECT {ASK_COLUMNS} FROM asks WHERE session_id = ? AND (? = 0 OR status = 'pending') \
             ORDER BY asked_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session.to_string())
            .bind(pending_only)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ask_from_row).collect()
    }

    async fn answer_ask(
        &self,
        session: Uuid,
        id: &str,
        answer: &serde_json::Value,
        message: Option<&str>,
        by: &str,
    ) -> Result<Ask> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE asks SET status = 'answered', answer = ?3, message = ?4, answered_by = ?5, \
             answered_at = ?6 WHERE session_id = ?1 AND id = ?2 AND status = 'pending' \
             RETURNING {ASK_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session.to_string())
            .bind(id)
            .bind(to_json(answer)?)
            .bind(message)
            .bind(by)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(match get_ask(&mut tx, session, id).await? {
                Some(found) => ask_conflict(&found),
                None => StoreError::not_found("ask", id),
            });
        };
        count_waiting(&mut tx, session, -1).await?;
        tx.commit().await?;
        self.wrote();
        ask_from_row(&row)
    }

    async fn reopen_ask(&self, session: Uuid, id: &str, by: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let reopened = sqlx::query(
            "UPDATE asks SET status = 'pending', answer = NULL, message = NULL, answered_by = NULL, \
             answered_at = NULL WHERE session_id = ? AND id = ? AND status = 'answered' \
             AND answered_by = ?",
        )
        .bind(session.to_string())
        .bind(id)
        .bind(by)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if reopened {
            count_waiting(&mut tx, session, 1).await?;
        }
        tx.commit().await?;
        self.wrote();
        Ok(())
    }

    async fn settle_ask(
        &self,
        session: Uuid,
        id: &str,
        status: AskStatus,
        answer: Option<&serde_json::Value>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let answer = answer.map(to_json).transpose()?;
        let settled = sqlx::query(
            "UPDATE asks SET status = ?3, answer = coalesce(?4, answer), \
             answered_by = CASE WHEN ?3 = 'answered' THEN 'agent' END, answered_at = ?5 \
             WHERE session_id = ?1 AND id = ?2 AND status = 'pending'",
        )
        .bind(session.to_string())
        .bind(id)
        .bind(status.as_str())
        .bind(answer)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if settled {
            count_waiting(&mut tx, session, -1).await?;
        }
        tx.commit().await?;
        self.wrote();
        Ok(settled)
    }

    async fn enqueue_task(&self, new: &NewTask) -> Result<Task> {
        let mut tx = self.begin().await?;
        let task = enqueue_task_in(&mut tx, new).await?;
        tx.commit().await?;
        self.wrote();
        Ok(task)
    }

    async fn append_message_with_task(
        &self,
        session: Uuid,
        new: &NewMessage,
        task: &NewTask,
    ) -> Result<(Message, Task)> {
        let mut tx = self.begin().await?;
        let message = append_message_in(&mut tx, session, new).await?;
        let task = enqueue_task_in(&mut tx, task).await?;
        tx.commit().await?;
        self.wrote();
        Ok((message, task))
    }

    async fn create_session(&self, new: &SessionCreation) -> Result<Session> {
        let mut tx = self.begin().await?;
        let session = insert_session_in(&mut tx, &new.session).await?;
        append_events_in(&mut tx, session.id, std::slice::from_ref(&new.created)).await?;
        if let Some(fork) = &new.fork {
            sqlx::query("UPDATE sessions SET parent_id = ?2, fork_seq = ?3 WHERE id = ?1")
                .bind(session.id.to_string())
                .bind(fork.parent.to_string())
                .bind(fork.at_seq)
                .execute(&mut *tx)
                .await?;
            for message in &fork.history {
                append_message_in(&mut tx, session.id, message).await?;
            }
        }
        if let Some(first) = &new.first_message {
            append_message_in(&mut tx, session.id, first).await?;
        }
        let task = NewTask {
            command: Some(session.command_seq),
            ..new.task.clone()
        };
        enqueue_task_in(&mut tx, &task).await?;
        // The row as it is now (its counters moved with the event and the message).
        let session = get_session_in(&mut tx, session.id)
            .await?
            .ok_or_else(|| StoreError::not_found("session", session.id))?;
        tx.commit().await?;
        self.wrote();
        Ok(session)
    }

    async fn command_session(
        &self,
        id: Uuid,
        patch: &SessionPatch,
        task: &NewTask,
    ) -> Result<(Session, Task)> {
        let mut tx = self.begin().await?;
        let Some(session) = update_session_in(&mut tx, id, patch).await? else {
            tx.rollback().await?;
            return Err(self.why_not_updated(id).await?);
        };
        let task = NewTask {
            command: patch.new_command.then_some(session.command_seq),
            ..task.clone()
        };
        if patch.new_command {
            // The session's earlier commands that have not started no longer apply.
            sqlx::query(
                "UPDATE tasks SET status = 'done', completed_by = 'superseded', \
                     last_error = 'superseded by a newer command (' || ?2 || ')', updated_at = ?3 \
                 WHERE session_id = ?1 AND status = 'queued' AND command IS NOT NULL",
            )
            .bind(id.to_string())
            .bind(task.kind.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        let task = enqueue_task_in(&mut tx, &task).await?;
        tx.commit().await?;
        self.wrote();
        Ok((session, task))
    }

    async fn claim_task(
        &self,
        worker: &str,
        runtime: &str,
        lease: Duration,
        backoff: Duration,
    ) -> Result<Option<Task>> {
        let now = now_ms();
        let expired = sqlx::query(
            "UPDATE tasks SET \
                 status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                 run_at = ?1 + ?2, \
                 last_error = 'lease expired: worker ' || coalesce(locked_by, '?') || ' stopped renewing it', \
                 lease_until = NULL, locked_by = NULL, updated_at = ?1 \
             WHERE status = 'running' AND lease_until < ?1",
        )
        .bind(now)
        .bind(ms(backoff))
        .execute(&self.pool)
        .await?;
        if expired.rows_affected() > 0 {
            self.wrote();
        }
        let sql = format!(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = ?1, \
                 lease_until = ?2 + ?3, updated_at = ?2 \
             WHERE id = (SELECT t.id FROM tasks t WHERE t.status = 'queued' AND t.run_at <= ?2 \
                           AND (t.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks o \
                             WHERE o.session_id = t.session_id AND o.id <> t.id \
                               AND (o.status = 'running' OR (o.status = 'queued' AND o.run_at <= ?2 \
                                 AND (o.created_at < t.created_at \
                                   OR (o.created_at = t.created_at AND o.id < t.id)))))) \
                           AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = t.session_id \
                             AND s.runtime IS NOT NULL AND s.runtime <> ?4) \
                         ORDER BY t.run_at, t.id LIMIT 1) \
             RETURNING {TASK_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now)
            .bind(ms(lease))
            .bind(runtime)
            .fetch_optional(&self.pool)
            .await?;
        if row.is_some() {
            self.wrote();
        }
        row.as_ref().map(task_from_row).transpose()
    }

    async fn renew_lease(&self, id: Uuid, worker: &str, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET lease_until = ?3 WHERE id = ?1 AND locked_by = ?2 AND status = 'running'",
        )
        .bind(id.to_string())
        .bind(worker)
        .bind(now_ms() + ms(lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_task(&self, id: Uuid, worker: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET status = 'done', completed_by = ?2, locked_by = NULL, \
                 lease_until = NULL, updated_at = ?3 \
             WHERE id = ?1 AND locked_by = ?2 AND status = 'running'",
        )
        .bind(id.to_string())
        .bind(worker)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.wrote();
        Ok(done.rows_affected() == 1)
    }

    async fn fail_task(
        &self,
        id: Uuid,
        worker: &str,
        error: &str,
        retry_in: Duration,
        permanent: bool,
    ) -> Result<Option<TaskStatus>> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE tasks SET \
                 status = CASE WHEN ?5 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                 run_at = ?6 + ?4, last_error = ?3, locked_by = NULL, lease_until = NULL, \
                 updated_at = ?6 \
             WHERE id = ?1 AND locked_by = ?2 AND status = 'running' RETURNING status",
        )
        .bind(id.to_string())
        .bind(worker)
        .bind(error)
        .bind(ms(retry_in))
        .bind(permanent)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        self.wrote();
        row.as_ref().map(|r| parse(r, "status")).transpose()
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn sessions_matching(
        &self,
        fragment: &str,
        teams: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<Session>> {
        let mut b = QueryBuilder::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE (replace(id, '-', '') LIKE "
        ));
        b.push_bind(format!("{fragment}%"))
            .push(" OR replace(id, '-', '') LIKE ")
            .push_bind(format!("%{fragment}"))
            .push(")");
        if let Some(teams) = teams {
            b.push(" AND team IN (");
            let mut list = b.separated(", ");
            for t in teams {
                list.push_bind(t.clone());
            }
            list.push_unseparated(")");
            if teams.is_empty() {
                b.push(" AND 0");
            }
        }
        b.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn usage_totals(&self) -> Result<Vec<super::UsageTotal>> {
        let rows = sqlx::query(
            "SELECT team, agent_id, count(*) AS sessions, \
                 coalesce(sum(tokens_input), 0) AS input, \
                 coalesce(sum(tokens_output), 0) AS output, \
                 coalesce(sum(tokens_reasoning), 0) AS reasoning, \
                 coalesce(sum(tokens_cache_read), 0) AS cache_read, \
                 coalesce(sum(tokens_cache_write), 0) AS cache_write, \
                 coalesce(sum(cost_usd), 0) AS cost, coalesce(sum(unpriced), 0) AS unpriced \
             FROM sessions GROUP BY team, agent_id ORDER BY team, agent_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(super::UsageTotal {
                    team: row.try_get("team")?,
                    agent_id: row.try_get("agent_id")?,
                    sessions: row.try_get("sessions")?,
                    usage: SessionUsage {
                        input: row.try_get("input")?,
                        output: row.try_get("output")?,
                        reasoning: row.try_get("reasoning")?,
                        cache_read: row.try_get("cache_read")?,
                        cache_write: row.try_get("cache_write")?,
                        cost: row.try_get("cost")?,
                        unpriced: row.try_get("unpriced")?,
                    },
                })
            })
            .collect()
    }

    async fn team_spend(&self, team: &str, since: DateTime<Utc>) -> Result<f64> {
        Ok(sqlx::query_scalar::<_, f64>(
            "SELECT coalesce(sum(json_extract(m.usage, '$.cost')), 0.0) FROM messages m \
             JOIN sessions s ON s.id = m.session_id \
             WHERE s.team = ? AND m.usage IS NOT NULL AND m.updated_at >= ?",
        )
        .bind(team)
        .bind(since.timestamp_millis())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_notices(&self, limit: i64) -> Result<Vec<Notice>> {
        let rows = sqlx::query(
            "SELECT n.id, n.session_id, s.team, n.event, n.at FROM notices n \
             JOIN sessions s ON s.id = n.session_id ORDER BY n.id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Notice {
                    id: row.try_get("id")?,
                    session_id: uuid(row, "session_id")?,
                    team: row.try_get("team")?,
                    event: parse(row, "event")?,
                    at: at(row.try_get("at")?)?,
                })
            })
            .collect()
    }

    async fn hand_on_notices(&self, upto: i64, tasks: &[NewTask]) -> Result<()> {
        let mut tx = self.begin().await?;
        for task in tasks {
            enqueue_task_in(&mut tx, task).await?;
        }
        sqlx::query("DELETE FROM notices WHERE id <= ?")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.wrote();
        Ok(())
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<Task>> {
        let mut b = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1"));
        if let Some(statuses) = &q.statuses {
            b.push(" AND status IN ");
            push_in(&mut b, statuses.iter());
        }
        if let Some(kind) = &q.kind {
            b.push(" AND kind = ").push_bind(kind.clone());
        }
        if let Some(session) = q.session_id {
            b.push(" AND session_id = ").push_bind(session.to_string());
        }
        b.push(" ORDER BY created_at, id");
        if let Some(limit) = q.limit {
            b.push(" LIMIT ").push_bind(limit);
        }
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn count_tasks(&self) -> Result<Vec<(TaskStatus, i64)>> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM tasks GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((parse(r, "status")?, r.try_get("n")?)))
            .collect()
    }

    async fn heartbeat(
        &self,
        id: &str,
        kind: CoreKind,
        fleet: bool,
        lease: Duration,
    ) -> Result<i64> {
        let now = now_ms();
        // A lease that ran out starts a new epoch; a first one is the time in ms.
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO cores (id, kind, fleet, epoch, started_at, renewed_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?4 + ?5) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, fleet = excluded.fleet, \
                 renewed_at = ?4, expires_at = ?4 + ?5, \
                 epoch = CASE WHEN cores.expires_at > ?4 THEN cores.epoch ELSE cores.epoch + 1 END \
             RETURNING epoch",
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(fleet)
        .bind(now)
        .bind(ms(lease))
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch)
    }

    async fn leave(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM session_owners WHERE core = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM roles WHERE core = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cores WHERE id = ?1 OR expires_at < ?2")
            .bind(id)
            .bind(now_ms() - 86_400_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_cores(&self) -> Result<Vec<CoreInfo>> {
        let rows = sqlx::query(
            "SELECT c.id, c.kind, c.fleet, c.epoch, c.started_at, c.expires_at, \
                 (SELECT count(*) FROM session_owners o WHERE o.core = c.id AND o.epoch = c.epoch) \
                     AS sessions, \
                 (SELECT json_group_array(name) FROM (SELECT r.name FROM roles r \
                     WHERE r.core = c.id AND r.epoch = c.epoch ORDER BY r.name)) AS roles \
             FROM cores c WHERE c.expires_at > ?1 ORDER BY c.started_at, c.id",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CoreInfo {
                    id: row.try_get("id")?,
                    kind: parse(row, "kind")?,
                    fleet: row.try_get("fleet")?,
                    epoch: row.try_get("epoch")?,
                    started_at: at(row.try_get("started_at")?)?,
                    expires_at: at(row.try_get("expires_at")?)?,
                    sessions: row.try_get("sessions")?,
                    roles: json(row, "roles")?,
                })
            })
            .collect()
    }

    async fn take_role(&self, name: &str, core: &str, epoch: i64) -> Result<bool> {
        let holder: Option<String> = sqlx::query_scalar(
            "INSERT INTO roles (name, core, epoch) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET core = excluded.core, epoch = excluded.epoch \
             WHERE roles.core = excluded.core OR NOT EXISTS (SELECT 1 FROM cores c \
                 WHERE c.id = roles.core AND c.epoch = roles.epoch AND c.expires_at > ?4) \
             RETURNING core",
        )
        .bind(name)
        .bind(core)
        .bind(epoch)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(holder.is_some())
    }

    async fn release_role(&self, name: &str, core: &str) -> Result<()> {
        sqlx::query("DELETE FROM roles WHERE name = ?1 AND core = ?2")
            .bind(name)
            .bind(core)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn followed_sessions(&self, runtime: &str) -> Result<Vec<(Uuid, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT s.id, c.id AS core FROM sessions s \
             LEFT JOIN session_owners o ON o.session_id = s.id \
             LEFT JOIN cores c ON c.id = o.core AND c.epoch = o.epoch AND c.expires_at > ?1 \
             WHERE s.status IN ('ready', 'idle', 'busy') AND s.harness_session_id IS NOT NULL \
               AND s.sandbox_ref IS NOT NULL AND s.runtime = ?2",
        )
        .bind(now_ms())
        .bind(runtime)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((uuid(row, "id")?, row.try_get("core")?)))
            .collect()
    }

    async fn take_sessions(&self, core: &str, epoch: i64, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut taken = Vec::new();
        for id in ids {
            let row: Option<String> = sqlx::query_scalar(
                "INSERT INTO session_owners (session_id, core, epoch, since) \
                 SELECT s.id, ?2, ?3, ?4 FROM sessions s WHERE s.id = ?1 \
                 ON CONFLICT (session_id) DO UPDATE SET core = excluded.core, \
                     epoch = excluded.epoch, since = excluded.since \
                 WHERE session_owners.core = excluded.core OR NOT EXISTS (SELECT 1 FROM cores c \
                     WHERE c.id = session_owners.core AND c.epoch = session_owners.epoch \
                       AND c.expires_at > ?4) \
                 RETURNING session_id",
            )
            .bind(id.to_string())
            .bind(core)
            .bind(epoch)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if row.is_some() {
                taken.push(*id);
            }
        }
        tx.commit().await?;
        Ok(taken)
    }

    async fn release_sessions(&self, core: &str, ids: &[Uuid]) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for id in ids {
            sqlx::query("DELETE FROM session_owners WHERE core = ?1 AND session_id = ?2")
                .bind(core)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn publish_deltas(&self, _origin: &str, _deltas: &[LiveDelta]) -> Result<()> {
        Ok(())
    }

    fn watch_deltas(&self, _session: Uuid) -> super::DeltaWatch {
        super::DeltaWatch::none()
    }

    fn fenced(&self, fence: Fence) -> Arc<dyn Store> {
        Arc::new(SqliteStore {
            fence: Some(fence),
            ..self.clone()
        })
    }

    fn subscribe(&self) -> ChangeFeed {
        ChangeFeed::new(self.changes.subscribe())
    }
}
