//! The reconciler (a singleton): brings sandboxes in line with sessions.
//!
//! - A live session whose sandbox vanished is provisioned again, with the reason recorded.
//! - A sandbox whose session ended is destroyed after a grace period, so a sandbox is never
//!   left running and billing. Sandboxes of sessions this store does not know are left alone:
//!   they may belong to another agentdeck sharing the namespace or the local root.
//! - Health changes the runtime reports (from its watches) are recorded in the session's event
//!   log, and trouble (OOMKilled, CrashLoopBackOff …) shows in the session's phase detail.

use super::Core;
use crate::model::{NewEvent, SessionPatch, SessionQuery, SessionStatus, TaskKind, Transition};
use crate::runtime::{HealthChange, HealthPhase, SandboxHealth};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Sandbox health reads in flight at once (each is a round trip to the cluster).
const HEALTH_READS: usize = 16;

/// How long an ended session's sandbox may linger before it is destroyed.
const GRACE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Reconciler {
    /// Sandboxes with no live session, and since when they were seen so.
    orphans: HashMap<String, Instant>,
    /// The last health recorded per session, so that only changes are logged.
    last: HashMap<Uuid, (HealthPhase, Option<String>, u32)>,
}

impl Reconciler {
    pub async fn pass(&mut self, core: &Core) -> super::Result<()> {
        self.revive_vanished(core).await?;
        self.reap_leftovers(core).await
    }

    async fn revive_vanished(&mut self, core: &Core) -> super::Result<()> {
        let mut before = None;
        loop {
            let page = core
                .list_sessions(&SessionQuery {
                    statuses: Some(SessionStatus::LIVE.to_vec()),
                    before,
                    limit: Some(500),
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            // A command on its way (end, suspend, restart …) is left to its task; the rest
            // have their sandbox's health read, HEALTH_READS at a time.
            let mut todo = Vec::new();
            for session in &page {
                if session.phase.in_transition() {
                    continue;
                }
                match Core::sandbox_of(session) {
                    Some(sandbox) if sandbox.runtime == core.runtime().kind() => {
                        todo.push((session.id, sandbox));
                    }
                    _ => {}
                }
            }
            let checked: Vec<(Uuid, _)> = futures::stream::iter(todo)
                .map(|(id, sandbox)| {
                    let core = core.clone();
                    async move { (id, core.runtime().observe(&sandbox).await) }
                })
                .buffer_unordered(HEALTH_READS)
                .collect()
                .await;
            for (session_id, health) in checked {
                match health {
                    Ok(h) if h.phase == HealthPhase::Gone => {
                        self.reprovision(core, session_id, "sandbox vanished; provisioning again")
                            .await?;
                    }
                    Err(crate::runtime::RuntimeError::NotFound(_)) => {
                        self.reprovision(core, session_id, "sandbox vanished; provisioning again")
                            .await?;
                    }
                    // A failure the watch reported while no process held this role.
                    Ok(h) if h.phase == HealthPhase::Failed => {
                        tracing::warn!(session = %session_id, reason = ?h.reason, "sandbox failed under a live session; restarting it");
                        if let Err(err) = core.restart(session_id).await {
                            tracing::warn!(session = %session_id, %err, "cannot restart the failed sandbox");
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn reprovision(&mut self, core: &Core, id: Uuid, why: &str) -> super::Result<()> {
        tracing::warn!(session = %id, why, "provisioning the session's sandbox again");
        let patch = SessionPatch {
            sandbox_ref: Some(None),
            new_command: true,
            ..Transition::SandboxVanished.patch().detail(why)
        };
        // The new phase and the task that provisions: one transaction, so that a crash between
        // them cannot leave the session creating with nothing to bring it up.
        let task = core.task(TaskKind::Provision, id);
        match core.store().command_session(id, &patch, &task).await {
            Ok(_) => {}
            // Moved on meanwhile (ended, a command on its way): not the reconciler's any more.
            Err(crate::store::StoreError::Conflict(why)) => {
                tracing::debug!(session = %id, %why, "not provisioned again");
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Destroys sandboxes of ended sessions, after a grace.
    async fn reap_leftovers(&mut self, core: &Core) -> super::Result<()> {
        let listed = match core.runtime().list().await {
            Ok(listed) => listed,
            Err(err) => {
                tracing::debug!(%err, "cannot list sandboxes this pass");
                return Ok(());
            }
        };
        // One read for every listed sandbox's session, not one per sandbox.
        let ids: Vec<Uuid> = listed.iter().filter_map(|item| item.session_id).collect();
        let ended: HashSet<Uuid> = core
            .store()
            .session_statuses(&ids)
            .await?
            .into_iter()
            .filter(|(_, status)| *status == SessionStatus::Dead)
            .map(|(id, _)| id)
            .collect();
        let mut seen = HashSet::new();
        for item in listed {
            let Some(session_id) = item.session_id else {
                continue;
            };
            // A sandbox whose session this store does not know may belong to another
            // agentdeck (another store sharing a namespace or a local root): leave it alone.
            if !ended.contains(&session_id) {
                continue;
            }
            seen.insert(item.sandbox.name.clone());
            let since = *self
                .orphans
                .entry(item.sandbox.name.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() >= GRACE {
                tracing::info!(sandbox = %item.sandbox.name, session = %session_id, "destroying a leftover sandbox");
                match core.runtime().destroy(&item.sandbox).await {
                    Ok(()) => {
                        self.orphans.remove(&item.sandbox.name);
                    }
                    Err(err) => {
                        tracing::warn!(sandbox = %item.sandbox.name, %err, "cannot destroy")
                    }
                }
            }
        }
        self.orphans.retain(|name, _| seen.contains(name));
        Ok(())
    }

    /// Records a health change in the session's log; trouble shows in its phase detail.
    pub async fn on_health(&mut self, core: &Core, change: HealthChange) {
        let Some(id) = change.session_id else { return };
        let h: &SandboxHealth = &change.health;
        let summary = (h.phase, h.reason.clone(), h.restarts);
        if self.last.get(&id) == Some(&summary) {
            return;
        }
        self.last.insert(id, summary);
        let Ok(Some(session)) = core.store().get_session(id).await else {
            return;
        };
        if session.sandbox_ref.as_deref() != Some(change.sandbox.name.as_str()) {
            return;
        }
        let event = NewEvent::new(
            "sandbox.health",
            serde_json::json!({
                "phase": h.phase.as_str(),
                "reason": h.reason,
                "restarts": h.restarts,
                "last_termination": h.last_termination,
                "node": h.node,
            }),
        );
        if let Err(err) = core.store().append_events(id, &[event]).await {
            tracing::warn!(session = %id, %err, "cannot record sandbox health");
        }
        if !session.status.is_live() || session.phase.in_transition() {
            return;
        }
        let detail = match (h.phase, &h.reason, &h.last_termination) {
            (HealthPhase::Ready, _, _) => None,
            (phase, Some(reason), _) => Some(format!("sandbox {}: {reason}", phase.as_str())),
            (phase, None, Some(last)) => {
                Some(format!("sandbox {} (last exit: {last})", phase.as_str()))
            }
            (phase, None, None) => Some(format!("sandbox {}", phase.as_str())),
        };
        if detail != session.phase_detail {
            let patch = SessionPatch {
                phase_detail: Some(detail),
                ..Default::default()
            };
            super::write_aside("noting the sandbox's health", id, || {
                core.store().update_session(id, &patch)
            })
            .await;
        }
        if h.phase == HealthPhase::Gone
            && let Err(e) = self
                .reprovision(core, id, "sandbox vanished; provisioning again")
                .await
        {
            tracing::warn!(session = %id, error = %e, "cannot provision the vanished sandbox again; the next pass tries again");
        }
    }
}
