//! What the worker does for each task kind. Every handler reads the session's current state
//! from the store and brings the world in line with it, so running a task twice, or after a
//! newer command, does no harm.

use super::Core;
use crate::harness::Endpoint;
use crate::model::env;
use crate::model::{
    MessagePatch, MessageRole, MessageStatus, NewEvent, Phase, Session, SessionPatch,
    SessionStatus, Task, TaskKind, Transition,
};
use crate::runtime::{HealthPhase, RuntimeError, SandboxRef, SandboxSpec};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Why a session could not get its gateway key.
enum KeyError {
    Retry(String),
    Fail(String),
}

/// Why a task did not finish.
#[derive(Debug)]
pub struct TaskError {
    pub message: String,
    /// Retrying will not help.
    pub permanent: bool,
}

impl TaskError {
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            permanent: false,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<crate::store::StoreError> for TaskError {
    fn from(err: crate::store::StoreError) -> Self {
        TaskError::retry(format!("store: {err}"))
    }
}

impl From<super::CoreError> for TaskError {
    fn from(err: super::CoreError) -> Self {
        match err {
            super::CoreError::Store(e) => TaskError::retry(format!("store: {e}")),
            other => TaskError::permanent(other.to_string()),
        }
    }
}

pub(super) type TaskResult = Result<(), TaskError>;

/// How often a sandbox coming up is looked at.
const HEALTH_POLL: Duration = Duration::from_millis(500);
/// How often a harness coming up is asked whether it answers, and at most how many questions
/// are open at once.
const HARNESS_ASK: Duration = Duration::from_millis(250);
const HARNESS_ASKS_OPEN: usize = 8;
/// While a harness does not answer, how often a warm pool's sandbox is handed its claim again.
const HAND_OVER_AGAIN: Duration = Duration::from_secs(3);

/// How a session's detail starts while its messages wait for the gateway.
const GATEWAY_WAIT: &str = "messages wait for the gateway";

/// Waits for a health change of `sandbox` (or any sign that something may have been missed),
/// at most [`HEALTH_POLL`] × 4.
async fn wait_for_change(
    changes: &mut tokio::sync::broadcast::Receiver<crate::runtime::HealthChange>,
    sandbox: &SandboxRef,
) {
    let wait = async {
        loop {
            match changes.recv().await {
                Ok(c) if c.sandbox == *sandbox => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                // No watch from this runtime: fall back to the timer.
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    };
    let _ = tokio::time::timeout(HEALTH_POLL * 4, wait).await;
}

impl Core {
    pub(crate) async fn run_task(&self, task: &Task, worker: &str) -> TaskResult {
        let kind = task
            .known_kind()
            .map_err(|e| TaskError::permanent(e.to_string()))?;
        match kind {
            TaskKind::DiagEcho => return self.diag_echo(task, worker).await,
            TaskKind::Webhook => return self.deliver_webhook(task).await,
            _ => {}
        }
        let Some(id) = task.session_id else {
            return Err(TaskError::permanent(format!(
                "task kind {kind} needs a session"
            )));
        };
        let Some(session) = self.store().get_session(id).await? else {
            // The session was deleted: nothing left to do.
            return Ok(());
        };
        // A command's task acts for its own command only: one overtaken by a newer command of
        // the session (its tasks run one at a time, so the newer one's task comes next) has
        // nothing left to do, and every write it makes is fenced by its number.
        if let Some(command) = task.command
            && command != session.command_seq
        {
            tracing::info!(session = %id, task = %kind, "overtaken by a newer command: nothing to do");
            return Ok(());
        }
        let fence = session.command_seq;
        let result = match kind {
            TaskKind::Provision => self.on_provision(session).await,
            TaskKind::Restart => self.on_restart(session).await,
            TaskKind::Suspend => self.on_suspend(session).await,
            TaskKind::Resume => self.on_resume(session).await,
            TaskKind::End => self.on_end(session).await,
            TaskKind::Deliver => self.on_deliver(session).await,
            TaskKind::Abort => self.on_abort(session).await,
            TaskKind::DiagEcho => self.diag_echo(task, worker).await,
            TaskKind::Webhook => self.deliver_webhook(task).await,
        };
        match result {
            Err(err) if task.command.is_some() && self.overtaken(id, fence).await => {
                tracing::info!(session = %id, task = %kind, error = %err.message, "overtaken by a newer command while it ran: stopped");
                Ok(())
            }
            other => other,
        }
    }

    /// Whether the session was given a newer command than `fence` (or is gone).
    async fn overtaken(&self, id: Uuid, fence: i64) -> bool {
        match self.store().get_session(id).await {
            Ok(Some(session)) => session.command_seq != fence,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    async fn set_phase(
        &self,
        id: Uuid,
        fence: Option<i64>,
        status: Option<SessionStatus>,
        phase: Phase,
        detail: Option<String>,
    ) -> Result<Session, TaskError> {
        let patch = SessionPatch {
            status,
            phase: Some(phase),
            phase_detail: Some(detail),
            only_if_command: fence,
            ..Default::default()
        };
        Ok(self.store().update_session(id, &patch).await?)
    }

    /// Marks a session failed with a reason an operator can act on (unless a command newer than
    /// `fence` came meanwhile: then the failure is no longer the session's).
    /// A delivery that gave up for good: the messages it could not send fail with its last
    /// error (they waited as `pending`, "sending…", for ever), and the session no longer says
    /// it waits for the gateway.
    pub(crate) async fn fail_pending_messages(&self, id: Uuid, reason: &str) -> TaskResult {
        let mut after = 0;
        loop {
            let page = self.store().list_messages(id, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for m in page
                .iter()
                .filter(|m| m.role == MessageRole::User && m.status == MessageStatus::Pending)
            {
                let patch = MessagePatch {
                    status: Some(MessageStatus::Failed),
                    error: Some(Some(format!("not sent: {reason}"))),
                    ..Default::default()
                };
                self.store().update_message(id, m.seq, &patch).await?;
            }
        }
        let session = self.store().get_session(id).await?;
        if session
            .and_then(|s| s.phase_detail)
            .is_some_and(|d| d.starts_with(GATEWAY_WAIT))
        {
            let patch = SessionPatch {
                phase_detail: Some(None),
                ..Default::default()
            };
            self.store().update_session(id, &patch).await?;
        }
        Ok(())
    }

    pub(crate) async fn fail_session(
        &self,
        id: Uuid,
        fence: Option<i64>,
        reason: &str,
    ) -> TaskResult {
        tracing::warn!(session = %id, reason, "session failed");
        let patch = SessionPatch {
            status: Some(SessionStatus::Failed),
            phase: Some(Phase::Failed),
            phase_detail: Some(None),
            failure_reason: Some(Some(reason.to_string())),
            idle_deadline: Some(None),
            only_if_command: fence,
            ..Default::default()
        };
        self.store().update_session(id, &patch).await?;
        Ok(())
    }

    pub(crate) fn sandbox_of(session: &Session) -> Option<SandboxRef> {
        match (&session.runtime, &session.sandbox_ref) {
            (Some(runtime), Some(name)) => Some(SandboxRef {
                runtime: runtime.clone(),
                name: name.clone(),
            }),
            _ => None,
        }
    }

    /// A runtime error as a task outcome: transient ones retry, the rest fail the session.
    async fn runtime_failure(
        &self,
        id: Uuid,
        fence: Option<i64>,
        what: &str,
        err: RuntimeError,
    ) -> TaskResult {
        if err.is_transient() {
            return Err(TaskError::retry(format!("{what}: {err}")));
        }
        self.fail_session(id, fence, &format!("{what}: {err}"))
            .await
    }

    async fn on_provision(&self, session: Session) -> TaskResult {
        if !session.status.wants_sandbox() {
            return Ok(());
        }
        self.bring_up(session, true).await
    }

    async fn on_restart(&self, session: Session) -> TaskResult {
        if session.status != SessionStatus::Creating {
            return Ok(());
        }
        let fence = Some(session.command_seq);
        let mut fresh = true;
        if let Some(sandbox) = Self::sandbox_of(&session) {
            // A suspended sandbox (a suspend that ran just before) has nothing to restart: it
            // is brought back instead.
            let suspended = self
                .runtime()
                .observe(&sandbox)
                .await
                .is_ok_and(|h| h.phase == crate::model::HealthPhase::Suspended);
            let restarted = if suspended {
                self.runtime().resume(&sandbox).await
            } else {
                self.runtime().restart(&sandbox).await
            };
            match restarted {
                Ok(()) => fresh = false,
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    return self
                        .runtime_failure(session.id, fence, "restart failed", e)
                        .await;
                }
            }
        }
        self.bring_up(session, fresh).await
    }

    async fn on_resume(&self, session: Session) -> TaskResult {
        if session.status != SessionStatus::Creating {
            return Ok(());
        }
        let mut fresh = true;
        if let Some(sandbox) = Self::sandbox_of(&session) {
            match self.runtime().resume(&sandbox).await {
                Ok(()) => fresh = false,
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    let fence = Some(session.command_seq);
                    return self
                        .runtime_failure(session.id, fence, "resume failed", e)
                        .await;
                }
            }
        }
        self.bring_up(session, fresh).await
    }

    async fn on_suspend(&self, session: Session) -> TaskResult {
        if !session.status.wants_sandbox() {
            return Ok(());
        }
        if let Some(sandbox) = Self::sandbox_of(&session) {
            match self.runtime().suspend(&sandbox).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    let fence = Some(session.command_seq);
                    return self
                        .runtime_failure(session.id, fence, "suspend failed", e)
                        .await;
                }
            }
        }
        let patch = SessionPatch {
            status: Some(SessionStatus::Suspended),
            phase: Some(Phase::Suspended),
            phase_detail: Some(None),
            idle_deadline: Some(None),
            only_if_command: Some(session.command_seq),
            ..Default::default()
        };
        self.store().update_session(session.id, &patch).await?;
        Ok(())
    }

    async fn on_end(&self, session: Session) -> TaskResult {
        // Dead first: from here on nothing (the reconciler, ingest, a queued delivery) treats
        // the session as live, so its sandbox going away cannot bring it back.
        if session.status != SessionStatus::Dead {
            let patch = SessionPatch {
                status: Some(SessionStatus::Dead),
                phase: Some(Phase::Dead),
                phase_detail: Some(None),
                idle_deadline: Some(None),
                stopped_at: Some(Some(chrono::Utc::now())),
                only_if_command: Some(session.command_seq),
                ..Default::default()
            };
            self.store().update_session(session.id, &patch).await?;
        }
        self.revoke_gateway_key(session.id).await;
        if let Some(sandbox) = Self::sandbox_of(&session) {
            match self.runtime().destroy(&sandbox).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) if e.is_transient() => {
                    return Err(TaskError::retry(format!("destroy failed: {e}")));
                }
                Err(e) => {
                    // The reconciler destroys an ended session's sandbox later.
                    tracing::warn!(session = %session.id, %e, "sandbox not destroyed");
                }
            }
        }
        Ok(())
    }

    /// Provisions (or finds) the sandbox, waits for it and its harness, opens a harness session
    /// and delivers what is pending.
    async fn bring_up(&self, session: Session, provision: bool) -> TaskResult {
        let id = session.id;
        let fence = Some(session.command_seq);
        let Some(agent) = self.config().agents.get(&session.agent_id).cloned() else {
            return self
                .fail_session(
                    id,
                    fence,
                    &format!(
                        "agent {:?} is no longer configured; add it back or end this session",
                        session.agent_id
                    ),
                )
                .await;
        };
        let fresh = provision || Self::sandbox_of(&session).is_none();
        let sandbox = if fresh {
            self.set_phase(
                id,
                fence,
                Some(SessionStatus::Creating),
                Phase::CreatingSandbox,
                None,
            )
            .await?;
            if let Err(reason) = self.ensure_gateway_key(id, &agent).await {
                return match reason {
                    KeyError::Retry(e) => Err(TaskError::retry(e)),
                    KeyError::Fail(e) => self.fail_session(id, fence, &e).await,
                };
            }
            let mut session_env = self.store().session_env(id).await?;
            // The harness password: made the first time, the same for every later sandbox.
            let password = match session_env.remove(super::HARNESS_PASSWORD_ENV) {
                Some(password) => password,
                None => {
                    let password = new_password();
                    self.store()
                        .set_session_env(id, super::HARNESS_PASSWORD_ENV, Some(&password))
                        .await?;
                    password
                }
            };
            let mut env = env::sandbox_env(&self.inner.container_env, &agent.env, &session_env);
            // A warm sandbox when the agent's pool has one ready; else one started now.
            // A claim waits on the cluster (the controller binding it, the hand-over's exec):
            // it holds no worker slot meanwhile either.
            let claimed = super::worker::without_slot(self.claim_warm(
                id,
                &session.team,
                &agent,
                &password,
                &env,
            ))
            .await;
            let (sandbox, launch) = match claimed {
                Ok(claimed) => claimed,
                Err(cold) => {
                    env.extend(self.harness().auth_env(&password));
                    env.entry(super::GATEWAY_KEY_ENV.to_string())
                        .or_insert_with(|| "sk-agentdeck-no-key".to_string());
                    let access = crate::harness::GatewayAccess {
                        base_url: self
                            .config()
                            .gateway
                            .sandbox_url
                            .clone()
                            .unwrap_or_else(|| "http://127.0.0.1:4000".to_string()),
                        key_env: super::GATEWAY_KEY_ENV.to_string(),
                        price: self.model_price(&agent.model).await,
                    };
                    let spec = SandboxSpec {
                        session_id: id,
                        team: session.team.clone(),
                        env,
                        files: self.harness().sandbox_files(&agent, &access),
                        agent: agent.clone(),
                    };
                    match self.runtime().provision(&spec).await {
                        Ok(sandbox) => (sandbox, cold),
                        Err(e) => {
                            return self
                                .runtime_failure(id, fence, "cannot create the sandbox", e)
                                .await;
                        }
                    }
                }
            };
            let launched = [launch.event()];
            super::write_aside("recording how the sandbox was launched", id, || {
                self.store().append_events(id, &launched)
            })
            .await;
            let patch = SessionPatch {
                runtime: Some(Some(sandbox.runtime.clone())),
                sandbox_ref: Some(Some(sandbox.name.clone())),
                only_if_command: fence,
                ..SessionPatch::status(SessionStatus::Creating, Phase::SandboxPending)
            };
            self.store().update_session(id, &patch).await?;
            sandbox
        } else {
            match Self::sandbox_of(&session) {
                Some(sandbox) => sandbox,
                None => return Err(TaskError::retry("session lost its sandbox reference")),
            }
        };

        // Waiting for the sandbox and its harness holds no worker slot: a burst of sessions
        // waits for its pods together, not four at a time.
        let ready = super::worker::without_slot(self.await_ready(id, fence, &sandbox)).await;
        let endpoint = match ready? {
            Some(url) => self.harness_endpoint(id, url).await?,
            None => return Ok(()), // the session was failed with the reason
        };
        // A sandbox taken from a warm pool whose pod was made again waits for its claim.
        if !fresh && let Err(e) = self.hand_over_again(id, &agent, &sandbox).await {
            return Err(TaskError::retry(e.to_string()));
        }

        self.set_phase(
            id,
            fence,
            None,
            Phase::HarnessStarting,
            Some(endpoint.url.clone()),
        )
        .await?;
        let deadline = Instant::now() + self.config().sessions.phase_timeout;
        let answered = super::worker::without_slot(async {
            use futures::StreamExt;
            let mut handed = Instant::now();
            // A new question every HARNESS_ASK, whether or not the last ones were answered:
            // opencode listens about half a second before it serves, and a connection made in
            // that window waits for the question's whole time.
            let mut asks = futures::stream::FuturesUnordered::new();
            let mut every = tokio::time::interval(HARNESS_ASK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error = None;
            loop {
                tokio::select! {
                    _ = every.tick(), if asks.len() < HARNESS_ASKS_OPEN => {
                        if Instant::now() > deadline {
                            return Err(last_error.unwrap_or_else(|| {
                                crate::harness::HarnessError::Unreachable {
                                    endpoint: endpoint.url.clone(),
                                    reason: "no answer".into(),
                                }
                            }));
                        }
                        // A warm pool's sandbox whose pod was made again meanwhile (it died
                        // just after its claim, or was being replaced when handed it) waits
                        // for its claim: handed again (a no-op for any other sandbox).
                        if last_error.is_some() && handed.elapsed() > HAND_OVER_AGAIN {
                            handed = Instant::now();
                            if let Err(e) = self.hand_over_again(id, &agent, &sandbox).await {
                                tracing::debug!(session = %id, error = %e, "cannot hand the claim over again yet");
                            }
                        }
                        asks.push(self.harness().health(&endpoint));
                    }
                    Some(answer) = asks.next() => match answer {
                        Ok(()) => return Ok(()),
                        Err(e) => last_error = Some(e),
                    },
                }
            }
        })
        .await;
        if let Err(e) = answered {
            return self
                .fail_session(
                    id,
                    fence,
                    &format!(
                        "the harness did not answer within {}: {e}",
                        humantime::format_duration(self.config().sessions.phase_timeout)
                    ),
                )
                .await;
        }
        let harness_session = self
            .open_harness_session(&session, &endpoint, &agent)
            .await?;
        self.set_phase(id, fence, None, Phase::HarnessReady, None)
            .await?;
        let patch = SessionPatch {
            harness_session_id: Some(Some(harness_session)),
            failure_reason: Some(None),
            idle_deadline: Some(Some(
                chrono::Utc::now()
                    + chrono::Duration::from_std(agent.idle_timeout)
                        .unwrap_or(chrono::Duration::MAX),
            )),
            last_activity_at: Some(chrono::Utc::now()),
            only_if_command: fence,
            ..SessionPatch::status(SessionStatus::Ready, Phase::Ready)
        };
        let session = self.store().update_session(id, &patch).await?;
        // What waits for the agent goes now; what cannot go yet (its gateway is down) waits
        // in a delivery of its own: the sandbox is up either way.
        match self.on_deliver(session).await {
            Err(e) if !e.permanent => {
                tracing::info!(session = %id, error = %e.message, "the first delivery waits");
                self.enqueue(TaskKind::Deliver, id)
                    .await
                    .map_err(|e| TaskError::retry(e.to_string()))?;
                Ok(())
            }
            other => other,
        }
    }

    /// Waits until the sandbox is ready and has an endpoint, mirroring its health in the
    /// session's phase. `None` when the session was failed instead.
    async fn await_ready(
        &self,
        id: Uuid,
        fence: Option<i64>,
        sandbox: &SandboxRef,
    ) -> Result<Option<String>, TaskError> {
        let timeout = self.config().sessions.phase_timeout;
        let deadline = Instant::now() + timeout;
        let mut shown: Option<(Phase, Option<String>)> = None;
        // Woken by the runtime's health changes; the timeout is only a safety net.
        let mut changes = self.runtime().watch();
        loop {
            let health = match self.runtime().health(sandbox).await {
                Ok(h) => h,
                Err(e) if e.is_transient() => {
                    tracing::debug!(session = %id, %e, "sandbox health not readable yet");
                    tokio::time::sleep(HEALTH_POLL).await;
                    continue;
                }
                Err(e) => {
                    self.runtime_failure(id, fence, "sandbox health", e).await?;
                    return Ok(None);
                }
            };
            let phase = match health.phase {
                HealthPhase::Ready if health.endpoint.is_some() => {
                    return Ok(health.endpoint);
                }
                HealthPhase::Failed | HealthPhase::Gone => {
                    let reason = health
                        .reason
                        .unwrap_or_else(|| format!("sandbox is {:?}", health.phase));
                    self.fail_session(id, fence, &format!("sandbox failed: {reason}"))
                        .await?;
                    return Ok(None);
                }
                HealthPhase::Pending | HealthPhase::Scheduling | HealthPhase::Pulling => {
                    Phase::SandboxPending
                }
                _ => Phase::SandboxRunning,
            };
            let now_shown = (phase, health.reason.clone());
            if shown.as_ref() != Some(&now_shown) {
                self.set_phase(id, fence, None, phase, health.reason.clone())
                    .await?;
                shown = Some(now_shown);
            }
            if Instant::now() > deadline {
                let reason = health
                    .reason
                    .unwrap_or_else(|| format!("{:?}", health.phase));
                self.fail_session(
                    id,
                    fence,
                    &format!(
                        "sandbox not ready within {} (last seen: {reason})",
                        humantime::format_duration(timeout)
                    ),
                )
                .await?;
                return Ok(None);
            }
            // A newer command (an end while this one waits for a slow pod, say) takes over.
            if let Some(fence) = fence
                && self.overtaken(id, fence).await
            {
                return Err(TaskError::retry("overtaken by a newer command"));
            }
            wait_for_change(&mut changes, sandbox).await;
        }
    }

    async fn endpoint_of(&self, session: &Session) -> Result<Endpoint, TaskError> {
        let Some(sandbox) = Self::sandbox_of(session) else {
            return Err(TaskError::retry("the session has no sandbox yet"));
        };
        let url = match self.runtime().health(&sandbox).await {
            Ok(h) => h
                .endpoint
                .ok_or_else(|| TaskError::retry("the sandbox has no endpoint yet"))?,
            Err(e) => return Err(TaskError::retry(format!("sandbox health: {e}"))),
        };
        Ok(self.harness_endpoint(session.id, url).await?)
    }

    /// The session's harness at `url`, with the password its sandbox was given (if any).
    pub(crate) async fn harness_endpoint(
        &self,
        id: Uuid,
        url: String,
    ) -> Result<Endpoint, crate::store::StoreError> {
        let password = self
            .store()
            .session_env(id)
            .await?
            .remove(super::HARNESS_PASSWORD_ENV);
        Ok(Endpoint::new(url, password))
    }

    /// Sends the session's pending user messages to the harness, oldest first.
    async fn on_deliver(&self, session: Session) -> TaskResult {
        let ready = session.status.is_live();
        let Some(harness_session) = session.harness_session_id.clone().filter(|_| ready) else {
            // Not up yet: bringing it up delivers what is pending.
            return Ok(());
        };
        let mut pending = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store().list_messages(session.id, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            pending.extend(
                page.into_iter()
                    .filter(|m| m.role == MessageRole::User && m.status == MessageStatus::Pending),
            );
        }
        if pending.is_empty() {
            return Ok(());
        }
        // An agent whose gateway is down only fails its turn after its own retries (over a
        // minute, busy, with an error naming no gateway): the messages wait for it here, the
        // session says why, and if it does not come back they fail saying so.
        if let Err(why) = self.gateway_answers().await {
            let patch = SessionPatch {
                phase_detail: Some(Some(format!("{GATEWAY_WAIT}: {why}"))),
                ..Default::default()
            };
            super::write_aside("saying the gateway is awaited", session.id, || {
                self.store().update_session(session.id, &patch)
            })
            .await;
            return Err(TaskError::retry(why));
        }
        if session
            .phase_detail
            .as_deref()
            .is_some_and(|d| d.starts_with(GATEWAY_WAIT))
        {
            let patch = SessionPatch {
                phase_detail: Some(None),
                ..Default::default()
            };
            super::write_aside("the gateway is back", session.id, || {
                self.store().update_session(session.id, &patch)
            })
            .await;
        }
        let endpoint = self.endpoint_of(&session).await?;
        // A harness that lost the conversation (its sandbox made again under the live session:
        // an eviction, a drain) would take the prompt into nothing: the messages wait, and a
        // restart brings the session back with the conversation replayed, then delivers them.
        match self
            .harness()
            .has_session(&endpoint, &harness_session)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(session = %session.id, "the harness lost the session's conversation; restarting the session to recover it");
                return self.restart(session.id).await.map(|_| ()).map_err(|e| {
                    TaskError::retry(format!("cannot restart the session to recover it: {e}"))
                });
            }
            Err(e) => return Err(TaskError::retry(format!("the harness: {e}"))),
        }
        for message in pending {
            let config = self.config();
            let agent = config.agents.get(&session.agent_id);
            let prompt = crate::harness::Prompt {
                text: message.text(),
                model: agent.map(|a| a.model.clone()).unwrap_or_default(),
                system: agent.and_then(|a| a.system_prompt.clone()),
                no_reply: false,
            };
            let busy = SessionPatch {
                idle_deadline: Some(None),
                last_activity_at: Some(chrono::Utc::now()),
                ..Transition::Delivering.patch()
            };
            match self.store().update_session(session.id, &busy).await {
                Ok(_) => {}
                // A command is on its way (suspend, end …) or the session is no longer live:
                // the messages wait, and bringing the sandbox up again delivers them.
                Err(crate::store::StoreError::Conflict(why)) => {
                    tracing::debug!(session = %session.id, %why, "delivery waits");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            match self
                .harness()
                .send(&endpoint, &harness_session, &prompt)
                .await
            {
                Ok(()) => {
                    self.store()
                        .update_message(
                            session.id,
                            message.seq,
                            &MessagePatch {
                                status: Some(MessageStatus::Complete),
                                ..Default::default()
                            },
                        )
                        .await?;
                }
                Err(crate::harness::HarnessError::Unreachable { endpoint, reason }) => {
                    return Err(TaskError::retry(format!(
                        "harness at {endpoint} unreachable: {reason}"
                    )));
                }
                // The harness lost the conversation (its sandbox was made again under the
                // live session: an eviction, a drain): the message waits, and a restart brings
                // the session back with the conversation replayed, then delivers it.
                Err(crate::harness::HarnessError::UnknownSession(why)) => {
                    tracing::warn!(session = %session.id, %why, "the harness lost the session's conversation; restarting the session to recover it");
                    if let Err(e) = self.restart(session.id).await {
                        return Err(TaskError::retry(format!(
                            "cannot restart the session to recover it: {e}"
                        )));
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.store()
                        .update_message(
                            session.id,
                            message.seq,
                            &MessagePatch {
                                status: Some(MessageStatus::Failed),
                                error: Some(Some(e.to_string())),
                                ..Default::default()
                            },
                        )
                        .await?;
                    let idle = Transition::TurnStopped
                        .patch()
                        .detail(format!("the agent refused the last message: {e}"));
                    super::write_aside("settling the session idle", session.id, || {
                        self.store().update_session(session.id, &idle)
                    })
                    .await;
                }
            }
        }
        Ok(())
    }

    async fn on_abort(&self, session: Session) -> TaskResult {
        if session.status != SessionStatus::Busy {
            return Ok(());
        }
        let Some(harness_session) = session.harness_session_id.clone() else {
            return Ok(());
        };
        let endpoint = self.endpoint_of(&session).await?;
        self.harness()
            .abort(&endpoint, &harness_session)
            .await
            .map_err(|e| TaskError::retry(format!("abort: {e}")))?;
        // Written only if the turn had not ended on its own meanwhile, and not over a command
        // on its way (an end or a suspend asked for during the turn).
        let idle = Transition::TurnStopped.patch().detail("aborted");
        super::write_aside("settling the aborted session idle", session.id, || {
            self.store().update_session(session.id, &idle)
        })
        .await;
        Ok(())
    }

    /// Makes sure the session has its gateway key (a virtual key made for it, or the configured
    /// sandbox key), kept in its secret env so that a new sandbox gets the same one.
    /// What the agent's model costs, from the gateway; `None` (the price unknown, and said so
    /// wherever cost shows) when no gateway is configured or it does not say.
    async fn model_price(&self, model: &str) -> Option<crate::model::ModelPrice> {
        let gateway = self.gateway()?;
        match gateway.price(model).await {
            Ok(price) => {
                if price.is_none() {
                    tracing::info!(
                        model,
                        "the gateway knows no price for this model; its cost will show as unknown"
                    );
                }
                price
            }
            Err(err) => {
                tracing::warn!(model, %err, "cannot read the gateway's prices; cost will show as unknown");
                None
            }
        }
    }

    async fn ensure_gateway_key(
        &self,
        id: Uuid,
        agent: &crate::config::AgentSpec,
    ) -> Result<(), KeyError> {
        let env = self
            .store()
            .session_env(id)
            .await
            .map_err(|e| KeyError::Retry(format!("store: {e}")))?;
        if env.contains_key(super::GATEWAY_KEY_ENV) {
            return Ok(());
        }
        let Some(gateway) = self.gateway() else {
            return Ok(());
        };
        use crate::gateway::GatewayError;
        match gateway.key_for(id, &agent.model).await {
            Ok(Some(key)) => {
                self.store()
                    .set_session_env(id, super::GATEWAY_KEY_ENV, Some(&key.key))
                    .await
                    .map_err(|e| KeyError::Retry(format!("store: {e}")))?;
                if key.revocable {
                    self.store()
                        .set_session_env(id, super::GATEWAY_KEY_VIRTUAL_ENV, Some("1"))
                        .await
                        .map_err(|e| KeyError::Retry(format!("store: {e}")))?;
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e @ GatewayError::Unreachable { .. }) => Err(KeyError::Retry(e.to_string())),
            Err(e) => Err(KeyError::Fail(format!(
                "cannot get a gateway key for the sandbox: {e}"
            ))),
        }
    }

    /// Revokes the session's virtual key, if it has one (best effort: it expires anyway).
    async fn revoke_gateway_key(&self, id: Uuid) {
        let Ok(env) = self.store().session_env(id).await else {
            return;
        };
        let (Some(key), Some(_)) = (
            env.get(super::GATEWAY_KEY_ENV),
            env.get(super::GATEWAY_KEY_VIRTUAL_ENV),
        ) else {
            return;
        };
        let Some(gateway) = self.gateway() else {
            return;
        };
        match gateway.revoke(key).await {
            Ok(()) => {
                for name in [super::GATEWAY_KEY_ENV, super::GATEWAY_KEY_VIRTUAL_ENV] {
                    super::write_aside("forgetting the revoked gateway key", id, || {
                        self.store().set_session_env(id, name, None)
                    })
                    .await;
                }
            }
            Err(e) => tracing::warn!(session = %id, %e, "cannot revoke the session's gateway key"),
        }
    }

    /// The harness conversation for a session coming up: the one it had if the harness still
    /// knows it, else a new one into which the stored conversation is replayed.
    async fn open_harness_session(
        &self,
        session: &Session,
        endpoint: &Endpoint,
        agent: &crate::config::AgentSpec,
    ) -> Result<String, TaskError> {
        let id = session.id;
        if let Some(known) = &session.harness_session_id {
            match self.harness().has_session(endpoint, known).await {
                Ok(true) => {
                    self.note_recovery(id, false, known).await?;
                    return Ok(known.clone());
                }
                Ok(false) => {}
                Err(e) => return Err(TaskError::retry(format!("harness: {e}"))),
            }
        }
        let created = self
            .harness()
            .create_session(endpoint, &session.title)
            .await
            .map_err(|e| TaskError::retry(format!("harness session: {e}")))?;
        // A fork's first harness conversation starts from its parent's, copied: replayed the
        // same way.
        let forked = session.parent_id.is_some() && session.harness_session_id.is_none();
        if (session.harness_session_id.is_some() || session.last_message_seq > 0)
            && let Some(history) = self.history_for_replay(id, forked).await?
        {
            let prompt = crate::harness::Prompt {
                text: history,
                model: agent.model.clone(),
                system: None,
                no_reply: true,
            };
            self.harness()
                .send(endpoint, &created, &prompt)
                .await
                .map_err(|e| TaskError::retry(format!("replaying history: {e}")))?;
            if forked {
                self.note_fork(session).await?;
            } else {
                self.note_recovery(id, true, &created).await?;
            }
        }
        Ok(created)
    }

    /// Records in the transcript that the session came back after its sandbox restarted, and
    /// fails the assistant turns that the restart interrupted.
    async fn note_recovery(&self, id: Uuid, rehydrated: bool, harness_session: &str) -> TaskResult {
        let mut after = 0;
        let mut interrupted = Vec::new();
        loop {
            let page = self.store().list_messages(id, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            interrupted.extend(page.into_iter().filter(|m| {
                m.role == MessageRole::Assistant && m.status == MessageStatus::Pending
            }));
        }
        for mut m in interrupted {
            let error = "interrupted: the agent's sandbox stopped during this turn";
            let why = crate::model::why_tools_stopped(MessageStatus::Failed, Some(error));
            let mut stopped = false;
            for part in &mut m.parts {
                stopped |= why.as_deref().is_some_and(|why| part.stop_unfinished(why));
            }
            self.store()
                .update_message(
                    id,
                    m.seq,
                    &MessagePatch {
                        status: Some(MessageStatus::Failed),
                        error: Some(Some(error.into())),
                        parts: stopped.then(|| m.parts.clone()),
                        ..Default::default()
                    },
                )
                .await?;
        }
        self.store()
            .append_events(
                id,
                &[NewEvent::new(
                    "session.recovered",
                    serde_json::json!({"rehydrated": rehydrated, "harness_session": harness_session}),
                )],
            )
            .await?;
        if rehydrated {
            self.store()
                .append_message(
                    id,
                    &crate::model::NewMessage {
                        role: MessageRole::System,
                        status: MessageStatus::Complete,
                        parts: vec![crate::model::Part::text(
                            "Recovered: the agent's sandbox was restarted and the conversation so far was replayed to it.",
                        )],
                        harness_message_id: None,
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Records in a fork's transcript that its parent's conversation was replayed to it.
    async fn note_fork(&self, session: &Session) -> TaskResult {
        let text = format!(
            "Forked from session {} at message #{}: the conversation so far was replayed to the agent.",
            session.parent_id.map(|p| p.to_string()).unwrap_or_default(),
            session.fork_seq.unwrap_or_default()
        );
        self.store()
            .append_message(
                session.id,
                &crate::model::NewMessage {
                    role: MessageRole::System,
                    status: MessageStatus::Complete,
                    parts: vec![crate::model::Part::text(&text)],
                    harness_message_id: None,
                },
            )
            .await?;
        Ok(())
    }

    /// The stored conversation as text for a new harness conversation, newest kept when long.
    async fn history_for_replay(
        &self,
        id: Uuid,
        forked: bool,
    ) -> Result<Option<String>, TaskError> {
        const LIMIT: usize = 100 * 1024;
        let mut turns = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store().list_messages(id, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for m in page {
                if m.status == MessageStatus::Pending && m.role == MessageRole::User {
                    continue; // not yet delivered: it goes next, as itself
                }
                let mut text = m.text();
                for part in &m.parts {
                    if let crate::model::Part::Tool {
                        tool,
                        input,
                        output,
                        ..
                    } = part
                    {
                        text.push_str(&format!(
                            "\n[tool {tool} {input}{}]",
                            output
                                .as_deref()
                                .map(|o| format!(" → {}", o.chars().take(500).collect::<String>()))
                                .unwrap_or_default()
                        ));
                    }
                }
                if text.trim().is_empty() || m.role == MessageRole::System {
                    continue;
                }
                turns.push(format!("{}: {}", m.role, text.trim()));
            }
        }
        if turns.is_empty() {
            return Ok(None);
        }
        let mut body = String::new();
        for turn in turns.iter().rev() {
            if body.len() + turn.len() > LIMIT {
                break;
            }
            body = format!("{turn}\n\n{body}");
        }
        let why = if forked {
            "in a new session forked from another"
        } else {
            "after the agent's sandbox restarted"
        };
        Ok(Some(format!(
            "{} {why}. \
             Here is the conversation so far, for context; do not answer it, wait for the next message.\n\n{body}",
            super::REPLAY_PREFIX
        )))
    }

    /// `diag.echo`: records `started` and `finished` events (with the worker's name) in the
    /// task's session, pausing `sleep_ms` in between.
    async fn diag_echo(&self, task: &Task, worker: &str) -> TaskResult {
        let Some(session) = task.session_id else {
            return Err(TaskError::permanent("diag.echo needs a session"));
        };
        let sleep_ms = task.payload["sleep_ms"].as_u64().unwrap_or(0);
        let event = |stage: &str| {
            NewEvent::new(
                "diag.echo",
                serde_json::json!({"task": task.id, "stage": stage, "worker": worker,
                                   "attempt": task.attempts}),
            )
        };
        self.store()
            .append_events(session, &[event("started")])
            .await?;
        if sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        }
        self.store()
            .append_events(session, &[event("finished")])
            .await?;
        Ok(())
    }
}

/// 256 random bits, hex: a harness password.
fn new_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
