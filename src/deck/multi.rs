//! The deck of a cockpit that follows several `serve`s at once (`[[servers]]`, a cluster or a
//! region each, with a token each): one merged list, each session marked with its server
//! (`Session::server`: the SERVER column, `server:NAME` in the filter), each server's link on
//! the top bar, and every command sent to the session's own server.
//!
//! A server that does not answer stops nothing: its link says so, the others go on, and the
//! list keeps showing its sessions as last read until it answers again (then everything is
//! read again, as after any reconnect). A server that refuses the token is said once and tried
//! again now and then; none of this stops the cockpit from starting, unless no server at all
//! can be used.

use super::{AgentChoice, Connectivity, Deck, Remote, ServerLink, ServerState};
use crate::config::{AgentSpec, Config};
use crate::core::live::Live;
use crate::core::{
    Change, ChangeFeed, CoreError, CreateSession, Diagnosis, FleetRow, Reloaded, Result, Shell,
    ShellOptions,
};
use crate::model::{Answer, Ask, Command, Message, Session, SessionQuery};
use crate::runtime::{HealthChange, LogOptions, LogStream};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::broadcast;
use uuid::Uuid;

/// How long a cockpit waits at start for one of its servers to answer.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Changes held for a cockpit that is slow to take them (then it reads everything again).
const CHANGES_HELD: usize = 4096;

struct Server {
    name: String,
    remote: Arc<Remote>,
}

/// What is known of where each session is.
#[derive(Default)]
struct Known {
    /// The server (its index) that holds each session seen.
    owner: RwLock<HashMap<Uuid, usize>>,
    /// Each server's sessions as last read: what the list shows of one that does not answer.
    last: Mutex<Vec<HashMap<Uuid, Session>>>,
}

impl Known {
    fn learn(&self, server: usize, id: Uuid) {
        if let Ok(mut owner) = self.owner.write() {
            owner.insert(id, server);
        }
    }

    fn owner(&self, id: Uuid) -> Option<usize> {
        self.owner.read().ok()?.get(&id).copied()
    }
}

pub struct Multi {
    servers: Vec<Server>,
    known: Arc<Known>,
    changes: broadcast::Sender<Change>,
    health: broadcast::Sender<HealthChange>,
    config: RwLock<Arc<Config>>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Multi {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
    }
}

impl Multi {
    /// A deck over `servers` (each a name and its deck), following each one's changes.
    pub fn new(servers: Vec<(String, Remote)>, config: Arc<Config>) -> Multi {
        let servers: Vec<Server> = servers
            .into_iter()
            .map(|(name, remote)| Server {
                name,
                remote: Arc::new(remote),
            })
            .collect();
        let known = Arc::new(Known {
            owner: RwLock::new(HashMap::new()),
            last: Mutex::new(vec![HashMap::new(); servers.len()]),
        });
        let changes = broadcast::channel(CHANGES_HELD).0;
        let health = broadcast::channel(1024).0;
        let mut forwarders = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            let (mut feed, known_here, to) =
                (server.remote.changes(), known.clone(), changes.clone());
            forwarders.push(tokio::spawn(async move {
                while let Some(change) = feed.next().await {
                    if let Some(id) = change.session() {
                        known_here.learn(i, id);
                    }
                    let _ = to.send(change);
                }
            }));
            let (mut healths, known_here, to) = (
                server.remote.health_changes(),
                known.clone(),
                health.clone(),
            );
            forwarders.push(tokio::spawn(async move {
                loop {
                    match healths.recv().await {
                        Ok(change) => {
                            if let Some(id) = change.session_id {
                                known_here.learn(i, id);
                            }
                            let _ = to.send(change);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        Multi {
            servers,
            known,
            changes,
            health,
            config: RwLock::new(config),
            forwarders,
        }
    }

    /// Connects to each server (name, URL, token, CA file) and returns once one of them
    /// answers; an error only when none can be used (each one's reason, by name).
    pub async fn connect(
        servers: Vec<(String, String, Option<String>, Option<std::path::PathBuf>)>,
        config: Arc<Config>,
    ) -> std::result::Result<Multi, String> {
        let mut remotes = Vec::new();
        for (name, url, token, ca_file) in servers {
            let remote =
                Remote::connect_in_background(&url, token, ca_file.as_deref(), config.clone())
                    .map_err(|e| format!("server {name}: {e}"))?;
            remotes.push((name, remote));
        }
        let multi = Multi::new(remotes, config);
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            let links: Vec<ServerLink> = multi.servers.iter().map(|s| s.remote.link()).collect();
            if links.contains(&ServerLink::Connected) {
                return Ok(multi);
            }
            let tried = |l: &ServerLink| {
                matches!(l, ServerLink::Refused(_))
                    || matches!(l, ServerLink::Reconnecting(why) if why != "connecting")
            };
            if links.iter().all(tried) || tokio::time::Instant::now() >= deadline {
                let why: Vec<String> = multi
                    .servers
                    .iter()
                    .zip(links)
                    .map(|(s, l)| match l {
                        ServerLink::Refused(why) | ServerLink::Reconnecting(why) => {
                            format!("{}: {why}", s.name)
                        }
                        ServerLink::Connected => format!("{}: ok", s.name),
                    })
                    .collect();
                return Err(format!("no server can be used: {}", why.join("; ")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn tag(&self, server: usize, mut session: Session) -> Session {
        self.known.learn(server, session.id);
        session.server = self.servers.get(server).map(|s| s.name.clone());
        session
    }

    /// The server holding session `id`: the one it was seen on, else the one that has it.
    async fn route(&self, id: Uuid) -> Result<usize> {
        if let Some(i) = self.known.owner(id) {
            return Ok(i);
        }
        let asked = futures::future::join_all(
            self.servers
                .iter()
                .map(|s| async move { s.remote.session(id).await.is_ok() }),
        )
        .await;
        match asked.iter().position(|found| *found) {
            Some(i) => {
                self.known.learn(i, id);
                Ok(i)
            }
            None => Err(CoreError::SessionNotFound(id)),
        }
    }

    async fn remote_of(&self, id: Uuid) -> Result<(usize, &Remote)> {
        let i = self.route(id).await?;
        Ok((i, &self.servers[i].remote))
    }

    /// The first server that answers now (else the first): where a session goes when no server
    /// is named.
    fn first_up(&self) -> usize {
        self.servers
            .iter()
            .position(|s| s.remote.link() == ServerLink::Connected)
            .unwrap_or(0)
    }
}

/// Whether `query` asks for `s` (for the sessions of a server that does not answer, read
/// earlier).
fn admits(query: &SessionQuery, s: &Session) -> bool {
    query.before.is_none_or(|b| s.id < b)
        && query.agent_id.as_ref().is_none_or(|a| *a == s.agent_id)
        && query.teams.as_ref().is_none_or(|t| t.contains(&s.team))
        && query
            .statuses
            .as_ref()
            .is_none_or(|st| st.contains(&s.status))
        && query.parent.is_none_or(|p| s.parent_id == Some(p))
        && query
            .idle_before
            .is_none_or(|t| s.idle_deadline.is_some_and(|d| d < t))
}

#[async_trait]
impl Deck for Multi {
    fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.servers.iter().map(|s| s.name.as_str()).collect();
        format!("servers {}", names.join(", "))
    }

    fn runtime_kind(&self) -> String {
        "remote".into()
    }

    fn runtime_context(&self) -> Option<String> {
        None
    }

    /// Read-only when every server's token is (a server whose token may act is acted on; the
    /// others refuse, in their words).
    fn read_only(&self) -> bool {
        self.servers.iter().all(|s| s.remote.read_only())
    }

    fn agents(&self) -> Vec<AgentSpec> {
        let mut agents: Vec<AgentSpec> = Vec::new();
        for server in &self.servers {
            for agent in server.remote.agents() {
                if !agents.iter().any(|a| a.id == agent.id) {
                    agents.push(agent);
                }
            }
        }
        agents
    }

    fn agent_choices(&self) -> Vec<AgentChoice> {
        self.servers
            .iter()
            .flat_map(|s| {
                s.remote.agents().into_iter().map(|a| AgentChoice {
                    server: Some(s.name.clone()),
                    agent: a.id,
                })
            })
            .collect()
    }

    async fn list(&self, query: &SessionQuery) -> Result<Vec<Session>> {
        let lists =
            futures::future::join_all(self.servers.iter().map(|s| s.remote.list(query))).await;
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, listed) in lists.into_iter().enumerate() {
            match listed {
                Ok(sessions) => {
                    if let Ok(mut last) = self.known.last.lock()
                        && let Some(last) = last.get_mut(i)
                    {
                        for s in &sessions {
                            last.insert(s.id, s.clone());
                        }
                    }
                    out.extend(sessions.into_iter().map(|s| self.tag(i, s)));
                }
                Err(e) => {
                    tracing::debug!(server = %self.servers[i].name, %e, "listing from what was read before");
                    let earlier: Vec<Session> = self
                        .known
                        .last
                        .lock()
                        .ok()
                        .and_then(|last| {
                            last.get(i)
                                .map(|l| l.values().filter(|s| admits(query, s)).cloned().collect())
                        })
                        .unwrap_or_default();
                    if earlier.is_empty() {
                        errors.push(format!("{}: {e}", self.servers[i].name));
                    }
                    out.extend(earlier.into_iter().map(|s| self.tag(i, s)));
                }
            }
        }
        if out.is_empty() && errors.len() == self.servers.len() && !errors.is_empty() {
            return Err(CoreError::Server(errors.join("; ")));
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.id));
        if let Some(limit) = query.limit {
            out.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        }
        Ok(out)
    }

    async fn session(&self, id: Uuid) -> Result<Session> {
        let (i, remote) = self.remote_of(id).await?;
        Ok(self.tag(i, remote.session(id).await?))
    }

    async fn messages(&self, id: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Message>> {
        self.remote_of(id)
            .await?
            .1
            .messages(id, after_seq, limit)
            .await
    }

    async fn send(&self, id: Uuid, text: &str) -> Result<Message> {
        self.remote_of(id).await?.1.send(id, text).await
    }

    async fn create(&self, request: CreateSession) -> Result<Session> {
        let i = self.first_up();
        Ok(self.tag(i, self.servers[i].remote.create(request).await?))
    }

    async fn create_on(&self, server: Option<&str>, request: CreateSession) -> Result<Session> {
        let i = match server {
            None => self.first_up(),
            Some(name) => self
                .servers
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| CoreError::Invalid(format!("no server is named {name:?}")))?,
        };
        Ok(self.tag(i, self.servers[i].remote.create(request).await?))
    }

    async fn command(&self, id: Uuid, command: Command) -> Result<Session> {
        let (i, remote) = self.remote_of(id).await?;
        Ok(self.tag(i, remote.command(id, command).await?))
    }

    async fn fork(&self, id: Uuid, at_seq: i64) -> Result<Session> {
        let (i, remote) = self.remote_of(id).await?;
        Ok(self.tag(i, remote.fork(id, at_seq).await?))
    }

    async fn diffs(&self, id: Uuid) -> Result<Vec<crate::model::TurnDiff>> {
        self.remote_of(id).await?.1.diffs(id).await
    }

    async fn resolve(&self, text: &str) -> Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(text.trim()) {
            return Ok(id);
        }
        let mut found = Vec::new();
        let mut last_err = None;
        for server in &self.servers {
            match server.remote.resolve(text).await {
                Ok(id) => found.push(id),
                Err(e) => last_err = Some(e),
            }
        }
        match found.len() {
            1 => Ok(found[0]),
            0 => Err(last_err
                .unwrap_or_else(|| CoreError::NoSuchSession(format!("no session matches {text}")))),
            _ => Err(CoreError::Invalid(format!(
                "{text} matches sessions on several servers; give more of its id"
            ))),
        }
    }

    async fn rename(&self, id: Uuid, title: &str) -> Result<Session> {
        let (i, remote) = self.remote_of(id).await?;
        Ok(self.tag(i, remote.rename(id, title).await?))
    }

    async fn set_budget(&self, id: Uuid, usd: Option<f64>) -> Result<Session> {
        let (i, remote) = self.remote_of(id).await?;
        Ok(self.tag(i, remote.set_budget(id, usd).await?))
    }

    async fn asks(&self, id: Uuid, pending_only: bool) -> Result<Vec<Ask>> {
        self.remote_of(id).await?.1.asks(id, pending_only).await
    }

    async fn answer(&self, id: Uuid, ask: &str, answer: Answer) -> Result<Ask> {
        self.remote_of(id).await?.1.answer(id, ask, answer).await
    }

    /// Every server's sandboxes that answer (one that does not is on the top bar).
    async fn fleet_health(&self) -> Result<Vec<FleetRow>> {
        let all =
            futures::future::join_all(self.servers.iter().map(|s| s.remote.fleet_health())).await;
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for (i, fleet) in all.into_iter().enumerate() {
            match fleet {
                Ok(r) => {
                    for (id, _, _) in &r {
                        self.known.learn(i, *id);
                    }
                    rows.extend(r);
                }
                Err(e) => errors.push(format!("{}: {e}", self.servers[i].name)),
            }
        }
        if rows.is_empty() && errors.len() == self.servers.len() && !errors.is_empty() {
            return Err(CoreError::Server(errors.join("; ")));
        }
        Ok(rows)
    }

    /// Each server's pools, named `server/agent`.
    async fn pools(&self) -> Result<Vec<crate::model::PoolHealth>> {
        let all = futures::future::join_all(self.servers.iter().map(|s| s.remote.pools())).await;
        Ok(all
            .into_iter()
            .zip(&self.servers)
            .flat_map(|(pools, server)| {
                pools.unwrap_or_default().into_iter().map(|mut p| {
                    p.agent = format!("{}/{}", server.name, p.agent);
                    p
                })
            })
            .collect())
    }

    /// Each server's teams (a team on two servers is two budgets: each server enforces its
    /// own).
    async fn team_budgets(&self) -> Result<Vec<crate::model::TeamSpend>> {
        let all =
            futures::future::join_all(self.servers.iter().map(|s| s.remote.team_budgets())).await;
        Ok(all.into_iter().flatten().flatten().collect())
    }

    async fn logs(&self, id: Uuid, options: LogOptions) -> Result<LogStream> {
        self.remote_of(id).await?.1.logs(id, options).await
    }

    async fn diagnose(&self, id: Uuid) -> Result<Diagnosis> {
        let (i, remote) = self.remote_of(id).await?;
        let mut diagnosis = remote.diagnose(id).await?;
        diagnosis.session.server = Some(self.servers[i].name.clone());
        Ok(diagnosis)
    }

    async fn shell(&self, id: Uuid, options: &ShellOptions) -> Result<Shell> {
        self.remote_of(id).await?.1.shell(id, options).await
    }

    /// Each server's link; what the servers that answer say of their store, runtime and
    /// gateway, by name where one is down.
    async fn connectivity(&self) -> Connectivity {
        let each =
            futures::future::join_all(self.servers.iter().map(|s| s.remote.connectivity())).await;
        let mut servers = Vec::new();
        let (mut store, mut runtime, mut gateway) = (Vec::new(), Vec::new(), Vec::new());
        for (server, c) in self.servers.iter().zip(each) {
            let link = c
                .servers
                .into_iter()
                .next()
                .map_or(ServerLink::Reconnecting("connecting".into()), |s| s.link);
            if link == ServerLink::Connected {
                for (part, into) in [
                    (c.store, &mut store),
                    (c.runtime, &mut runtime),
                    (c.gateway, &mut gateway),
                ] {
                    if let Err(e) = part {
                        into.push(format!("{}: {e}", server.name));
                    }
                }
            }
            servers.push(ServerState {
                name: Some(server.name.clone()),
                link,
            });
        }
        let joined = |errors: Vec<String>| match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        };
        Connectivity {
            store: joined(store),
            runtime: joined(runtime),
            gateway: joined(gateway),
            fleet: None,
            servers,
        }
    }

    /// The cockpit's own file (its keys and theme); each server's configuration is its own.
    async fn reload(&self) -> Result<Reloaded> {
        super::reload_own_file(&self.config)
    }

    fn changes(&self) -> ChangeFeed {
        ChangeFeed::new(self.changes.subscribe())
    }

    fn deltas(&self, session: Uuid) -> BoxStream<'static, Live> {
        match self.known.owner(session) {
            Some(i) => self.servers[i].remote.deltas(session),
            // Never seen: nothing streams for it here; the stored text is what there is.
            None => Box::pin(futures::stream::once(async { Live::Missed })),
        }
    }

    fn health_changes(&self) -> broadcast::Receiver<HealthChange> {
        self.health.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;

    fn session(at: u128, status: SessionStatus) -> Session {
        let now = chrono::Utc::now();
        Session {
            id: Uuid::from_u128(at),
            agent_id: "coder".into(),
            team: "red".into(),
            title: format!("s{at}"),
            status,
            phase: crate::model::Phase::Ready,
            phase_detail: None,
            runtime: None,
            sandbox_ref: None,
            harness_session_id: None,
            failure_reason: None,
            env_keys: Vec::new(),
            last_message_seq: 0,
            last_event_seq: 0,
            waiting: 0,
            parent_id: None,
            fork_seq: None,
            created_at: now,
            updated_at: now,
            last_activity_at: now,
            idle_deadline: None,
            stopped_at: None,
            command_seq: 0,
            usage: Default::default(),
            budget_usd: None,
            server: None,
        }
    }

    /// A server that does not answer is listed from what was read of it before, by the same
    /// query: a page older than a cursor, of some statuses.
    #[test]
    fn what_was_read_before_is_asked_the_same_query() {
        let query = SessionQuery {
            before: Some(Uuid::from_u128(10)),
            statuses: Some(vec![SessionStatus::Failed]),
            ..Default::default()
        };
        assert!(admits(&query, &session(5, SessionStatus::Failed)));
        assert!(
            !admits(&query, &session(12, SessionStatus::Failed)),
            "newer"
        );
        assert!(!admits(&query, &session(5, SessionStatus::Busy)), "status");
        assert!(admits(
            &SessionQuery::default(),
            &session(12, SessionStatus::Busy)
        ));
    }
}
