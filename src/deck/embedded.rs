//! The deck of a cockpit that is a control core of its own: the core, in this process, on the
//! store and the runtime of its configuration.

use super::{Connectivity, Deck};
use crate::config::{AgentSpec, Config};
use crate::core::live::Live;
use crate::core::{
    ChangeFeed, Core, CreateSession, Diagnosis, FleetRow, Reloaded, Result, Shell, ShellOptions,
};
use crate::model::{Answer, Ask, Command, Message, Session, SessionQuery};
use crate::runtime::{HealthChange, LogOptions, LogStream};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use uuid::Uuid;

pub struct Embedded {
    core: Core,
    /// Who acts from here, for the sessions' history (`cockpit:$USER`).
    by: String,
}

impl Embedded {
    pub fn new(core: Core, by: impl Into<String>) -> Self {
        Embedded {
            core,
            by: by.into(),
        }
    }
}

#[async_trait]
impl Deck for Embedded {
    fn config(&self) -> Arc<Config> {
        self.core.config()
    }

    fn describe(&self) -> String {
        self.core.store_description()
    }

    fn runtime_kind(&self) -> String {
        self.core.runtime_kind().to_string()
    }

    fn runtime_context(&self) -> Option<String> {
        self.core.runtime_context()
    }

    fn agents(&self) -> Vec<AgentSpec> {
        self.core.agents()
    }

    async fn list(&self, query: &SessionQuery) -> Result<Vec<Session>> {
        self.core.list_sessions(query).await
    }

    async fn session(&self, id: Uuid) -> Result<Session> {
        self.core.get_session(id).await
    }

    async fn messages(&self, id: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Message>> {
        self.core.messages(id, after_seq, limit).await
    }

    async fn send(&self, id: Uuid, text: &str) -> Result<Message> {
        self.core.send_message(id, text).await
    }

    async fn create(&self, request: CreateSession) -> Result<Session> {
        self.core.create_session(request).await
    }

    async fn command(&self, id: Uuid, command: Command) -> Result<Session> {
        match command {
            Command::Restart => self.core.restart(id).await,
            Command::Suspend => self.core.suspend(id).await,
            Command::Resume => self.core.resume(id).await,
            Command::End => self.core.end(id).await,
            Command::Abort => self.core.abort(id).await,
            Command::Send => Err(crate::core::CoreError::Invalid(
                "a message is sent with its text (Deck::send)".into(),
            )),
        }
    }

    async fn fork(&self, id: Uuid, at_seq: i64) -> Result<Session> {
        self.core.fork(id, at_seq).await
    }

    async fn diffs(&self, id: Uuid) -> Result<Vec<crate::model::TurnDiff>> {
        self.core.diffs(id).await
    }

    async fn resolve(&self, text: &str) -> Result<Uuid> {
        Ok(self.core.find_session(text, None).await?.id)
    }

    async fn rename(&self, id: Uuid, title: &str) -> Result<Session> {
        self.core.rename(id, title, &self.by).await
    }

    async fn set_budget(&self, id: Uuid, usd: Option<f64>) -> Result<Session> {
        self.core.set_budget(id, usd, &self.by).await
    }

    async fn asks(&self, id: Uuid, pending_only: bool) -> Result<Vec<Ask>> {
        self.core.asks(id, None, pending_only).await
    }

    async fn answer(&self, id: Uuid, ask: &str, answer: Answer) -> Result<Ask> {
        self.core.answer(id, ask, answer, &self.by).await
    }

    async fn fleet_health(&self) -> Result<Vec<FleetRow>> {
        self.core.fleet_health().await
    }

    async fn pools(&self) -> Result<Vec<crate::model::PoolHealth>> {
        Ok(self.core.pool_health().await)
    }

    async fn team_budgets(&self) -> Result<Vec<crate::model::TeamSpend>> {
        let config = self.core.config();
        let mut out = Vec::new();
        for (team, t) in &config.teams {
            if t.budget.is_none() {
                continue;
            }
            let (spent_usd, budget_usd) = self.core.team_spend(team).await?;
            out.push(crate::model::TeamSpend {
                team: team.clone(),
                spent_usd,
                budget_usd,
            });
        }
        Ok(out)
    }

    async fn logs(&self, id: Uuid, options: LogOptions) -> Result<LogStream> {
        self.core.sandbox_logs(id, options).await
    }

    async fn diagnose(&self, id: Uuid) -> Result<Diagnosis> {
        self.core.diagnose(id).await
    }

    async fn shell(&self, id: Uuid, options: &ShellOptions) -> Result<Shell> {
        self.core.shell(id, options, &self.by).await
    }

    async fn connectivity(&self) -> Connectivity {
        let (store, runtime, gateway, fleet) = tokio::join!(
            self.core.store_health(),
            self.core.runtime_health(),
            self.core.gateway_health(),
            self.core.fleet()
        );
        Connectivity {
            store,
            runtime,
            gateway,
            fleet: fleet.ok().map(|f| f.summary()),
            servers: Vec::new(),
        }
    }

    async fn reload(&self) -> Result<Reloaded> {
        self.core.reload_from_files().await
    }

    fn changes(&self) -> ChangeFeed {
        self.core.subscribe()
    }

    fn deltas(&self, session: Uuid) -> BoxStream<'static, Live> {
        let feed = self.core.watch_deltas(session);
        Box::pin(futures::stream::unfold(feed, |mut feed| async move {
            let live = feed.next().await;
            Some((live, feed))
        }))
    }

    fn health_changes(&self) -> tokio::sync::broadcast::Receiver<HealthChange> {
        self.core.subscribe_health()
    }
}
