//! The production store: Postgres. Sequence numbers come from a per-session counter row updated
//! in the same statement as the insert, so concurrent writers never collide; the change feed is
//! LISTEN/NOTIFY fed by triggers (see the migration), so a notice is sent exactly when the
//! writing transaction commits.

use super::feed::{CHANNEL, FANOUT_CAPACITY};
use super::pg_text::{self, PgJson, decode_opt, decode_text, encode_text};
use super::{
    Backend, Change, ChangeFeed, IngestWrite, Result, Store, StoreError, ask_conflict,
    conflict_text, redact_url,
};
use crate::model::{
    AgentRecord, Ask, AskStatus, CoreInfo, CoreKind, Event, Fence, FileDiff, LiveDelta, Message,
    MessagePatch, NewAsk, NewEvent, NewMessage, NewSession, NewTask, Notice, Session,
    SessionCreation, SessionPatch, SessionQuery, SessionStatus, SessionUsage, Task, TaskQuery,
    TaskStatus, Usage,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, QueryBuilder, Row};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

const SESSION_COLUMNS: &str = "id, agent_id, team, title, status, phase, phase_detail, runtime, \
    sandbox_ref, harness_session_id, failure_reason, \
    ARRAY(SELECT k FROM jsonb_object_keys(env) AS k WHERE k NOT LIKE 'AGENTDECK\\_%') AS env_keys, last_message_seq, last_event_seq, waiting, parent_id, fork_seq, \
    created_at, updated_at, last_activity_at, idle_deadline, stopped_at, command_seq, \
    tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, \
    tokens_cache_write, cost_usd, unpriced, budget_usd";
const MESSAGE_COLUMNS: &str = "id, session_id, seq, role, status, parts, error, harness_message_id, usage, diffs, \
    created_at, \
    updated_at";
const TASK_COLUMNS: &str = "id, kind, session_id, payload, status, attempts, max_attempts, \
    run_at, lease_until, locked_by, completed_by, last_error, dedupe_key, command, created_at, \
    updated_at";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    url: String,
    changes: broadcast::Sender<Change>,
    /// Kept for its drop: the listener stops with the last view of the store.
    _listener: Arc<Listening>,
    /// The sessions whose live text this process watches (see `deltas`).
    deltas: Arc<super::deltas::Hub>,
    /// Set on a fenced view ([`Store::fenced`]): every write checks it first.
    fence: Option<Fence>,
}

/// The change feed's listener, stopped when the last view of the store goes.
struct Listening(tokio::task::JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a write goes: a connection of the pool, or, on a fenced view, a transaction whose first
/// statement checked the fence (and holds it, so that nobody takes it over before the write
/// commits).
enum Writer {
    Plain(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Fenced(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl std::ops::Deref for Writer {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Writer::Plain(conn) => conn,
            Writer::Fenced(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Writer::Plain(conn) => conn,
            Writer::Fenced(tx) => tx,
        }
    }
}

impl Writer {
    /// Makes the write durable (commits a fenced one).
    async fn done(self) -> Result<()> {
        if let Writer::Fenced(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Checks, and holds until the transaction ends, what `fence` says is held.
async fn check_fence(conn: &mut PgConnection, fence: &Fence) -> Result<()> {
    let held = match fence {
        Fence::Role { name, core, epoch } => sqlx::query_scalar::<_, i32>(
            "SELECT 1 FROM roles r JOIN cores c ON c.id = r.core AND c.epoch = r.epoch \
             WHERE r.name = $1 AND r.core = $2 AND r.epoch = $3 AND c.expires_at > now() \
             FOR SHARE OF r",
        )
        .bind(name)
        .bind(core)
        .bind(epoch)
        .fetch_optional(&mut *conn)
        .await?
        .is_some(),
        Fence::Session { id, core, epoch } => sqlx::query_scalar::<_, i32>(
            "SELECT 1 FROM session_owners o JOIN cores c ON c.id = o.core AND c.epoch = o.epoch \
             WHERE o.session_id = $1 AND o.core = $2 AND o.epoch = $3 AND c.expires_at > now() \
             FOR SHARE OF o",
        )
        .bind(id)
        .bind(core)
        .bind(epoch)
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

impl PgStore {
    /// A transaction for a write; on a fenced view, the fence is checked first.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = &self.fence {
            check_fence(&mut tx, fence).await?;
        }
        Ok(tx)
    }

    /// A connection for a write of one statement (in a fenced transaction on a fenced view).
    async fn write(&self) -> Result<Writer> {
        Ok(match &self.fence {
            None => Writer::Plain(self.pool.acquire().await?),
            Some(_) => Writer::Fenced(self.begin().await?),
        })
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

    /// Connects and starts listening for changes; the feed is live when this returns.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let options =
            PgConnectOptions::from_str(url).map_err(|_| StoreError::BadUrl(shown.clone()))?;
        // One plain connection first: a database that is not there is said at once, in words
        // ("connection refused"), where the pool would retry for its whole acquire timeout and
        // then say only that it timed out.
        first_connection(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let (changes, _) = broadcast::channel(FANOUT_CAPACITY);
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let tx = changes.clone();
        let listener = tokio::spawn(async move { run_listener(listener, tx).await });
        Ok(PgStore {
            pool,
            url: shown,
            changes,
            _listener: Arc::new(Listening(listener)),
            deltas: Arc::default(),
            fence: None,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// How long the first connection may take (a host that drops packets answers nothing).
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Connects once, and says why not in words.
async fn first_connection(options: &PgConnectOptions) -> Result<()> {
    use sqlx::Connection;
    let at = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(CONNECT_WAIT, sqlx::PgConnection::connect_with(options)).await {
        Err(_) => Err(StoreError::Unreachable(format!(
            "{at} did not answer within {}s",
            CONNECT_WAIT.as_secs()
        ))),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(StoreError::Unreachable(format!(
                "connection refused: nothing listens at {at} (is Postgres running?)"
            )))
        }
        Ok(Err(sqlx::Error::Io(e))) => Err(StoreError::Unreachable(format!("{at}: {e}"))),
        Ok(Err(sqlx::Error::Database(e))) => Err(StoreError::Unreachable(format!(
            "{at} refused the connection: {}",
            e.message()
        ))),
        Ok(Err(e)) => Err(StoreError::Unreachable(format!("{at}: {e}"))),
    }
}

async fn run_listener(mut listener: PgListener, tx: broadcast::Sender<Change>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notice)) => {
                let _ = tx.send(Change::from_payload(notice.payload()));
            }
            Ok(None) => {
                // The connection dropped; the next call reconnects. Notices sent in between
                // are lost, so everyone re-reads.
                tracing::warn!("change feed connection to Postgres lost; reconnecting");
                let _ = tx.send(Change::Resync);
            }
            Err(err) => {
                tracing::warn!(%err, "change feed cannot reach Postgres; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(Change::Resync);
            }
        }
    }
}

/// Listens on the channels of the sessions whose live text this process watches (a connection
/// of its own, opened at the first watch), and hands what comes to their watchers. Ends with the
/// last view of the store.
async fn listen_for_deltas(
    pool: PgPool,
    hub: std::sync::Weak<super::deltas::Hub>,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<super::deltas::Order>,
) {
    use super::deltas::{Order, channel};
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(listener) => break listener,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for live text; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if hub.strong_count() == 0 {
                    return;
                }
            }
        }
    };
    loop {
        tokio::select! {
            order = orders.recv() => {
                let result = match order {
                    None => return,
                    Some(Order::Listen(id)) => listener.listen(&channel(id)).await,
                    Some(Order::Unlisten(id)) => listener.unlisten(&channel(id)).await,
                };
                if let Err(err) = result {
                    tracing::warn!(%err, "cannot change which sessions' live text is heard");
                }
            }
            notice = listener.try_recv() => match notice {
                Ok(Some(notice)) => match hub.upgrade() {
                    Some(hub) => hub.deliver(notice.channel(), notice.payload()),
                    None => return,
                },
                // Reconnected (and listening again): what was sent meanwhile is in the store.
                Ok(None) => tracing::debug!("live text connection lost; reconnected"),
                Err(err) => {
                    tracing::warn!(%err, "live text cannot be heard; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

fn parse<T: FromStr>(row: &PgRow, column: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse::<T>().map_err(|e| corrupt(column, e))
}

fn session_from_row(row: &PgRow) -> Result<Session> {
    let mut env_keys: Vec<String> = row.try_get("env_keys")?;
    env_keys.sort();
    Ok(Session {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        team: row.try_get("team")?,
        title: decode_text(row.try_get("title")?),
        status: parse(row, "status")?,
        phase: parse(row, "phase")?,
        phase_detail: decode_opt(row.try_get("phase_detail")?),
        runtime: row.try_get("runtime")?,
        sandbox_ref: row.try_get("sandbox_ref")?,
        harness_session_id: row.try_get("harness_session_id")?,
        failure_reason: decode_opt(row.try_get("failure_reason")?),
        env_keys,
        last_message_seq: row.try_get("last_message_seq")?,
        last_event_seq: row.try_get("last_event_seq")?,
        waiting: row.try_get("waiting")?,
        parent_id: row.try_get("parent_id")?,
        fork_seq: row.try_get("fork_seq")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        idle_deadline: row.try_get("idle_deadline")?,
        stopped_at: row.try_get("stopped_at")?,
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

fn ask_from_row(row: &PgRow) -> Result<Ask> {
    let PgJson(detail) = row
        .try_get::<PgJson<serde_json::Value>, _>("detail")
        .map_err(|e| corrupt("ask detail", e))?;
    let answer = row
        .try_get::<Option<PgJson<serde_json::Value>>, _>("answer")
        .map_err(|e| corrupt("ask answer", e))?
        .map(|PgJson(a)| a);
    Ok(Ask {
        session_id: row.try_get("session_id")?,
        id: row.try_get("id")?,
        kind: parse(row, "kind")?,
        status: parse(row, "status")?,
        title: decode_text(row.try_get("title")?),
        detail,
        asked_at: row.try_get("asked_at")?,
        answer,
        message: decode_opt(row.try_get("message")?),
        answered_by: row.try_get("answered_by")?,
        answered_at: row.try_get("answered_at")?,
    })
}

/// Counts a session's waiting asks up or down (and marks it changed, for the change feed).
async fn count_waiting(conn: &mut PgConnection, session: Uuid, by: i32) -> Result<()> {
    sqlx::query(
        "UPDATE sessions SET waiting = greatest(waiting + $2, 0), updated_at = now() WHERE id = $1",
    )
    .bind(session)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn get_ask(conn: &mut PgConnection, session: Uuid, id: &str) -> Result<Option<Ask>> {
    let sql = format!("SELECT {ASK_COLUMNS} FROM asks WHERE session_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(ask_from_row)
        .transpose()
}

fn message_from_row(row: &PgRow) -> Result<Message> {
    let PgJson(parts) = row
        .try_get::<PgJson<_>, _>("parts")
        .map_err(|e| corrupt("message parts", e))?;
    Ok(Message {
        id: row.try_get("id")?,
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        role: parse(row, "role")?,
        status: parse(row, "status")?,
        parts,
        error: decode_opt(row.try_get("error")?),
        harness_message_id: row.try_get("harness_message_id")?,
        usage: row
            .try_get::<Option<PgJson<Usage>>, _>("usage")
            .map_err(|e| corrupt("message usage", e))?
            .map(|PgJson(u)| u),
        diffs: row
            .try_get::<Option<PgJson<Vec<FileDiff>>>, _>("diffs")
            .map_err(|e| corrupt("message diffs", e))?
            .map(|PgJson(d)| d)
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<Event> {
    let PgJson(payload) = row.try_get::<PgJson<serde_json::Value>, _>("payload")?;
    Ok(Event {
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        payload,
    })
}

fn task_from_row(row: &PgRow) -> Result<Task> {
    let PgJson(payload) = row.try_get::<PgJson<serde_json::Value>, _>("payload")?;
    Ok(Task {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        session_id: row.try_get("session_id")?,
        payload,
        status: parse(row, "status")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_at: row.try_get("run_at")?,
        lease_until: row.try_get("lease_until")?,
        locked_by: row.try_get("locked_by")?,
        completed_by: row.try_get("completed_by")?,
        last_error: row.try_get("last_error")?,
        dedupe_key: row.try_get("dedupe_key")?,
        command: row.try_get("command")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn agent_from_row(row: &PgRow) -> Result<AgentRecord> {
    let Json(spec) = row.try_get::<Json<serde_json::Value>, _>("spec")?;
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        harness: row.try_get("harness")?,
        model: row.try_get("model")?,
        spec,
        present: row.try_get("present")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A session's tasks run one at a time, the oldest due first: a task `t` may be claimed when no
/// other task of its session runs and none due was queued before it. (One due later, backing off
/// after a failure, does not hold the others up: an `end` must not wait for a retrying delivery.)
const ONE_AT_A_TIME: &str = "(t.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks o \
    WHERE o.session_id = t.session_id AND o.id <> t.id AND (o.status = 'running' \
      OR (o.status = 'queued' AND o.run_at <= now() AND (o.created_at, o.id) < (t.created_at, t.id)))))";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn statuses_text<T: Copy + std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// --- writes that take part in a caller's transaction

async fn insert_session_in(conn: &mut PgConnection, new: &NewSession) -> Result<Session> {
    let id = new.id.unwrap_or_else(Uuid::now_v7);
    let sql = format!(
        "INSERT INTO sessions (id, agent_id, team, title, status, phase, env, budget_usd) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {SESSION_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(&new.agent_id)
        .bind(&new.team)
        .bind(encode_text(&new.title))
        .bind(SessionStatus::Creating.as_str())
        .bind(crate::model::Phase::CreatingSandbox.as_str())
        .bind(Json(&new.env))
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

/// Applies `p` (with its history event); `None` when there is no such session in the statuses
/// the patch allows.
async fn update_session_in(
    conn: &mut PgConnection,
    id: Uuid,
    p: &SessionPatch,
) -> Result<Option<Session>> {
    // A change of status or phase and its entry in the session's history are one write.
    let log = p.status.is_some() || p.phase.is_some();
    let mut b = QueryBuilder::new("WITH u AS (UPDATE sessions SET updated_at = now()");
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
        b.push(", phase_detail = ")
            .push_bind(v.as_deref().map(|t| encode_text(t).into_owned()));
    }
    if let Some(v) = &p.title {
        b.push(", title = ").push_bind(encode_text(v).into_owned());
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
        b.push(", failure_reason = ")
            .push_bind(v.as_deref().map(|t| encode_text(t).into_owned()));
    }
    if let Some(v) = p.last_activity_at {
        b.push(", last_activity_at = ").push_bind(v);
    }
    if let Some(v) = p.idle_deadline {
        b.push(", idle_deadline = ").push_bind(v);
    }
    if let Some(v) = p.stopped_at {
        b.push(", stopped_at = ").push_bind(v);
    }
    if p.new_command {
        b.push(", command_seq = command_seq + 1");
    }
    b.push(" WHERE id = ").push_bind(id);
    if let Some(command) = p.only_if_command {
        b.push(" AND command_seq = ").push_bind(command);
    }
    if let Some(only) = &p.only_if_status {
        b.push(" AND status = ANY(")
            .push_bind(statuses_text(only))
            .push(")");
    }
    if let Some(not) = p.unless_phase.as_ref().filter(|n| !n.is_empty()) {
        b.push(" AND phase <> ALL(")
            .push_bind(statuses_text(not))
            .push(")");
    }
    b.push(" RETURNING *)");
    if log {
        b.push(
            ", e AS (INSERT INTO events (session_id, seq, kind, payload) \
             SELECT id, last_event_seq, 'session.phase', jsonb_build_object('status', status, \
             'phase', phase, 'detail', phase_detail, 'failure_reason', failure_reason) FROM u)",
        );
    }
    b.push(format!(" SELECT {SESSION_COLUMNS} FROM u"));
    b.build()
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| session_from_row(&row))
        .transpose()
}

async fn append_message_in(
    conn: &mut PgConnection,
    session: Uuid,
    new: &NewMessage,
) -> Result<Message> {
    let sql = format!(
        "WITH s AS (UPDATE sessions SET last_message_seq = last_message_seq + 1, \
             last_activity_at = now() WHERE id = $1 RETURNING last_message_seq) \
         INSERT INTO messages (session_id, seq, id, role, status, parts, harness_message_id) \
         SELECT $1, s.last_message_seq, $2, $3, $4, $5, $6 FROM s RETURNING {MESSAGE_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session)
        .bind(Uuid::now_v7())
        .bind(new.role.as_str())
        .bind(new.status.as_str())
        .bind(PgJson(&new.parts))
        .bind(&new.harness_message_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("session", session))?;
    message_from_row(&row)
}

async fn append_events_in(
    conn: &mut PgConnection,
    session: Uuid,
    events: &[NewEvent],
) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let payloads: Vec<String> = events
        .iter()
        .map(|e| pg_text::encode_json(&e.payload.to_string()).into_owned())
        .collect();
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "WITH s AS (UPDATE sessions SET last_event_seq = last_event_seq + $2 WHERE id = $1 \
             RETURNING last_event_seq - $2 AS base) \
         INSERT INTO events (session_id, seq, kind, payload) \
         SELECT $1, s.base + e.ord, e.kind, e.payload::jsonb \
         FROM s, unnest($3::text[], $4::text[]) WITH ORDINALITY AS e(kind, payload, ord) \
         RETURNING session_id, seq, at, kind, payload",
    )
    .bind(session)
    .bind(n)
    .bind(&kinds)
    .bind(&payloads)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Err(StoreError::not_found("session", session));
    }
    let mut out = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|e| e.seq);
    Ok(out)
}

async fn update_message_in(
    conn: &mut PgConnection,
    session: Uuid,
    seq: i64,
    p: &MessagePatch,
) -> Result<Message> {
    let mut b = QueryBuilder::new("UPDATE messages SET updated_at = now()");
    if let Some(v) = p.status {
        b.push(", status = ").push_bind(v.as_str());
    }
    if let Some(v) = &p.parts {
        b.push(", parts = ").push_bind(PgJson(v.clone()));
    }
    if let Some(v) = &p.error {
        b.push(", error = ")
            .push_bind(v.as_deref().map(|t| encode_text(t).into_owned()));
    }
    if let Some(v) = &p.harness_message_id {
        b.push(", harness_message_id = ").push_bind(v.clone());
    }
    if let Some(v) = &p.usage {
        b.push(", usage = ").push_bind(PgJson(*v));
    }
    if let Some(v) = &p.diffs {
        let json = serde_json::to_string(v).map_err(|e| corrupt("message diffs", e))?;
        b.push(", diffs = ")
            .push_bind(pg_text::encode_json(&json).into_owned())
            .push("::jsonb");
    }
    b.push(" WHERE session_id = ")
        .push_bind(session)
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

/// Ingest's writes of many sessions in one transaction (see [`Store::write_ingest`]): one
/// statement checks every session fence, one appends every session's raw events, one writes
/// every message's parts; only other message changes (a message done) take one each. Any
/// failure fails them all (the caller then writes each alone).
async fn write_ingest_at_once(pool: &PgPool, writes: &[IngestWrite]) -> Result<Vec<Result<()>>> {
    if writes.iter().all(IngestWrite::is_empty) {
        return Ok(writes.iter().map(|_| Ok(())).collect());
    }
    let mut tx = pool.begin().await?;
    let refused = refused_fences(&mut tx, writes).await?;
    let held: Vec<&IngestWrite> = writes
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| !**refused)
        .map(|(w, _)| w)
        .collect();
    append_events_of_many(&mut tx, &held).await?;
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    let mut parts = Vec::new();
    for w in &held {
        for (seq, patch) in &w.messages {
            let only_parts = patch.status.is_none()
                && patch.error.is_none()
                && patch.harness_message_id.is_none()
                && patch.usage.is_none()
                && patch.diffs.is_none();
            match &patch.parts {
                Some(p) if only_parts => {
                    let json = serde_json::to_string(p).map_err(|e| corrupt("message parts", e))?;
                    ids.push(w.session);
                    seqs.push(*seq);
                    parts.push(pg_text::encode_json(&json).into_owned());
                }
                _ => {
                    update_message_in(&mut tx, w.session, *seq, patch).await?;
                }
            }
        }
    }
    if !ids.is_empty() {
        let done = sqlx::query(
            "UPDATE messages m SET parts = u.parts::jsonb, updated_at = now() \
             FROM unnest($1::uuid[], $2::int8[], $3::text[]) AS u(sid, seq, parts) \
             WHERE m.session_id = u.sid AND m.seq = u.seq",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&parts)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != ids.len() as u64 {
            return Err(StoreError::not_found("message", "of an ingest write"));
        }
    }
    tx.commit().await?;
    Ok(writes
        .iter()
        .zip(refused)
        .map(|(w, refused)| match (refused, &w.fence) {
            (true, Some(fence)) => Err(StoreError::Fenced(fence.to_string())),
            _ => Ok(()),
        })
        .collect())
}

/// Which of `writes` are refused: their fence does not hold (checked, and held until the
/// transaction ends, for all the session fences in one statement).
async fn refused_fences(conn: &mut PgConnection, writes: &[IngestWrite]) -> Result<Vec<bool>> {
    let mut refused = vec![false; writes.len()];
    let (mut at, mut ids, mut cores, mut epochs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, w) in writes.iter().enumerate() {
        match &w.fence {
            None => {}
            Some(Fence::Session { id, core, epoch }) => {
                at.push(i);
                ids.push(*id);
                cores.push(core.clone());
                epochs.push(*epoch);
            }
            Some(fence) => match check_fence(conn, fence).await {
                Ok(()) => {}
                Err(StoreError::Fenced(_)) => refused[i] = true,
                Err(err) => return Err(err),
            },
        }
    }
    if ids.is_empty() {
        return Ok(refused);
    }
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT w.i FROM unnest($1::uuid[], $2::text[], $3::int8[]) WITH ORDINALITY \
             AS w(id, core, epoch, i) \
         JOIN session_owners o ON o.session_id = w.id AND o.core = w.core AND o.epoch = w.epoch \
         JOIN cores c ON c.id = o.core AND c.epoch = o.epoch \
         WHERE c.expires_at > now() FOR SHARE OF o",
    )
    .bind(&ids)
    .bind(&cores)
    .bind(&epochs)
    .fetch_all(&mut *conn)
    .await?;
    let held: HashSet<i64> = held.into_iter().collect();
    for (k, i) in at.into_iter().enumerate() {
        refused[i] = !held.contains(&(k as i64 + 1));
    }
    Ok(refused)
}

/// The raw events of many sessions, each session's appended in order after its last, in one
/// statement.
async fn append_events_of_many(conn: &mut PgConnection, writes: &[&IngestWrite]) -> Result<()> {
    let (mut sids, mut ords, mut kinds, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for w in writes {
        for (i, e) in w.events.iter().enumerate() {
            sids.push(w.session);
            ords.push(i as i64 + 1);
            kinds.push(e.kind.as_str());
            payloads.push(pg_text::encode_json(&e.payload.to_string()).into_owned());
        }
    }
    if sids.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(
        "WITH e AS (SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[]) \
                 AS e(sid, ord, kind, payload)), \
              n AS (SELECT sid, count(*) AS n FROM e GROUP BY sid), \
              s AS (UPDATE sessions SET last_event_seq = last_event_seq + n.n FROM n \
                 WHERE sessions.id = n.sid RETURNING sessions.id, last_event_seq - n.n AS base) \
         INSERT INTO events (session_id, seq, kind, payload) \
         SELECT e.sid, s.base + e.ord, e.kind, e.payload::jsonb FROM e JOIN s ON s.id = e.sid",
    )
    .bind(&sids)
    .bind(&ords)
    .bind(&kinds)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != sids.len() as u64 {
        return Err(StoreError::not_found("session", "of an ingest write"));
    }
    Ok(())
}

async fn enqueue_task_in(conn: &mut PgConnection, new: &NewTask) -> Result<Task> {
    let insert = format!(
        "INSERT INTO tasks (id, kind, session_id, payload, status, max_attempts, run_at, dedupe_key, \
             command) \
         VALUES ($1, $2, $3, $4, 'queued', $5, coalesce($6, now()), $7, $8) \
         ON CONFLICT (dedupe_key) WHERE status = 'queued' DO NOTHING RETURNING {TASK_COLUMNS}"
    );
    // A racing enqueue with the same key may finish its task between our insert and our
    // read; try again a few times before giving up.
    for _ in 0..5 {
        let row = sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(Uuid::now_v7())
            .bind(new.kind.as_str())
            .bind(new.session_id)
            .bind(PgJson(&new.payload))
            .bind(new.max_attempts.max(1))
            .bind(new.run_at)
            .bind(&new.dedupe_key)
            .bind(new.command)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            return task_from_row(&row);
        }
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE dedupe_key = $1 AND status = 'queued'");
        if let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&new.dedupe_key)
            .fetch_optional(&mut *conn)
            .await?
        {
            return task_from_row(&row);
        }
    }
    Err(StoreError::Conflict(format!(
        "task with key {:?} keeps changing; try again",
        new.dedupe_key
    )))
}

async fn get_session_in(conn: &mut PgConnection, id: Uuid) -> Result<Option<Session>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn sync_agents(&self, agents: &[AgentRecord]) -> Result<()> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
        sqlx::query("UPDATE agents SET present = false, updated_at = now() WHERE present AND NOT (id = ANY($1))")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        for agent in agents {
            sqlx::query(
                "INSERT INTO agents (id, name, harness, model, spec, present, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, true, now()) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, harness = excluded.harness, \
                 model = excluded.model, spec = excluded.spec, present = true, updated_at = now() \
                 WHERE agents.name IS DISTINCT FROM excluded.name \
                    OR agents.harness IS DISTINCT FROM excluded.harness \
                    OR agents.model IS DISTINCT FROM excluded.model \
                    OR agents.spec IS DISTINCT FROM excluded.spec OR NOT agents.present",
            )
            .bind(&agent.id)
            .bind(&agent.name)
            .bind(&agent.harness)
            .bind(&agent.model)
            .bind(Json(&agent.spec))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn insert_session(&self, new: &NewSession) -> Result<Session> {
        let mut w = self.write().await?;
        let session = insert_session_in(&mut w, new).await?;
        w.done().await?;
        Ok(session)
    }

    async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
        get_session_in(&mut *self.pool.acquire().await?, id).await
    }

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<Session>> {
        let mut b = QueryBuilder::new(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE true"));
        if let Some(teams) = &q.teams {
            b.push(" AND team = ANY(")
                .push_bind(teams.clone())
                .push(")");
        }
        if let Some(agent) = &q.agent_id {
            b.push(" AND agent_id = ").push_bind(agent.clone());
        }
        if let Some(statuses) = &q.statuses {
            b.push(" AND status = ANY(")
                .push_bind(statuses_text(statuses))
                .push(")");
        }
        if let Some(parent) = q.parent {
            b.push(" AND parent_id = ").push_bind(parent);
        }
        if let Some(t) = q.idle_before {
            b.push(" AND idle_deadline < ").push_bind(t);
        }
        if let Some(before) = q.before {
            b.push(" AND id < ").push_bind(before);
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
        let mut w = self.write().await?;
        let updated = update_session_in(&mut w, id, p).await?;
        w.done().await?;
        self.updated_or_why(id, updated).await
    }

    async fn session_env(&self, id: Uuid) -> Result<BTreeMap<String, String>> {
        let row = sqlx::query("SELECT env FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("session", id))?;
        let Json(env) = row
            .try_get::<Json<BTreeMap<String, String>>, _>("env")
            .map_err(|e| corrupt("session env", e))?;
        Ok(env)
    }

    async fn set_session_env(&self, id: Uuid, name: &str, value: Option<&str>) -> Result<()> {
        let mut w = self.write().await?;
        let done = match value {
            Some(v) => sqlx::query("UPDATE sessions SET env = env || jsonb_build_object($2::text, $3::text) WHERE id = $1")
                .bind(id)
                .bind(name)
                .bind(v)
                .execute(&mut *w)
                .await?,
            None => sqlx::query("UPDATE sessions SET env = env - $2::text WHERE id = $1")
                .bind(id)
                .bind(name)
                .execute(&mut *w)
                .await?,
        };
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("session", id));
        }
        w.done().await
    }

    async fn append_message(&self, session: Uuid, new: &NewMessage) -> Result<Message> {
        let mut w = self.write().await?;
        let message = append_message_in(&mut w, session, new).await?;
        w.done().await?;
        Ok(message)
    }

    async fn update_message(&self, session: Uuid, seq: i64, p: &MessagePatch) -> Result<Message> {
        let mut w = self.write().await?;
        let message = update_message_in(&mut w, session, seq, p).await?;
        w.done().await?;
        Ok(message)
    }

    async fn write_ingest(&self, writes: &[IngestWrite]) -> Vec<Result<()>> {
        match write_ingest_at_once(&self.pool, writes).await {
            Ok(results) => results,
            Err(err) if writes.len() > 1 => {
                // One of them failed: each is written alone, so that it fails alone.
                tracing::debug!(%err, count = writes.len(), "a grouped ingest write failed; writing each alone");
                let mut out = Vec::with_capacity(writes.len());
                for w in writes {
                    out.push(
                        match write_ingest_at_once(&self.pool, std::slice::from_ref(w)).await {
                            Ok(mut r) => r.pop().unwrap_or(Ok(())),
                            Err(err) => Err(err),
                        },
                    );
                }
                out
            }
            Err(err) => vec![Err(err)],
        }
    }

    async fn list_messages(&self, session: Uuid, after: i64, limit: i64) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn append_events(&self, session: Uuid, events: &[NewEvent]) -> Result<Vec<Event>> {
        let mut w = self.write().await?;
        let events = append_events_in(&mut w, session, events).await?;
        w.done().await?;
        Ok(events)
    }

    async fn list_events(&self, session: Uuid, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT session_id, seq, at, kind, payload FROM events \
             WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(session)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn latest_events(&self, session: Uuid, kind: &str, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT session_id, seq, at, kind, payload FROM events \
             WHERE session_id = $1 AND kind = $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(session)
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
        let rows = sqlx::query("SELECT id, status FROM sessions WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, parse(row, "status")?)))
            .collect()
    }

    async fn record_ask(&self, session: Uuid, ask: &NewAsk) -> Result<bool> {
        let mut tx = self.begin().await?;
        let known: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
                .bind(session)
                .fetch_optional(&mut *tx)
                .await?;
        if known.is_none() {
            return Err(StoreError::not_found("session", session));
        }
        let new = sqlx::query(
            "INSERT INTO asks (session_id, id, kind, status, title, detail) \
             VALUES ($1, $2, $3, 'pending', $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(session)
        .bind(&ask.id)
        .bind(ask.kind.as_str())
        .bind(encode_text(&ask.title))
        .bind(PgJson(&ask.detail))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if new {
            count_waiting(&mut tx, session, 1).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn list_asks(&self, session: Uuid, pending_only: bool) -> Result<Vec<Ask>> {
        let sql = format!(
            "SELECT {ASK_COLUMNS} FROM asks WHERE session_id = $1 AND ($2 = false OR status = 'pending') \
             ORDER BY asked_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session)
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
            "UPDATE asks SET status = 'answered', answer = $3, message = $4, answered_by = $5, \
             answered_at = now() WHERE session_id = $1 AND id = $2 AND status = 'pending' \
             RETURNING {ASK_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(id)
            .bind(PgJson(answer))
            .bind(message.map(encode_text))
            .bind(by)
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
        ask_from_row(&row)
    }

    async fn reopen_ask(&self, session: Uuid, id: &str, by: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let reopened = sqlx::query(
            "UPDATE asks SET status = 'pending', answer = NULL, message = NULL, answered_by = NULL, \
             answered_at = NULL WHERE session_id = $1 AND id = $2 AND status = 'answered' \
             AND answered_by = $3",
        )
        .bind(session)
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
        let settled = sqlx::query(
            "UPDATE asks SET status = $3, answer = coalesce($4, answer), \
             answered_by = CASE WHEN $3 = 'answered' THEN 'agent' END, answered_at = now() \
             WHERE session_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(session)
        .bind(id)
        .bind(status.as_str())
        .bind(answer.map(PgJson))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if settled {
            count_waiting(&mut tx, session, -1).await?;
        }
        tx.commit().await?;
        Ok(settled)
    }

    async fn enqueue_task(&self, new: &NewTask) -> Result<Task> {
        let mut w = self.write().await?;
        let task = enqueue_task_in(&mut w, new).await?;
        w.done().await?;
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
        Ok((message, task))
    }

    async fn create_session(&self, new: &SessionCreation) -> Result<Session> {
        let mut tx = self.begin().await?;
        let session = insert_session_in(&mut tx, &new.session).await?;
        append_events_in(&mut tx, session.id, std::slice::from_ref(&new.created)).await?;
        if let Some(fork) = &new.fork {
            sqlx::query("UPDATE sessions SET parent_id = $2, fork_seq = $3 WHERE id = $1")
                .bind(session.id)
                .bind(fork.parent)
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
                     last_error = 'superseded by a newer command (' || $2 || ')', updated_at = now() \
                 WHERE session_id = $1 AND status = 'queued' AND command IS NOT NULL",
            )
            .bind(id)
            .bind(task.kind.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let task = enqueue_task_in(&mut tx, &task).await?;
        tx.commit().await?;
        Ok((session, task))
    }

    async fn claim_task(
        &self,
        worker: &str,
        runtime: &str,
        lease: Duration,
        backoff: Duration,
    ) -> Result<Option<Task>> {
        sqlx::query(
            "UPDATE tasks SET \
                 status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                 run_at = now() + $1 * interval '1 millisecond', \
                 last_error = 'lease expired: worker ' || coalesce(locked_by, '?') || ' stopped renewing it', \
                 lease_until = NULL, locked_by = NULL, updated_at = now() \
             WHERE id IN (SELECT id FROM tasks WHERE status = 'running' AND lease_until < now() \
                          FOR UPDATE SKIP LOCKED)",
        )
        .bind(millis(backoff))
        .execute(&self.pool)
        .await?;
        let sql = format!(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = $1, \
                 lease_until = now() + $2 * interval '1 millisecond', updated_at = now() \
             WHERE id = (SELECT t.id FROM tasks t WHERE t.status = 'queued' AND t.run_at <= now() \
                           AND {ONE_AT_A_TIME} \
                           AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = t.session_id \
                             AND s.runtime IS NOT NULL AND s.runtime <> $3) \
                         ORDER BY t.run_at, t.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {TASK_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(millis(lease))
            .bind(runtime)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn renew_lease(&self, id: Uuid, worker: &str, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET lease_until = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(millis(lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_task(&self, id: Uuid, worker: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET status = 'done', completed_by = $2, locked_by = NULL, \
                 lease_until = NULL, updated_at = now() \
             WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
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
        let row = sqlx::query(
            "UPDATE tasks SET \
                 status = CASE WHEN $5 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                 run_at = now() + $4 * interval '1 millisecond', last_error = $3, \
                 locked_by = NULL, lease_until = NULL, updated_at = now() \
             WHERE id = $1 AND locked_by = $2 AND status = 'running' RETURNING status",
        )
        .bind(id)
        .bind(worker)
        .bind(error)
        .bind(millis(retry_in))
        .bind(permanent)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(|r| parse(r, "status")).transpose()
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
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
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE (replace(id::text, '-', '') LIKE $1 OR replace(id::text, '-', '') LIKE $2) \
               AND ($3::text[] IS NULL OR team = ANY($3)) \
             ORDER BY id DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(format!("{fragment}%"))
            .bind(format!("%{fragment}"))
            .bind(teams.map(|t| t.to_vec()))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn usage_totals(&self) -> Result<Vec<super::UsageTotal>> {
        let rows = sqlx::query(
            "SELECT team, agent_id, count(*)::bigint AS sessions, \
                 coalesce(sum(tokens_input), 0)::bigint AS input, \
                 coalesce(sum(tokens_output), 0)::bigint AS output, \
                 coalesce(sum(tokens_reasoning), 0)::bigint AS reasoning, \
                 coalesce(sum(tokens_cache_read), 0)::bigint AS cache_read, \
                 coalesce(sum(tokens_cache_write), 0)::bigint AS cache_write, \
                 coalesce(sum(cost_usd), 0)::float8 AS cost, coalesce(sum(unpriced), 0)::bigint AS unpriced \
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
            "SELECT coalesce(sum((m.usage ->> 'cost')::float8), 0) FROM messages m \
             JOIN sessions s ON s.id = m.session_id \
             WHERE s.team = $1 AND m.usage IS NOT NULL AND m.updated_at >= $2",
        )
        .bind(team)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_notices(&self, limit: i64) -> Result<Vec<Notice>> {
        let rows = sqlx::query(
            "SELECT n.id, n.session_id, s.team, n.event, n.at FROM notices n \
             JOIN sessions s ON s.id = n.session_id ORDER BY n.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let event: String = row.try_get("event")?;
                Ok(Notice {
                    id: row.try_get("id")?,
                    session_id: row.try_get("session_id")?,
                    team: row.try_get("team")?,
                    event: event
                        .parse()
                        .map_err(|e| StoreError::Corrupt(format!("notice: {e}")))?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }

    async fn hand_on_notices(&self, upto: i64, tasks: &[NewTask]) -> Result<()> {
        let mut tx = self.begin().await?;
        for task in tasks {
            enqueue_task_in(&mut tx, task).await?;
        }
        sqlx::query("DELETE FROM notices WHERE id <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<Task>> {
        let mut b = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE true"));
        if let Some(statuses) = &q.statuses {
            b.push(" AND status = ANY(")
                .push_bind(statuses_text(statuses))
                .push(")");
        }
        if let Some(kind) = &q.kind {
            b.push(" AND kind = ").push_bind(kind.clone());
        }
        if let Some(session) = q.session_id {
            b.push(" AND session_id = ").push_bind(session);
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
        // A lease that ran out starts a new epoch: what the core held before is void. A first
        // epoch is the time in ms, so that a core whose row was cleaned away never meets its
        // old epoch again.
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO cores (id, kind, fleet, epoch, expires_at) \
             VALUES ($1, $2, $3, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, \
                     now() + $4 * interval '1 millisecond') \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, fleet = excluded.fleet, \
                 renewed_at = now(), expires_at = excluded.expires_at, \
                 epoch = CASE WHEN cores.expires_at > now() THEN cores.epoch ELSE cores.epoch + 1 END \
             RETURNING epoch",
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(fleet)
        .bind(millis(lease))
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch)
    }

    async fn leave(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM session_owners WHERE core = $1",
            "DELETE FROM roles WHERE core = $1",
            "DELETE FROM cores WHERE id = $1 OR expires_at < now() - interval '1 day'",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_cores(&self) -> Result<Vec<CoreInfo>> {
        let rows = sqlx::query(
            "SELECT c.id, c.kind, c.fleet, c.epoch, c.started_at, c.expires_at, \
                 (SELECT count(*) FROM session_owners o WHERE o.core = c.id AND o.epoch = c.epoch) \
                     AS sessions, \
                 ARRAY(SELECT r.name FROM roles r WHERE r.core = c.id AND r.epoch = c.epoch \
                       ORDER BY r.name) AS roles \
             FROM cores c WHERE c.expires_at > now() ORDER BY c.started_at, c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CoreInfo {
                    id: row.try_get("id")?,
                    kind: parse(row, "kind")?,
                    fleet: row.try_get("fleet")?,
                    epoch: row.try_get("epoch")?,
                    started_at: row.try_get("started_at")?,
                    expires_at: row.try_get("expires_at")?,
                    sessions: row.try_get("sessions")?,
                    roles: row.try_get("roles")?,
                })
            })
            .collect()
    }

    async fn take_role(&self, name: &str, core: &str, epoch: i64) -> Result<bool> {
        let holder: Option<String> = sqlx::query_scalar(
            "INSERT INTO roles (name, core, epoch) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET core = excluded.core, epoch = excluded.epoch \
             WHERE roles.core = excluded.core OR NOT EXISTS (SELECT 1 FROM cores c \
                 WHERE c.id = roles.core AND c.epoch = roles.epoch AND c.expires_at > now()) \
             RETURNING core",
        )
        .bind(name)
        .bind(core)
        .bind(epoch)
        .fetch_optional(&self.pool)
        .await?;
        Ok(holder.is_some())
    }

    async fn release_role(&self, name: &str, core: &str) -> Result<()> {
        sqlx::query("DELETE FROM roles WHERE name = $1 AND core = $2")
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
             LEFT JOIN cores c ON c.id = o.core AND c.epoch = o.epoch AND c.expires_at > now() \
             WHERE s.status IN ('ready', 'idle', 'busy') AND s.harness_session_id IS NOT NULL \
               AND s.sandbox_ref IS NOT NULL AND s.runtime = $1",
        )
        .bind(runtime)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("core")?)))
            .collect()
    }

    async fn take_sessions(&self, core: &str, epoch: i64, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let taken = sqlx::query_scalar(
            "INSERT INTO session_owners (session_id, core, epoch) \
             SELECT s.id, $1, $2 FROM sessions s WHERE s.id = ANY($3) \
             ON CONFLICT (session_id) DO UPDATE SET core = excluded.core, epoch = excluded.epoch, \
                 since = now() \
             WHERE session_owners.core = excluded.core OR NOT EXISTS (SELECT 1 FROM cores c \
                 WHERE c.id = session_owners.core AND c.epoch = session_owners.epoch \
                   AND c.expires_at > now()) \
             RETURNING session_id",
        )
        .bind(core)
        .bind(epoch)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(taken)
    }

    async fn release_sessions(&self, core: &str, ids: &[Uuid]) -> Result<()> {
        sqlx::query("DELETE FROM session_owners WHERE core = $1 AND session_id = ANY($2)")
            .bind(core)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn publish_deltas(&self, origin: &str, deltas: &[LiveDelta]) -> Result<()> {
        let notices = super::deltas::encode(origin, deltas);
        if notices.is_empty() {
            return Ok(());
        }
        let (channels, payloads): (Vec<String>, Vec<String>) = notices.into_iter().unzip();
        // One statement, outside a transaction: sent as it completes.
        sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)")
            .bind(&channels)
            .bind(&payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn watch_deltas(&self, session: Uuid) -> super::DeltaWatch {
        let (orders, rx) = tokio::sync::mpsc::unbounded_channel();
        if self.deltas.start(orders)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let pool = self.pool.clone();
            let hub = Arc::downgrade(&self.deltas);
            runtime.spawn(listen_for_deltas(pool, hub, rx));
        }
        super::DeltaWatch::of(&self.deltas, session)
    }

    fn fenced(&self, fence: Fence) -> Arc<dyn Store> {
        Arc::new(PgStore {
            fence: Some(fence),
            ..self.clone()
        })
    }

    fn subscribe(&self) -> ChangeFeed {
        ChangeFeed::new(self.changes.subscribe())
    }
}
