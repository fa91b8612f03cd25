//! What the core benchmarks share: a stand-in sandbox runtime that answers at once, a stand-in
//! harness that plays a scripted stream of opencode-like bus events, a Postgres database of
//! their own (dropped afterwards), a temporary SQLite file, and the process's CPU time; and,
//! for the benches of the real binary, a tmux server of their own (`tmux`) and `agentdeck
//! serve` as a process with the bytes on its connections (`served`).
//! The stand-ins are named as what they are; the core, the store and the cockpit are the real
//! ones. (Benches cannot use tests/common, so the little they need is here.)
#![allow(dead_code)]

pub mod served;
pub mod tmux;

use agentdeck::config::{AgentSpec, Config, Dirs};
use agentdeck::harness::{
    Endpoint, EventStream, GatewayAccess, Harness, HarnessError, HarnessEvent, HarnessMessage,
    MessageInfo, Prompt, Update,
};
use agentdeck::model::{MessageRole, Part, ToolStatus};
use agentdeck::runtime::{
    Check, HealthChange, HealthPhase, ListedSandbox, LogOptions, LogStream, RuntimeError,
    SandboxHealth, SandboxRef, SandboxRuntime, SandboxSpec,
};
use agentdeck::store::Store;
use async_trait::async_trait;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

/// The runtime kind the stand-in reports (sessions seeded with it are its sandboxes).
pub const STAND_IN: &str = "stand-in";
/// The harness's session id of every seeded live session.
pub const HARNESS_SESSION: &str = "ses_bench";

/// `cargo bench` passes `--bench`; without it (`cargo test --all-targets`, nextest) each
/// benchmark runs once as a smoke test, on small data.
pub fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A sandbox runtime that answers every call at once: every sandbox is ready, with a harness
/// endpoint; `list` returns what the bench put in `listed`.
pub struct InstantRuntime {
    pub listed: Mutex<Vec<ListedSandbox>>,
    changes: tokio::sync::broadcast::Sender<HealthChange>,
}

impl Default for InstantRuntime {
    fn default() -> Self {
        InstantRuntime {
            listed: Mutex::default(),
            changes: tokio::sync::broadcast::channel(16).0,
        }
    }
}

#[async_trait]
impl SandboxRuntime for InstantRuntime {
    fn kind(&self) -> &'static str {
        STAND_IN
    }
    async fn provision(&self, spec: &SandboxSpec) -> Result<SandboxRef, RuntimeError> {
        Ok(SandboxRef {
            runtime: STAND_IN.into(),
            name: format!("sbx-{}", spec.session_id),
        })
    }
    async fn health(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        let mut health = SandboxHealth::new(HealthPhase::Ready);
        health.endpoint = Some(format!("stand-in://{}", sandbox.name));
        Ok(health)
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<HealthChange> {
        self.changes.subscribe()
    }
    async fn list(&self) -> Result<Vec<ListedSandbox>, RuntimeError> {
        self.listed
            .lock()
            .map(|l| l.clone())
            .map_err(|_| RuntimeError::Transient("poisoned".into()))
    }
    async fn logs(&self, sandbox: &SandboxRef, _: LogOptions) -> Result<LogStream, RuntimeError> {
        Err(RuntimeError::Unavailable(format!(
            "the stand-in runtime keeps no logs for {}",
            sandbox.name
        )))
    }
    async fn restart(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn suspend(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn resume(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn destroy(&self, _: &SandboxRef) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn check(&self) -> Vec<Check> {
        Vec::new()
    }
}

/// A harness whose event bus plays what the bench sends into it (one bus: the first `events`
/// call takes it; a later one gets a bus that stays silent). Its conversation list is empty.
pub struct ScriptedHarness {
    bus: Mutex<Option<mpsc::UnboundedReceiver<HarnessEvent>>>,
    /// Told when the core subscribed to the bus.
    pub subscribed: Arc<Notify>,
}

impl ScriptedHarness {
    /// The harness, and the sender that feeds its bus.
    pub fn new() -> (ScriptedHarness, mpsc::UnboundedSender<HarnessEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            ScriptedHarness {
                bus: Mutex::new(Some(rx)),
                subscribed: Arc::new(Notify::new()),
            },
            tx,
        )
    }
}

#[async_trait]
impl Harness for ScriptedHarness {
    async fn health(&self, _: &Endpoint) -> Result<(), HarnessError> {
        Ok(())
    }
    async fn create_session(&self, _: &Endpoint, _: &str) -> Result<String, HarnessError> {
        Ok(HARNESS_SESSION.into())
    }
    async fn has_session(&self, _: &Endpoint, _: &str) -> Result<bool, HarnessError> {
        Ok(true)
    }
    async fn send(&self, _: &Endpoint, _: &str, _: &Prompt) -> Result<(), HarnessError> {
        Ok(())
    }
    async fn abort(&self, _: &Endpoint, _: &str) -> Result<(), HarnessError> {
        Ok(())
    }
    async fn messages(&self, _: &Endpoint, _: &str) -> Result<Vec<HarnessMessage>, HarnessError> {
        Ok(Vec::new())
    }
    async fn events(&self, _: &Endpoint) -> Result<EventStream, HarnessError> {
        let bus = self.bus.lock().ok().and_then(|mut b| b.take());
        self.subscribed.notify_one();
        Ok(match bus {
            Some(rx) => Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|e| (Ok(e), rx))
            })),
            None => Box::pin(futures::stream::pending()),
        })
    }
    fn sandbox_files(&self, _: &AgentSpec, _: &GatewayAccess) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn auth_env(&self, _: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// A harness per sandbox: the bus of sandbox `sbx-<session id>` plays what the bench sends into
/// that session's sender ([`BusHarness::bus`]); a sandbox with no bus stays silent. One
/// subscriber at a time reads a bus; when it lets go (its core gave the session up), the next
/// one to subscribe reads on from there (what was sent meanwhile waits for it, as a harness's
/// message list would give it back). Its conversation lists are empty.
#[derive(Default)]
pub struct BusHarness {
    buses: Arc<Mutex<BTreeMap<String, mpsc::UnboundedReceiver<HarnessEvent>>>>,
}

impl BusHarness {
    /// The sender that feeds the bus of `session`'s sandbox.
    pub fn bus(&self, session: Uuid) -> mpsc::UnboundedSender<HarnessEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut buses) = self.buses.lock() {
            buses.insert(format!("stand-in://sbx-{session}"), rx);
        }
        tx
    }

    /// How many buses nobody reads now.
    pub fn unclaimed(&self) -> usize {
        self.buses.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// A subscriber's hold on a bus: the bus goes back when it is dropped.
struct Subscription {
    url: String,
    rx: Option<mpsc::UnboundedReceiver<HarnessEvent>>,
    home: Arc<Mutex<BTreeMap<String, mpsc::UnboundedReceiver<HarnessEvent>>>>,
}

impl futures::Stream for Subscription {
    type Item = Result<HarnessEvent, HarnessError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx).map(|e| e.map(Ok)),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let (Some(rx), Ok(mut home)) = (self.rx.take(), self.home.lock()) {
            home.insert(std::mem::take(&mut self.url), rx);
        }
    }
}

#[async_trait]
impl Harness for BusHarness {
    async fn health(&self, _: &Endpoint) -> Result<(), HarnessError> {
        Ok(())
    }
    async fn create_session(&self, _: &Endpoint, _: &str) -> Result<String, HarnessError> {
        Ok(HARNESS_SESSION.into())
    }
    async fn has_session(&self, _: &Endpoint, _: &str) -> Result<bool, HarnessError> {
        Ok(true)
    }
    async fn send(&self, _: &Endpoint, _: &str, _: &Prompt) -> Result<(), HarnessError> {
        Ok(())
    }
    async fn abort(&self, _: &Endpoint, _: &str) -> Result<(), HarnessError> {
        Ok(())
    }
    async fn messages(&self, _: &Endpoint, _: &str) -> Result<Vec<HarnessMessage>, HarnessError> {
        Ok(Vec::new())
    }
    async fn events(&self, endpoint: &Endpoint) -> Result<EventStream, HarnessError> {
        let bus = self
            .buses
            .lock()
            .ok()
            .and_then(|mut b| b.remove(&endpoint.url));
        Ok(match bus {
            Some(rx) => Box::pin(Subscription {
                url: endpoint.url.clone(),
                rx: Some(rx),
                home: self.buses.clone(),
            }),
            None => Box::pin(futures::stream::pending()),
        })
    }
    fn sandbox_files(&self, _: &AgentSpec, _: &GatewayAccess) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn auth_env(&self, _: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

// ----------------------------------------------------------------- opencode-like bus events

fn event(kind: &str, payload: serde_json::Value, update: Update) -> HarnessEvent {
    HarnessEvent {
        session: Some(HARNESS_SESSION.into()),
        kind: kind.into(),
        payload,
        update,
    }
}

/// `message.updated` of a message (`done`: its `time.completed` is set).
pub fn message_updated(id: &str, role: MessageRole, done: bool) -> HarnessEvent {
    let role_text = match role {
        MessageRole::User => "user",
        _ => "assistant",
    };
    let completed = done.then_some(1_790_000_123_456i64);
    event(
        "message.updated",
        json!({"info": {
            "id": id, "sessionID": HARNESS_SESSION, "role": role_text,
            "time": {"created": 1_790_000_000_000i64, "completed": completed},
            "modelID": "mock-gpt", "providerID": "litellm", "mode": "build",
            "cost": 0.0012, "tokens": {"input": 1830, "output": 412, "reasoning": 0,
                "cache": {"read": 0, "write": 0}},
            "path": {"cwd": "/workspace", "root": "/workspace"}
        }}),
        Update::Message(MessageInfo {
            id: id.into(),
            role,
            done,
            error: None,
            aborted: false,
            usage: None,
            diffs: None,
        }),
    )
}

/// `message.part.updated` of a text (or reasoning) part with its whole text so far.
pub fn text_part(message: &str, part: &str, text: &str, reasoning: bool) -> HarnessEvent {
    let kind = if reasoning { "reasoning" } else { "text" };
    event(
        "message.part.updated",
        json!({"part": {
            "id": part, "sessionID": HARNESS_SESSION, "messageID": message, "type": kind,
            "text": text, "time": {"start": 1_790_000_000_100i64}
        }}),
        Update::Part {
            message_id: message.into(),
            part_id: part.into(),
            part: if reasoning {
                Part::Reasoning { text: text.into() }
            } else {
                Part::Text { text: text.into() }
            },
        },
    )
}

/// `message.part.delta`: text appended to a part.
pub fn delta(message: &str, part: &str, text: &str) -> HarnessEvent {
    event(
        "message.part.delta",
        json!({"sessionID": HARNESS_SESSION, "messageID": message, "partID": part,
            "field": "text", "delta": text}),
        Update::Delta {
            message_id: message.into(),
            part_id: part.into(),
            field: "text".into(),
            delta: text.into(),
        },
    )
}

/// `message.part.updated` of a tool call (`bash`) in a state; completed ones have output.
pub fn tool_part(message: &str, part: &str, status: ToolStatus, output: &str) -> HarnessEvent {
    let (state, out) = match status {
        ToolStatus::Pending => ("pending", None),
        ToolStatus::Running => ("running", None),
        ToolStatus::Completed => ("completed", Some(output.to_string())),
        ToolStatus::Error | ToolStatus::Stopped => ("error", None),
    };
    let command = format!("cargo test -p module{}", part.len());
    event(
        "message.part.updated",
        json!({"part": {
            "id": part, "sessionID": HARNESS_SESSION, "messageID": message, "type": "tool",
            "tool": "bash", "callID": format!("call_{part}"),
            "state": {"status": state, "input": {"command": command, "description": "run the tests"},
                "output": out, "metadata": {"exit": 0}, "title": "run the tests"}
        }}),
        Update::Part {
            message_id: message.into(),
            part_id: part.into(),
            part: Part::Tool {
                call_id: format!("call_{part}"),
                tool: "bash".into(),
                status,
                input: json!({"command": command, "description": "run the tests"}),
                output: out,
                error: None,
                started_at: None,
                ended_at: None,
            },
        },
    )
}

/// `message.part.updated` of a step boundary (`step-start` / `step-finish`), kept as `Other`.
pub fn step_part(message: &str, part: &str, finish: bool) -> HarnessEvent {
    let raw = if finish {
        json!({"id": part, "sessionID": HARNESS_SESSION, "messageID": message,
            "type": "step-finish", "reason": "stop", "cost": 0.0012,
            "tokens": {"input": 1830, "output": 412, "reasoning": 0, "cache": {"read": 0, "write": 0}}})
    } else {
        json!({"id": part, "sessionID": HARNESS_SESSION, "messageID": message,
            "type": "step-start"})
    };
    event(
        "message.part.updated",
        json!({ "part": raw.clone() }),
        Update::Part {
            message_id: message.into(),
            part_id: part.into(),
            part: Part::Other(raw),
        },
    )
}

/// `session.status` busy.
pub fn busy() -> HarnessEvent {
    event(
        "session.status",
        json!({"sessionID": HARNESS_SESSION, "status": {"type": "busy"}}),
        Update::Busy,
    )
}

/// `session.idle`: the turn is over.
pub fn idle() -> HarnessEvent {
    event(
        "session.idle",
        json!({ "sessionID": HARNESS_SESSION }),
        Update::Idle,
    )
}

// ------------------------------------------------------------------------------ stores

/// The server the Postgres benches use (trust auth on these machines); override with
/// AGENTDECK_TEST_PG, as the tests do.
pub fn pg_admin_url() -> String {
    std::env::var("AGENTDECK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one bench, dropped when this is dropped.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        use sqlx::Connection;
        let admin = pg_admin_url();
        let name = format!("agentdeck_bench_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("Postgres is needed for this benchmark at {admin}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the bench database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = pg_admin_url();
        let name = self.name.clone();
        // Drop may run inside a runtime: use a thread (and a runtime) of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                Some(())
            })
        })
        .join();
    }
}

/// A store to bench on, kept alive (and cleaned up) with it.
pub enum BenchDb {
    Pg(PgDb),
    Sqlite(tempfile::TempDir),
}

impl BenchDb {
    pub async fn postgres() -> BenchDb {
        BenchDb::Pg(PgDb::create().await)
    }
    pub fn sqlite() -> BenchDb {
        BenchDb::Sqlite(tempfile::tempdir().expect("a temp dir for the SQLite store"))
    }
    pub fn url(&self) -> String {
        match self {
            BenchDb::Pg(db) => db.url.clone(),
            BenchDb::Sqlite(dir) => {
                format!("sqlite://{}", dir.path().join("agentdeck.db").display())
            }
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            BenchDb::Pg(_) => "postgres",
            BenchDb::Sqlite(_) => "sqlite",
        }
    }
    /// A new, migrated store on this database.
    pub async fn open(&self) -> Arc<dyn Store> {
        let store = agentdeck::store::open(&self.url())
            .await
            .expect("open the store");
        store.migrate().await.expect("migrate the store");
        store
    }
}

/// The built-in configuration plus `text`, with directories under `root` (no real home).
pub fn config(text: &str, database_url: &str, root: &Path) -> Config {
    let dirs = Dirs {
        config_dir: root.join("config"),
        data_dir: root.join("data"),
        state_dir: root.join("state"),
        cache_dir: root.join("cache"),
    };
    let mut config =
        agentdeck::config::load_text(text, "bench.toml", dirs).expect("the bench's config");
    config.database_url = database_url.to_string();
    config
}

/// A live session (ready, with a sandbox on the stand-in runtime and a harness session), as
/// the worker leaves one after provisioning; made through the store API.
pub async fn live_session(store: &Arc<dyn Store>, title: &str) -> Uuid {
    use agentdeck::model::{NewSession, Phase, SessionPatch, SessionStatus};
    let s = store
        .insert_session(&NewSession {
            agent_id: "opencode".into(),
            team: "bench".into(),
            title: title.into(),
            ..Default::default()
        })
        .await
        .expect("insert a session");
    let patch = SessionPatch {
        runtime: Some(Some(STAND_IN.into())),
        sandbox_ref: Some(Some(format!("sbx-{}", s.id))),
        harness_session_id: Some(Some(HARNESS_SESSION.into())),
        ..SessionPatch::status(SessionStatus::Ready, Phase::Ready)
    };
    store
        .update_session(s.id, &patch)
        .await
        .expect("make the session live");
    s.id
}

/// CPU time (user + system) `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`) has used so far.
fn cpu_of(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) this process has used so far, all threads.
pub fn process_cpu() -> Duration {
    cpu_of(libc::RUSAGE_SELF)
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    cpu_of(libc::RUSAGE_THREAD)
}

/// Transactions Postgres counted for database `db` so far (committed and rolled back).
pub async fn committed(admin: &sqlx::PgPool, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap_or(0)
}

/// CPU time the Postgres server's backends for `db` have used so far (clock ticks → time).
pub async fn server_cpu(admin: &sqlx::PgPool, db: &str) -> Duration {
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .fetch_all(admin)
        .await
        .unwrap_or_default();
    // SAFETY: sysconf reads a constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // after the command's closing parenthesis: state is field 3, utime 14, stime 15
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += get(11) + get(12);
    }
    Duration::from_secs_f64(ticks as f64 / tick)
}

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
