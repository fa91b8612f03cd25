//! One sandbox as the runtime holds it in memory: its health, its current process, and the
//! transitions between them. Every transition is written to `sandbox.json` and sent to
//! `watch()` subscribers.

use super::launch::LaunchSpec;
use super::process::ExitInfo;
use super::record::{RecordState, SandboxRecord};
use crate::runtime::{HealthChange, HealthPhase, SandboxEvent, SandboxHealth, SandboxRef};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use uuid::Uuid;

/// How many events a sandbox keeps.
const MAX_EVENTS: usize = 20;

/// One run of the agent: the leader of the sandbox's process group.
#[derive(Debug)]
pub struct Run {
    /// Tells this run from later ones (a late report of an earlier run is ignored).
    pub generation: u64,
    pub pid: i32,
    pub start_time: Option<u64>,
    pub port: u16,
    /// Being stopped on purpose: its exit is not a failure.
    pub stopping: bool,
    /// How it ended, once it did.
    pub exit: Option<ExitInfo>,
    pub monitor: Option<AbortHandle>,
}

impl Run {
    pub fn is_running(&self) -> bool {
        self.exit.is_none()
    }
}

#[derive(Debug)]
pub struct State {
    pub health: SandboxHealth,
    pub run: Option<Run>,
    pub suspended: bool,
    /// Destroyed: whoever still holds this entry must look again.
    pub removed: bool,
    /// Has a working folder and a record (it was started at least once, or found on disk).
    pub exists: bool,
    pub launch: Option<LaunchSpec>,
    pub generation: u64,
    /// When this process last wrote (or read) `sandbox.json`: a record written at another time
    /// was written by another agentdeck process over the same root.
    pub written_at: Option<DateTime<Utc>>,
    /// The port of the last run, tried first on the next.
    pub port: Option<u16>,
    /// Set on a warm pool's sandbox.
    pub pool: Option<super::record::PoolMember>,
}

impl State {
    pub fn set_phase(&mut self, phase: HealthPhase, reason: Option<String>) {
        if self.health.phase != phase {
            self.health.phase = phase;
            self.health.since = Utc::now();
        }
        self.health.reason = reason;
        if phase != HealthPhase::Ready {
            self.health.endpoint = None;
        }
    }

    pub fn event(&mut self, warning: bool, reason: &str, message: String) {
        let events = &mut self.health.recent_events;
        events.push(SandboxEvent {
            at: Utc::now(),
            kind: if warning { "Warning" } else { "Normal" }.to_string(),
            reason: reason.to_string(),
            message,
        });
        if events.len() > MAX_EVENTS {
            let extra = events.len() - MAX_EVENTS;
            events.drain(..extra);
        }
    }

    /// The current run, when it is still going.
    pub fn running(&self) -> Option<&Run> {
        self.run.as_ref().filter(|r| r.is_running())
    }

    fn record(&self, session_id: Uuid) -> SandboxRecord {
        let state = if self.suspended {
            RecordState::Suspended
        } else if self.running().is_some() {
            RecordState::Running
        } else {
            RecordState::Exited
        };
        SandboxRecord {
            session_id,
            state,
            pid: self.run.as_ref().map(|r| r.pid),
            start_time: self.run.as_ref().and_then(|r| r.start_time),
            port: self.port,
            restarts: self.health.restarts,
            last_termination: self.health.last_termination.clone(),
            last_termination_at: self.health.last_termination_at,
            updated_at: Utc::now(),
            events: self.health.recent_events.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// How a run that agentdeck stopped on purpose ended, as `last_termination` says it.
pub const STOPPED: &str = "stopped";

/// What every sandbox of a runtime shares.
#[derive(Clone)]
pub struct Shared {
    pub changes: broadcast::Sender<HealthChange>,
    /// For the harness's health checks.
    pub http: reqwest::Client,
    /// This host's name.
    pub node: Option<String>,
}

pub struct Sandbox {
    pub id: Uuid,
    pub dir: PathBuf,
    pub shared: Shared,
    /// Held through every lifecycle operation on this sandbox, one at a time.
    op: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<State>,
}

impl Sandbox {
    pub fn new(id: Uuid, dir: PathBuf, state: State, shared: Shared) -> Sandbox {
        Sandbox {
            id,
            dir,
            shared,
            op: Arc::new(tokio::sync::Mutex::new(())),
            state: Mutex::new(state),
        }
    }

    /// A sandbox not created yet.
    pub fn blank(node: Option<String>) -> State {
        let mut health = SandboxHealth::new(HealthPhase::Pending);
        health.node = node;
        State {
            health,
            run: None,
            suspended: false,
            removed: false,
            exists: false,
            launch: None,
            generation: 0,
            written_at: None,
            port: None,
            pool: None,
        }
    }

    /// Waits for the other operations on this sandbox to finish.
    pub async fn op_lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.op.clone().lock_owned().await
    }

    pub fn reference(&self) -> SandboxRef {
        SandboxRef {
            runtime: super::KIND.to_string(),
            name: self.id.to_string(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the state in `sandbox.json` and tells `watch()` subscribers.
    pub fn commit(&self, state: &mut State) {
        if state.removed {
            return;
        }
        if state.exists {
            let record = state.record(self.id);
            match record.write(&self.dir) {
                Ok(()) => state.written_at = Some(record.updated_at),
                Err(e) => {
                    tracing::warn!(sandbox = %self.id, error = %e, "cannot write the sandbox's record")
                }
            }
        }
        self.announce(state);
    }

    /// The session this sandbox is for: its own id, or (a warm pool's) the session that claimed
    /// it, if any.
    pub fn session(&self, state: &State) -> Option<Uuid> {
        match &state.pool {
            Some(member) => member.claimed_by,
            None => Some(self.id),
        }
    }

    pub fn announce(&self, state: &State) {
        // No subscriber is not an error.
        let _ = self.shared.changes.send(HealthChange {
            sandbox: self.reference(),
            session_id: self.session(state),
            health: state.health.clone(),
        });
    }

    /// The harness of run `generation` answered its health check.
    pub fn mark_ready(&self, generation: u64, endpoint: String) -> bool {
        let mut state = self.state();
        let current = matches!(
            state.running(),
            Some(run) if run.generation == generation && !run.stopping
        );
        if !current || state.health.phase == HealthPhase::Ready {
            return false;
        }
        tracing::info!(sandbox = %self.id, %endpoint, "sandbox is ready");
        state.set_phase(HealthPhase::Ready, None);
        state.health.endpoint = Some(endpoint.clone());
        state.event(false, "Ready", format!("the harness answers at {endpoint}"));
        self.commit(&mut state);
        true
    }

    /// Run `generation` ended. Returns whether the exit was unexpected.
    pub fn mark_exited(self: &Arc<Self>, generation: u64, exit: ExitInfo) -> bool {
        let mut state = self.state();
        let Some(run) = state.run.as_ref().filter(|r| r.generation == generation) else {
            return false;
        };
        if run.exit.is_some() {
            return false;
        }
        if !run.stopping && self.taken_over(&state) {
            // Another agentdeck stopped it: its record says what the sandbox is now.
            self.reload(&mut state);
            return false;
        }
        let Some(run) = state.run.as_mut() else {
            return false;
        };
        run.exit = Some(exit);
        run.monitor = None;
        let (pid, stopping) = (run.pid, run.stopping);
        let text = exit.to_string();
        // A stop asked for (suspend, restart, end) is not a crash: the SIGTERM it took reads
        // like one ("killed by signal 15").
        state.health.last_termination = Some(if stopping {
            STOPPED.to_string()
        } else {
            text.clone()
        });
        state.health.last_termination_at = Some(Utc::now());
        if stopping {
            tracing::debug!(sandbox = %self.id, pid, %text, "sandbox process stopped");
            state.event(false, "Stopped", format!("pid {pid} stopped: {text}"));
        } else {
            tracing::warn!(sandbox = %self.id, pid, %text, "sandbox process exited");
            state.set_phase(HealthPhase::Failed, Some(text.clone()));
            state.event(true, "Exited", format!("pid {pid} exited: {text}"));
        }
        self.commit(&mut state);
        !stopping
    }
}
