//! The control core: the one API that the cockpit, the CLI and the REST API call.
//!
//! Every command is written to the store first and carried out by the worker through a task,
//! so that it survives a crash of whoever asked: a session created here is provisioned even if
//! this process dies the next moment, by this core or by any other on the same store. A
//! command's new status, its history event and its task are one transaction.
//!
//! Where a session may go is the model's to say (`model::Command`, `model::Transition`): the
//! verbs here, `lifecycle` (the worker's task handlers), `ingest` (the harness's event bus) and
//! the `reconciler` all ask it, and write with the statuses it allows as a compare-and-set, so
//! that two writers racing cannot take a session where the machine does not go. The front ends
//! see only this module's vocabulary (`Change`, `FleetRow`, `Diagnosis`) and the model's.

mod asks;
mod diagnose;
mod error;
pub mod fleet;
mod fork;
pub mod ingest;
mod ingest_writes;
mod lifecycle;
pub mod live;
mod reconciler;
mod reload;
mod warm;
pub mod webhooks;
pub mod worker;

/// The change feed, as the front ends see it: what changed, and a subscription to it.
pub use crate::store::{Change, ChangeFeed};

/// One row of the fleet's health: the session, its title, and its sandbox's health or why it
/// could not be read.
pub type FleetRow = (
    Uuid,
    String,
    std::result::Result<crate::model::SandboxHealth, String>,
);
pub use crate::runtime::{AttachedShell, Shell, ShellExit, ShellInput, ShellOptions};
pub use diagnose::{Diagnosis, ago, failure_advice};
pub use error::{CoreError, Result};
pub use reload::Reloaded;

use crate::config::{AgentSpec, Config};
use crate::harness::Harness;
use crate::model::env;
use crate::model::{
    Command, Event, Message, MessageRole, MessageStatus, NewEvent, NewMessage, NewSession, NewTask,
    Part, Session, SessionCreation, SessionPatch, SessionQuery, SessionStatus, Task, TaskKind,
    TaskStatus,
};
use crate::runtime::SandboxRuntime;
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Where a sandbox finds its gateway key (set by agentdeck; users cannot set AGENTDECK_*).
pub const GATEWAY_KEY_ENV: &str = "AGENTDECK_GATEWAY_KEY";
/// The password a session's harness asks for, made by agentdeck when it first provisions the
/// sandbox and kept in the session's env (users cannot set AGENTDECK_*). The sandbox gets it
/// under the harness's own names ([`crate::harness::Harness::auth_env`]), never under this one.
pub const HARNESS_PASSWORD_ENV: &str = "AGENTDECK_HARNESS_PASSWORD";
/// Set when that key is a virtual key agentdeck made and must revoke.
pub const GATEWAY_KEY_VIRTUAL_ENV: &str = "AGENTDECK_GATEWAY_KEY_VIRTUAL";

/// How a replayed history starts (the harness echoes it as a user message; ingest skips it).
pub(crate) const REPLAY_PREFIX: &str = "[agentdeck] This conversation is being restored";

/// Longest title kept; longer ones are cut.
const MAX_TITLE_CHARS: usize = 200;
/// Largest message an operator may send.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What it takes to start a session.
#[derive(Debug, Clone, Default)]
pub struct CreateSession {
    /// The agent to run; the configured default agent when absent.
    pub agent_id: Option<String>,
    pub title: Option<String>,
    pub initial_prompt: Option<String>,
    pub env: BTreeMap<String, String>,
    /// The team the session belongs to; the configured default team when absent.
    pub team: Option<String>,
}

#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
    /// The store, or a fenced view of it for work done under a lease ([`Core::fenced`]).
    store: Arc<dyn Store>,
}

struct Inner {
    /// Swapped whole by a reload ([`reload`]); readers take the one in effect.
    config: std::sync::RwLock<Arc<Config>>,
    runtime: Arc<dyn SandboxRuntime>,
    harness: Arc<dyn Harness>,
    gateway: Option<Arc<crate::gateway::Gateway>>,
    deltas: tokio::sync::broadcast::Sender<ingest::LiveDelta>,
    /// `CONTAINER_ENV_*` of this process, prefix stripped, read once.
    container_env: BTreeMap<String, String>,
    instance: String,
    /// This process's place in the fleet, while it runs fleet work (see [`fleet`]).
    standing: tokio::sync::watch::Sender<Option<fleet::Standing>>,
    /// A warm sandbox was claimed: its pool is one short.
    claimed: tokio::sync::Notify,
}

/// A name for this process that other cores can read in a task's `locked_by`.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    let tag: u32 = rand::random();
    format!("{host}:{}:{tag:08x}", std::process::id())
}

/// A store write made on the side of other work (ingest, lifecycle, the reconciler), whose
/// failure must not stop that work but must not vanish either. A conflict (the session moved on,
/// so the write no longer applies) or a session that is gone is expected and dropped; anything
/// else (a dropped connection, a busy database) is tried again twice, 200 then 400 ms later,
/// then logged with what was being written and left to the next pass.
pub(crate) async fn write_aside<T, F, Fut>(what: &str, session: Uuid, mut write: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::store::Result<T>>,
{
    let mut wait = std::time::Duration::from_millis(200);
    for attempt in 1..=3 {
        match write().await {
            Ok(value) => return Some(value),
            Err(crate::store::StoreError::Conflict(why)) => {
                tracing::debug!(session = %session, %why, "{what}: no longer applies");
                return None;
            }
            // Made under a lease this process no longer holds: another one does the work now.
            Err(e @ crate::store::StoreError::Fenced(_)) => {
                tracing::debug!(session = %session, error = %e, "{what}: not ours any more");
                return None;
            }
            Err(e) if e.is_not_found() => return None,
            Err(e) if attempt < 3 => {
                tracing::debug!(session = %session, error = %e, attempt, "{what}: trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "{what}: the store refused it three times; left for the next pass");
            }
        }
    }
    None
}

impl Core {
    /// Opens the configured store, runs its migrations and records the configured agents.
    pub async fn open(
        config: Config,
        runtime: Arc<dyn SandboxRuntime>,
        harness: Arc<dyn Harness>,
    ) -> anyhow::Result<Core> {
        use anyhow::Context;
        let store = crate::store::open(&config.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the store at {}",
                    crate::store::redact_url(&config.database_url)
                )
            })?;
        store
            .migrate()
            .await
            .context("cannot bring the database schema up to date")?;
        let core = Core::with_store(config, store, runtime, harness);
        core.sync_agents().await?;
        Ok(core)
    }

    /// A core over an already open (and migrated) store.
    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        runtime: Arc<dyn SandboxRuntime>,
        harness: Arc<dyn Harness>,
    ) -> Core {
        Core {
            store: store.clone(),
            inner: Arc::new(Inner {
                gateway: crate::gateway::Gateway::new(config.gateway.clone())
                    .ok()
                    .filter(|g| g.config().url.is_some())
                    .map(Arc::new),
                deltas: tokio::sync::broadcast::channel(4096).0,
                container_env: env::from_prefixed(std::env::vars()),
                config: std::sync::RwLock::new(Arc::new(config)),
                runtime,
                harness,
                instance: instance_name(),
                standing: tokio::sync::watch::channel(None).0,
                claimed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The configuration in effect (a reload swaps it; what needs a restart stays as it was
    /// at start, see [`reload`]).
    pub fn config(&self) -> Arc<Config> {
        match self.inner.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The store, for the core's own parts (worker, ingest, lifecycle); front ends use the
    /// methods below.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This core with every store write fenced by `fence` (work done under a lease).
    pub(crate) fn fenced(&self, fence: crate::model::Fence) -> Core {
        Core {
            inner: self.inner.clone(),
            store: self.store.fenced(fence),
        }
    }

    pub(crate) fn runtime(&self) -> &Arc<dyn SandboxRuntime> {
        &self.inner.runtime
    }

    /// Where the store is, safe to show (no password).
    pub fn store_description(&self) -> String {
        self.store.describe()
    }

    /// Which sandbox runtime this is: `kubernetes` or `local`.
    pub fn runtime_kind(&self) -> &'static str {
        self.inner.runtime.kind()
    }

    /// The runtime's context, where it has one (the kubeconfig context, or `in-cluster`).
    pub fn runtime_context(&self) -> Option<String> {
        self.inner.runtime.context()
    }

    pub(crate) fn harness(&self) -> &Arc<dyn Harness> {
        &self.inner.harness
    }

    pub(crate) fn gateway(&self) -> Option<&Arc<crate::gateway::Gateway>> {
        self.inner.gateway.as_ref()
    }

    /// This process's name among the cores sharing the store.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Records the configured agents in the store.
    pub async fn sync_agents(&self) -> Result<()> {
        let records: Vec<_> = self
            .config()
            .agents
            .values()
            .map(AgentSpec::to_record)
            .collect();
        self.store.sync_agents(&records).await?;
        Ok(())
    }

    pub fn agents(&self) -> Vec<AgentSpec> {
        self.config().agents.values().cloned().collect()
    }

    pub fn agent(&self, id: &str) -> Result<AgentSpec> {
        self.config()
            .agents
            .get(id)
            .cloned()
            .ok_or_else(|| CoreError::UnknownAgent {
                id: id.to_string(),
                known: self.known_agents(),
            })
    }

    fn known_agents(&self) -> String {
        let config = self.config();
        let ids: Vec<&str> = config.agents.keys().map(String::as_str).collect();
        if ids.is_empty() {
            "(none configured)".to_string()
        } else {
            ids.join(", ")
        }
    }

    pub fn subscribe(&self) -> ChangeFeed {
        self.store.subscribe()
    }

    pub(crate) fn publish_delta(&self, delta: ingest::LiveDelta) {
        let _ = self.inner.deltas.send(delta);
    }

    // ------------------------------------------------------------------ sessions

    /// Creates a session: stored at once (with its initial prompt, pending), then provisioned
    /// by the worker.
    pub async fn create_session(&self, req: CreateSession) -> Result<Session> {
        let agent_id = match req.agent_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => self
                .config()
                .sessions
                .default_agent
                .clone()
                .ok_or_else(|| {
                    CoreError::Invalid(format!(
                        "no agent given and no default agent configured; pick one of: {}",
                        self.known_agents()
                    ))
                })?,
        };
        let agent = self.agent(&agent_id)?;
        env::validate_session_env(&req.env)?;
        let team = match req.team.as_deref().map(str::trim) {
            Some(team) if !team.is_empty() => team.to_string(),
            _ => self.config().sessions.default_team.clone(),
        };
        let prompt = req
            .initial_prompt
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty());
        if let Some(p) = prompt {
            check_message(p)?;
        }
        let title = match req
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(t) => t.chars().take(MAX_TITLE_CHARS).collect(),
            None => prompt
                .map(|p| p.lines().next().unwrap_or(p).chars().take(60).collect())
                .unwrap_or_else(|| format!("{} session", agent.name)),
        };
        // The row, its history, its first message and its provisioning task: all or nothing.
        let id = Uuid::now_v7();
        // (validated above: a session's own env has none of agentdeck's reserved names)
        let env_keys: Vec<&String> = req.env.keys().collect();
        let session = self
            .store
            .create_session(&SessionCreation {
                created: NewEvent::new(
                    "session.created",
                    serde_json::json!({
                        "agent_id": agent.id,
                        "team": team,
                        "by": self.inner.instance,
                        "env_keys": env_keys,
                    }),
                ),
                session: NewSession {
                    id: Some(id),
                    agent_id: agent.id.clone(),
                    team,
                    title,
                    env: req.env.clone(),
                    budget_usd: agent.budget,
                },
                first_message: prompt.map(|p| NewMessage {
                    role: MessageRole::User,
                    status: MessageStatus::Pending,
                    parts: vec![Part::text(p)],
                    harness_message_id: None,
                }),
                task: self.task(TaskKind::Provision, id),
                fork: None,
            })
            .await?;
        tracing::info!(session = %session.id, agent = %session.agent_id, team = %session.team, "session created");
        Ok(session)
    }

    pub async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<Session>> {
        Ok(self.store.list_sessions(query).await?)
    }

    /// The session `text` names: its id, its short id, or any unique beginning or end of its
    /// id (4 hex digits or more), among `teams`' sessions (every team's when `None`). Several
    /// matches are an error naming them.
    pub async fn find_session(&self, text: &str, teams: Option<&[String]>) -> Result<Session> {
        if let Ok(id) = Uuid::parse_str(text.trim()) {
            let session = self.get_session(id).await?;
            return match teams {
                Some(teams) if !teams.contains(&session.team) => {
                    Err(CoreError::SessionNotFound(id))
                }
                _ => Ok(session),
            };
        }
        let Some(fragment) = crate::model::id_fragment(text) else {
            return Err(not_a_session_id(text));
        };
        let mut found = self.store.sessions_matching(&fragment, teams, 6).await?;
        match found.len() {
            0 => Err(CoreError::NoSuchSession(format!(
                "no session's id begins or ends with {fragment}"
            ))),
            1 => Ok(found.remove(0)),
            n => {
                let shown: Vec<String> = found
                    .iter()
                    .take(5)
                    .map(|s| format!("{} ({})", s.id, crate::sanitize::line(&s.title)))
                    .collect();
                Err(CoreError::Invalid(format!(
                    "{fragment} matches {}{} sessions: {}; give more of its id",
                    if n > 5 { "more than " } else { "" },
                    n.min(5),
                    shown.join(", ")
                )))
            }
        }
    }

    pub async fn get_session(&self, id: Uuid) -> Result<Session> {
        self.store
            .get_session(id)
            .await?
            .ok_or(CoreError::SessionNotFound(id))
    }

    /// Messages after `after_seq`, in order.
    pub async fn messages(&self, id: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Message>> {
        self.get_session(id).await?;
        Ok(self
            .store
            .list_messages(id, after_seq, limit.clamp(1, 1000))
            .await?)
    }

    /// What the agent changed, turn by turn (the turns that changed files, oldest first): kept
    /// with the transcript, so it reads the same once the sandbox is gone.
    pub async fn diffs(&self, id: Uuid) -> Result<Vec<crate::model::TurnDiff>> {
        self.get_session(id).await?;
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.list_messages(id, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(page.into_iter().filter(|m| !m.diffs.is_empty()).map(|m| {
                crate::model::TurnDiff {
                    seq: m.seq,
                    asked: m.text().lines().next().unwrap_or_default().to_string(),
                    files: m.diffs,
                }
            }));
        }
        Ok(out)
    }

    /// The raw event log after `after_seq`, in order.
    pub async fn events(&self, id: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Event>> {
        self.get_session(id).await?;
        Ok(self
            .store
            .list_events(id, after_seq, limit.clamp(1, 1000))
            .await?)
    }

    /// Stores an operator's message (pending) and has the worker deliver it. A suspended
    /// session is resumed first; one still starting gets it once ready.
    pub async fn send_message(&self, id: Uuid, text: &str) -> Result<Message> {
        let text = text.trim_end();
        check_message(text)?;
        let session = self.get_session(id).await?;
        self.on_this_runtime(&session)?;
        match session.status {
            SessionStatus::Dead => {
                return Err(CoreError::Conflict(format!(
                    "session {id} has ended; start a new one"
                )));
            }
            SessionStatus::Failed => {
                return Err(CoreError::Conflict(format!(
                    "session {id} failed ({}); restart it first",
                    session
                        .failure_reason
                        .as_deref()
                        .unwrap_or("no reason recorded")
                )));
            }
            _ => {}
        }
        self.check_budget(&session).await?;
        let message = NewMessage {
            role: MessageRole::User,
            status: MessageStatus::Pending,
            parts: vec![Part::text(text)],
            harness_message_id: None,
        };
        if session.status == SessionStatus::Suspended {
            // Stored, then the resume that brings the sandbox back delivers it; should the
            // resume not be written, the message waits in the transcript for the next one.
            let message = self.store.append_message(id, &message).await?;
            self.resume(id).await?;
            return Ok(message);
        }
        // The message and the task that delivers it: one transaction.
        let (message, _) = self
            .store
            .append_message_with_task(id, &message, &self.task(Command::Send.task(), id))
            .await?;
        Ok(message)
    }

    /// Refuses a new turn of a session that has spent its budget, or whose team has spent its
    /// budget for the month: saying how much, and how to raise it.
    async fn check_budget(&self, session: &Session) -> Result<()> {
        if let Some(budget) = session.budget_usd
            && session.usage.cost >= budget
        {
            return Err(CoreError::Conflict(format!(
                "session {} has spent ${:.2} of its ${budget:.2} budget: it takes no new turn until \
                 an operator raises it (agentdeck sessions budget {} AMOUNT)",
                session.id, session.usage.cost, session.id
            )));
        }
        let Some(budget) = self
            .config()
            .teams
            .get(&session.team)
            .and_then(|t| t.budget)
        else {
            return Ok(());
        };
        let (since, month) = month_start(chrono::Utc::now());
        let spent = self.store.team_spend(&session.team, since).await?;
        if spent >= budget {
            return Err(CoreError::Conflict(format!(
                "team {} has spent ${spent:.2} of its ${budget:.2} budget for {month}: its sessions \
                 take no new turn until the budget is raised ([teams.{}] budget)",
                session.team, session.team
            )));
        }
        Ok(())
    }

    /// What a team spent since the start of this calendar month (UTC), and its budget.
    pub async fn team_spend(&self, team: &str) -> Result<(f64, Option<f64>)> {
        let (since, _) = month_start(chrono::Utc::now());
        let spent = self.store.team_spend(team, since).await?;
        Ok((spent, self.config().teams.get(team).and_then(|t| t.budget)))
    }

    /// Gives a session a new title, as `by`; recorded in its history.
    pub async fn rename(&self, id: Uuid, title: &str, by: &str) -> Result<Session> {
        let title: String = title.trim().chars().take(MAX_TITLE_CHARS).collect();
        if title.is_empty() {
            return Err(CoreError::Invalid(
                "a session's title cannot be empty".into(),
            ));
        }
        let before = self.get_session(id).await?;
        let patch = crate::model::SessionPatch {
            title: Some(title.clone()),
            ..Default::default()
        };
        let session = self.store.update_session(id, &patch).await?;
        self.store
            .append_events(
                id,
                &[NewEvent::new(
                    "session.renamed",
                    serde_json::json!({ "from": before.title, "to": title, "by": by }),
                )],
            )
            .await?;
        Ok(session)
    }

    /// Gives a session a budget of its own (USD; `None` lifts it), as `by`; recorded in its
    /// history.
    pub async fn set_budget(&self, id: Uuid, usd: Option<f64>, by: &str) -> Result<Session> {
        if let Some(usd) = usd
            && !(usd.is_finite() && usd > 0.0)
        {
            return Err(CoreError::Invalid(format!(
                "a budget is a positive amount of USD, not {usd}"
            )));
        }
        self.get_session(id).await?;
        let patch = crate::model::SessionPatch {
            budget_usd: Some(usd),
            ..Default::default()
        };
        let session = self.store.update_session(id, &patch).await?;
        self.store
            .append_events(
                id,
                &[NewEvent::new(
                    "session.budget",
                    serde_json::json!({ "usd": usd, "by": by }),
                )],
            )
            .await?;
        tracing::info!(session = %id, ?usd, by, "budget set");
        Ok(session)
    }

    /// Stops the agent's running turn.
    pub async fn abort(&self, id: Uuid) -> Result<Session> {
        let session = self.get_session(id).await?;
        if !Command::Abort.accepts(session.status) {
            return Err(CoreError::Conflict(format!(
                "session {id} is {}: no turn is running",
                session.status
            )));
        }
        self.enqueue(Command::Abort.task(), id).await?;
        Ok(session)
    }

    /// Restarts the sandbox (a failed session is provisioned again).
    pub async fn restart(&self, id: Uuid) -> Result<Session> {
        let patch = SessionPatch {
            failure_reason: Some(None),
            ..Default::default()
        };
        self.command(id, Command::Restart, patch).await
    }

    /// Suspends the sandbox: it stops using resources; the session and its transcript stay.
    pub async fn suspend(&self, id: Uuid) -> Result<Session> {
        let current = self.get_session(id).await?;
        if current.status == SessionStatus::Suspended {
            return Ok(current);
        }
        self.command(id, Command::Suspend, SessionPatch::default())
            .await
    }

    pub async fn resume(&self, id: Uuid) -> Result<Session> {
        let patch = SessionPatch {
            idle_deadline: Some(None),
            ..Default::default()
        };
        self.command(id, Command::Resume, patch).await
    }

    /// Ends the session for good: its sandbox is destroyed; the transcript stays.
    pub async fn end(&self, id: Uuid) -> Result<Session> {
        let current = self.get_session(id).await?;
        if current.status == SessionStatus::Dead {
            return Ok(current);
        }
        let patch = SessionPatch {
            idle_deadline: Some(None),
            ..Default::default()
        };
        self.command(id, Command::End, patch).await
    }

    /// A command that moves the session: puts it where the command lands (see
    /// [`Command::lands_in`]), with `extra` fields, if its status still accepts the command,
    /// and queues the task that carries it out, in one transaction; a clear conflict when the
    /// session is elsewhere.
    async fn command(&self, id: Uuid, command: Command, extra: SessionPatch) -> Result<Session> {
        let (status, phase) = command.lands_in().ok_or_else(|| {
            CoreError::Invalid(format!("{command:?} is not a command that moves a session"))
        })?;
        self.on_this_runtime(&self.get_session(id).await?)?;
        let patch = SessionPatch {
            status,
            phase: Some(phase),
            phase_detail: Some(Some(format!("{} requested", command.verb()))),
            only_if_status: Some(command.accepted()),
            new_command: true,
            ..extra
        };
        match self
            .store
            .command_session(id, &patch, &self.task(command.task(), id))
            .await
        {
            Ok((session, _)) => Ok(session),
            Err(e) if e.is_not_found() => Err(CoreError::SessionNotFound(id)),
            Err(crate::store::StoreError::Conflict(_)) => {
                let found = self.get_session(id).await?;
                Err(CoreError::Conflict(format!(
                    "cannot {} session {id}: it is {}",
                    command.verb(),
                    found.status
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The task of `kind` for a session (one queued at a time per kind and session).
    pub(crate) fn task(&self, kind: TaskKind, session: Uuid) -> NewTask {
        NewTask::new(kind, serde_json::json!({}))
            .for_session(session)
            .dedupe(format!("{kind}:{session}"))
            .max_attempts(self.config().worker.max_attempts)
    }

    pub(crate) async fn enqueue(&self, kind: TaskKind, session: Uuid) -> Result<Task> {
        Ok(self.store.enqueue_task(&self.task(kind, session)).await?)
    }

    /// Queues any task (for operators' tooling and tests of the worker fleet).
    pub async fn enqueue_task(&self, task: &NewTask) -> Result<Task> {
        Ok(self.store.enqueue_task(task).await?)
    }

    /// An interactive shell in the session's sandbox, for an operator's terminal: on the local
    /// runtime a program run in the sandbox's working folder with its env, on Kubernetes a
    /// process started in its pod and attached (`crate::console` runs either). Who opened it
    /// (`by`: `cli:$USER`, `cockpit:$USER`) goes into the session's history, as `sandbox.shell`.
    pub async fn shell(&self, id: Uuid, options: &ShellOptions, by: &str) -> Result<Shell> {
        let session = self.get_session(id).await?;
        self.on_this_runtime(&session)?;
        let sandbox = Self::sandbox_of(&session).ok_or_else(|| {
            CoreError::Conflict(format!(
                "session {id} is {} with no sandbox: there is nothing to open a shell in",
                session.status
            ))
        })?;
        let shell = self.runtime().shell(&sandbox, options).await?;
        tracing::info!(session = %id, sandbox = %sandbox.name, tty = options.tty, by, "shell opened");
        let opened = [NewEvent::new(
            "sandbox.shell",
            serde_json::json!({"by": by, "tty": options.tty, "sandbox": sandbox.name}),
        )];
        write_aside("recording who opened a shell", id, || {
            self.store().append_events(id, &opened)
        })
        .await;
        Ok(shell)
    }

    /// A shell in the session's sandbox for an operator who is not on this machine (`serve`
    /// carries it over a WebSocket): always attached through its streams; on the local runtime
    /// the program runs here on a terminal of its own. Recorded like [`Core::shell`].
    pub async fn attached_shell(
        &self,
        id: Uuid,
        options: &ShellOptions,
        by: &str,
    ) -> Result<AttachedShell> {
        let shell = self.shell(id, options, by).await?;
        Ok(shell.attached(options)?)
    }

    /// How a session's sandbox is doing right now (`None` when it has none).
    pub async fn sandbox_health(
        &self,
        id: Uuid,
    ) -> Result<Option<std::result::Result<crate::runtime::SandboxHealth, String>>> {
        let session = self.get_session(id).await?;
        let Some(sandbox) = Self::sandbox_of(&session) else {
            return Ok(None);
        };
        if let Err(other) = self.on_this_runtime(&session) {
            return Ok(Some(Err(other.to_string())));
        }
        Ok(Some(
            self.inner
                .runtime
                .observe(&sandbox)
                .await
                .map_err(|e| e.to_string()),
        ))
    }

    /// Refuses to act on a session whose sandbox is on another runtime than this core's: it
    /// would act on a sandbox it cannot reach, or make a new one on its own runtime while the
    /// old one runs on (a session never moves to another runtime by itself).
    pub(crate) fn on_this_runtime(&self, session: &Session) -> Result<()> {
        match session.runtime.as_deref() {
            Some(theirs) if theirs != self.runtime().kind() => Err(CoreError::Conflict(format!(
                "this session runs on the {theirs} runtime (start agentdeck with --runtime \
                     {theirs} to act on it)"
            ))),
            _ => Ok(()),
        }
    }

    /// Every live session's sandbox health, for the sandboxes view: (session, title, its
    /// health or why it could not be read), in the sessions' order. Read concurrently, 16 at a
    /// time, so a fleet on a slow cluster is not one round trip after another.
    pub async fn fleet_health(&self) -> Result<Vec<FleetRow>> {
        use futures::StreamExt;
        let live: Vec<SessionStatus> = SessionStatus::ALL
            .iter()
            .copied()
            .filter(|s| !s.is_terminal())
            .collect();
        let sessions = self
            .list_sessions(&SessionQuery {
                statuses: Some(live),
                limit: Some(2000),
                ..Default::default()
            })
            .await?;
        let runtime = &self.inner.runtime;
        // The sandboxes of this runtime: another's are not this view's to judge.
        let mine: Vec<(Session, crate::runtime::SandboxRef)> = sessions
            .into_iter()
            .filter_map(|s| {
                let sandbox = Self::sandbox_of(&s)?;
                (sandbox.runtime == runtime.kind()).then_some((s, sandbox))
            })
            .collect();
        Ok(futures::stream::iter(mine)
            .map(|(s, sandbox)| async move {
                let health = runtime.observe(&sandbox).await.map_err(|e| e.to_string());
                (s.id, s.title, health)
            })
            .buffered(16)
            .collect()
            .await)
    }

    /// A session's sandbox log (tail, since, follow).
    pub async fn sandbox_logs(
        &self,
        id: Uuid,
        options: crate::runtime::LogOptions,
    ) -> Result<crate::runtime::LogStream> {
        let session = self.get_session(id).await?;
        self.on_this_runtime(&session)?;
        let sandbox = Self::sandbox_of(&session).ok_or_else(|| {
            CoreError::Conflict(format!(
                "session {id} has no sandbox (it is {})",
                session.status
            ))
        })?;
        self.inner
            .runtime
            .logs(&sandbox, options)
            .await
            .map_err(CoreError::Runtime)
    }

    /// Sandbox health changes as the runtime reports them.
    pub fn subscribe_health(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::runtime::HealthChange> {
        self.inner.runtime.watch()
    }

    /// Whether the store answers (for the status line).
    pub async fn store_health(&self) -> std::result::Result<(), String> {
        self.store.ping().await.map_err(|e| e.to_string())
    }

    /// Whether the sandbox runtime answers (the cluster, on Kubernetes), for the status line.
    pub async fn runtime_health(&self) -> std::result::Result<(), String> {
        self.runtime().ping().await.map_err(|e| e.to_string())
    }

    /// Whether the agents' gateway answers, in words that name it: `Ok` when none is
    /// configured (agents then reach their model some other way).
    pub(crate) async fn gateway_answers(&self) -> std::result::Result<(), String> {
        match &self.config().gateway.url {
            Some(url) => crate::gateway::check_health(url)
                .await
                .map_err(|e| format!("the gateway does not answer ({e})")),
            None => Ok(()),
        }
    }

    /// Whether the gateway answers (for the status line and diagnose).
    pub async fn gateway_health(&self) -> std::result::Result<(), String> {
        match &self.config().gateway.url {
            Some(url) => crate::gateway::check_health(url).await,
            None => Err("no gateway configured".to_string()),
        }
    }

    /// Runs one reconciler pass now, as the worker's reconciler does every few seconds while
    /// it holds the role, but without taking the role and with no memory of earlier passes (a
    /// leftover sandbox's grace starts at this pass). For benchmarks and operators' tooling.
    pub async fn reconcile_once(&self) -> Result<()> {
        reconciler::Reconciler::default().pass(self).await
    }

    /// Counts for `/metrics` and the status line.
    /// Tokens and cost by team and agent, of `teams` (every team's when `None`).
    pub async fn usage_totals(
        &self,
        teams: Option<&[String]>,
    ) -> Result<Vec<crate::store::UsageTotal>> {
        let mut totals = self.store.usage_totals().await?;
        if let Some(teams) = teams {
            totals.retain(|t| teams.contains(&t.team));
        }
        Ok(totals)
    }

    pub async fn stats(&self) -> Result<Stats> {
        Ok(Stats {
            sessions: self.store.count_sessions().await?,
            tasks: self.store.count_tasks().await?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub sessions: Vec<(SessionStatus, i64)>,
    pub tasks: Vec<(TaskStatus, i64)>,
}

/// What is said of `text` given for a session's id that cannot be one.
pub fn not_a_session_id(text: &str) -> CoreError {
    CoreError::NoSuchSession(format!(
        "session {:?} not found (not a session id: give its id, its short id, or 4 or more hex \
         digits from the start or end of its id)",
        crate::sanitize::line(text)
    ))
}

/// The start of `now`'s calendar month (UTC), and the month's name (`2026-12`).
fn month_start(now: chrono::DateTime<chrono::Utc>) -> (chrono::DateTime<chrono::Utc>, String) {
    use chrono::{Datelike, TimeZone};
    let start = chrono::Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (start, now.format("%Y-%m").to_string())
}

fn check_message(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(CoreError::Invalid("the message is empty".to_string()));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(CoreError::Invalid(format!(
            "the message is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
            text.len()
        )));
    }
    Ok(())
}
