//! The platform as the cockpit sees it: what its screens read and what they ask for, as one
//! interface. The embedded core implements it ([`Embedded`]: this process is a control core of
//! its own); a client of `serve` is to implement it too, with the REST API as its wire form, so
//! that no screen has two code paths. The cockpit holds an `Arc<dyn Deck>` and nothing else of
//! the platform.

mod embedded;
mod multi;
mod remote;
pub mod sse;

pub use embedded::Embedded;
pub use multi::Multi;
pub use remote::Remote;

use crate::config::{AgentSpec, Config};
use crate::core::live::Live;
use crate::core::{
    ChangeFeed, CreateSession, Diagnosis, FleetRow, Reloaded, Result, Shell, ShellOptions,
};
use crate::model::{Answer, Ask, Command, Message, Session, SessionQuery};
use crate::runtime::{HealthChange, LogOptions, LogStream};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use uuid::Uuid;

/// Whether each thing the cockpit depends on answered at the last check (every few seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Connectivity {
    pub store: std::result::Result<(), String>,
    /// The sandbox runtime: the cluster on Kubernetes (a local runtime always answers).
    pub runtime: std::result::Result<(), String>,
    pub gateway: std::result::Result<(), String>,
    /// Who runs the fleet's work (`fleet: this cockpit`, `fleet: 2 cores`), when the store said.
    pub fleet: Option<String>,
    /// A client of `serve`: how its link to each server stands (none for the embedded core;
    /// one, unnamed, for `--server`; each of several `[[servers]]` by its name).
    pub servers: Vec<ServerState>,
}

/// One server of a client and its link.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState {
    /// Its name in `[[servers]]`, when the cockpit follows several.
    pub name: Option<String>,
    pub link: ServerLink,
}

/// A client's reload: its own file read again (its keys and theme; each server's
/// configuration is the server's) and put in `config`; what applied, and what needs a restart.
fn reload_own_file(config: &std::sync::RwLock<Arc<Config>>) -> Result<Reloaded> {
    let old = match config.read() {
        Ok(c) => c.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let new = old.read_again().map_err(|e| {
        crate::core::CoreError::Invalid(format!("the configuration was not reloaded: {e}"))
    })?;
    let mut report = Reloaded::default();
    if old.tui != new.tui {
        report.applied.push("[tui]".into());
    }
    if old.servers != new.servers {
        report.needs_restart.push("[[servers]]".into());
    }
    if let Ok(mut c) = config.write() {
        *c = Arc::new(new);
    }
    Ok(report)
}

/// What a new session can be started with: an agent, on a server when the deck has several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChoice {
    pub server: Option<String>,
    pub agent: String,
}

impl AgentChoice {
    /// As a person reads it: `coder`, or `coder on eu`.
    pub fn label(&self) -> String {
        match &self.server {
            Some(server) => format!("{} on {server}", self.agent),
            None => self.agent.clone(),
        }
    }
}

/// How a client's link to `serve` stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerLink {
    Connected,
    /// Not (or no longer) connected; it tries again by itself. Why.
    Reconnecting(String),
    /// The server refused the token. Its words.
    Refused(String),
}

#[async_trait]
pub trait Deck: Send + Sync + 'static {
    /// The configuration this cockpit runs with (its keys, theme, folders).
    fn config(&self) -> Arc<Config>;
    /// Where the sessions are, safe to show: `sqlite:///…`, `postgres://u@host/db` (no password).
    fn describe(&self) -> String;
    /// The sandbox runtime (`local`, `kubernetes`).
    fn runtime_kind(&self) -> String;
    /// The Kubernetes context, where there is one.
    fn runtime_context(&self) -> Option<String>;
    /// The agents a session can be started with.
    fn agents(&self) -> Vec<AgentSpec>;
    /// Each agent where it can be started (with several servers, each server's own).
    fn agent_choices(&self) -> Vec<AgentChoice> {
        self.agents()
            .into_iter()
            .map(|a| AgentChoice {
                server: None,
                agent: a.id,
            })
            .collect()
    }
    /// Whether this deck may only read (a read-only token of `serve`): the cockpit is then
    /// read-only whatever it was started with.
    fn read_only(&self) -> bool {
        false
    }

    /// Sessions, newest first: those `query` asks for (its team, agent, statuses, older than
    /// `before`, at most `limit`), of those this deck may see.
    async fn list(&self, query: &SessionQuery) -> Result<Vec<Session>>;
    /// A page of sessions, newest first, older than `before`.
    async fn sessions(&self, before: Option<Uuid>, limit: i64) -> Result<Vec<Session>> {
        self.list(&SessionQuery {
            before,
            limit: Some(limit),
            ..Default::default()
        })
        .await
    }
    async fn session(&self, id: Uuid) -> Result<Session>;
    /// The id of the session `text` names (its id, its short id, a unique beginning or end of
    /// its id), among those this deck may see.
    async fn resolve(&self, text: &str) -> Result<Uuid>;
    async fn messages(&self, id: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Message>>;
    async fn send(&self, id: Uuid, text: &str) -> Result<Message>;
    async fn create(&self, request: CreateSession) -> Result<Session>;
    /// Creates the session on `server` (one of [`Deck::agent_choices`]'s), where the deck has
    /// several; else where [`Deck::create`] does.
    async fn create_on(&self, server: Option<&str>, request: CreateSession) -> Result<Session> {
        let _ = server;
        self.create(request).await
    }
    /// Restart, suspend, resume, end or abort.
    async fn command(&self, id: Uuid, command: Command) -> Result<Session>;
    async fn fork(&self, id: Uuid, at_seq: i64) -> Result<Session>;
    /// What the agent changed, turn by turn.
    async fn diffs(&self, id: Uuid) -> Result<Vec<crate::model::TurnDiff>>;
    /// Gives the session a new title.
    async fn rename(&self, id: Uuid, title: &str) -> Result<Session>;
    /// Gives the session a budget of its own (USD; `None` lifts it).
    async fn set_budget(&self, id: Uuid, usd: Option<f64>) -> Result<Session>;
    /// What the session's agent waits for a person to answer (and what it asked before, with
    /// the answers, unless `pending_only`), oldest first.
    async fn asks(&self, id: Uuid, pending_only: bool) -> Result<Vec<Ask>>;
    async fn answer(&self, id: Uuid, ask: &str, answer: Answer) -> Result<Ask>;
    async fn fleet_health(&self) -> Result<Vec<FleetRow>>;
    /// How the agents' warm pools are doing.
    async fn pools(&self) -> Result<Vec<crate::model::PoolHealth>> {
        Ok(Vec::new())
    }
    /// This month's spend of each team this deck sees that has a budget.
    async fn team_budgets(&self) -> Result<Vec<crate::model::TeamSpend>> {
        Ok(Vec::new())
    }
    async fn logs(&self, id: Uuid, options: LogOptions) -> Result<LogStream>;
    async fn diagnose(&self, id: Uuid) -> Result<Diagnosis>;
    async fn shell(&self, id: Uuid, options: &ShellOptions) -> Result<Shell>;
    async fn connectivity(&self) -> Connectivity;
    /// Reads the configuration again and puts it in effect where it can.
    async fn reload(&self) -> Result<Reloaded>;

    /// What changes, as it changes (sessions, messages, tasks; a resync when some were missed).
    fn changes(&self) -> ChangeFeed;
    /// The streamed text of `session` as it arrives.
    fn deltas(&self, session: Uuid) -> BoxStream<'static, Live>;
    /// Sandbox health changes as the runtime reports them.
    fn health_changes(&self) -> tokio::sync::broadcast::Receiver<HealthChange>;
}
