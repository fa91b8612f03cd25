//! Finding a sandbox again from its folder: what an earlier agentdeck left in `sandbox.json`
//! and `launch.json`. A process still running as recorded is taken over; one that is gone is
//! reported as failed.
//!
//! The same goes when another agentdeck process over the same root (a `serve` beside a
//! cockpit) changed a sandbox: a record this process did not write is read again.

use super::launch::LaunchSpec;
use super::monitor::{self, Watched};
use super::process;
use super::record::{self, RecordState, SandboxRecord};
use super::sandbox::{Run, Sandbox, State};
use crate::runtime::HealthPhase;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

pub const AWAY: &str = "exited while agentdeck was away";

/// A process to watch from now on.
pub struct Adopted {
    pub pid: i32,
    pub start_time: u64,
    pub port: u16,
}

/// The state of the sandbox in `dir` as its files tell it, and the process to adopt, if any.
pub fn load(id: Uuid, dir: &Path, node: Option<String>) -> (State, Option<Adopted>) {
    let mut state = Sandbox::blank(node);
    state.exists = true;
    state.launch = match record::read_launch(dir) {
        Ok(launch) => Some(launch),
        Err(reason) => {
            tracing::warn!(sandbox = %id, %reason, "sandbox cannot be started again");
            None::<LaunchSpec>
        }
    };
    let record = match SandboxRecord::read(dir) {
        Ok(record) => record,
        Err(reason) => {
            state.set_phase(
                HealthPhase::Failed,
                Some(format!("no usable sandbox record: {reason}")),
            );
            return (state, None);
        }
    };
    state.health.restarts = record.restarts;
    state.health.last_termination = record.last_termination.clone();
    state.health.last_termination_at = record.last_termination_at;
    state.health.recent_events = record.events.clone();
    state.health.since = record.updated_at;
    state.written_at = Some(record.updated_at);
    state.port = record.port;
    state.pool = record.pool.clone();
    match record.state {
        RecordState::Suspended => {
            state.suspended = true;
            state.set_phase(HealthPhase::Suspended, None);
            (state, None)
        }
        RecordState::Exited => {
            let reason = record
                .last_termination
                .clone()
                .unwrap_or_else(|| "exited".to_string());
            state.set_phase(HealthPhase::Failed, Some(reason));
            (state, None)
        }
        RecordState::Running => match (record.pid, record.start_time, record.port) {
            (Some(pid), Some(start_time), Some(port))
                if process::is_adoptable(pid, start_time, &id.to_string()) =>
            {
                tracing::info!(sandbox = %id, pid, port, "adopted a running sandbox");
                state.generation = 1;
                state.run = Some(Run {
                    generation: 1,
                    pid,
                    start_time: Some(start_time),
                    port,
                    stopping: false,
                    exit: None,
                    monitor: None,
                });
                state.set_phase(
                    HealthPhase::Starting,
                    Some(format!(
                        "adopted pid {pid}; waiting for the harness on port {port}"
                    )),
                );
                state.event(
                    false,
                    "Adopted",
                    format!("pid {pid}, port {port}, started by an earlier agentdeck"),
                );
                (
                    state,
                    Some(Adopted {
                        pid,
                        start_time,
                        port,
                    }),
                )
            }
            _ => {
                tracing::info!(sandbox = %id, "sandbox's process exited while agentdeck was away");
                state.set_phase(HealthPhase::Failed, Some(AWAY.to_string()));
                state.health.last_termination = Some(AWAY.to_string());
                state.health.last_termination_at = Some(chrono::Utc::now());
                state.event(true, "Exited", AWAY.to_string());
                (state, None)
            }
        },
    }
}

impl Sandbox {
    /// `sandbox.json` was written by another process since this one last wrote or read it.
    fn newer_record(&self, state: &State) -> Option<SandboxRecord> {
        if !state.exists || state.removed {
            return None;
        }
        let record = SandboxRecord::read(&self.dir).ok()?;
        (Some(record.updated_at) != state.written_at).then_some(record)
    }

    /// Another process's record names a run other than ours, or a suspension.
    pub(super) fn taken_over(&self, state: &State) -> bool {
        let Some(record) = self.newer_record(state) else {
            return false;
        };
        let ours = state
            .run
            .as_ref()
            .map_or((None, None), |r| (Some(r.pid), r.start_time));
        record.state == RecordState::Suspended || ours != (record.pid, record.start_time)
    }

    /// Replaces what this process knows of the sandbox with what its folder says, taking over
    /// a process that runs as recorded.
    pub(super) fn reload(self: &Arc<Self>, state: &mut State) {
        tracing::info!(sandbox = %self.id, "the sandbox was changed by another agentdeck; reading it again");
        if let Some(monitor) = state.run.as_mut().and_then(|r| r.monitor.take()) {
            monitor.abort();
        }
        let generation = state.generation + 1;
        let (mut fresh, adopted) = load(self.id, &self.dir, self.shared.node.clone());
        fresh.generation = generation;
        if let Some(run) = fresh.run.as_mut() {
            run.generation = generation;
        }
        *state = fresh;
        if let Some(a) = adopted {
            self.watch_adopted(state, a);
        }
        self.announce(state);
    }

    /// Starts watching an adopted process (not our child).
    pub(super) fn watch_adopted(self: &Arc<Self>, state: &mut State, adopted: Adopted) {
        let handle = monitor::spawn(
            self.clone(),
            state.generation,
            adopted.pid,
            adopted.port,
            Watched::Adopted {
                pid: adopted.pid,
                start_time: Some(adopted.start_time),
            },
            self.shared.http.clone(),
        );
        if let Some(run) = state.run.as_mut() {
            run.monitor = Some(handle);
        }
    }

    /// Catches up with what another agentdeck process over the same root did to this sandbox.
    /// A run of ours that is still going stays ours (its record is written again).
    pub fn refresh(self: &Arc<Self>) {
        let mut state = self.state();
        if state.removed || !state.exists {
            return;
        }
        let ours_alive = state
            .running()
            .is_some_and(|r| process::is_alive(r.pid, r.start_time));
        if !self.dir.exists() {
            // Destroyed by another agentdeck; a process of ours still running is left for
            // `destroy` to stop.
            if !ours_alive {
                tracing::info!(sandbox = %self.id, "the sandbox's folder was removed by another agentdeck");
                state.removed = true;
                if let Some(monitor) = state.run.as_mut().and_then(|r| r.monitor.take()) {
                    monitor.abort();
                }
            }
            return;
        }
        let Some(record) = self.newer_record(&state) else {
            return;
        };
        if ours_alive && record.state != RecordState::Suspended {
            let same = state
                .running()
                .is_some_and(|r| record.pid == Some(r.pid) && record.start_time == r.start_time);
            if same {
                state.written_at = Some(record.updated_at);
                state.health.restarts = state.health.restarts.max(record.restarts);
            } else {
                self.commit(&mut state);
            }
            return;
        }
        self.reload(&mut state);
    }
}
