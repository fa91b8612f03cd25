//! This process's place in the fleet: its heartbeat, and whether it runs fleet work.
//!
//! Every process that runs a worker is a *core* with a lease in the store, renewed every third
//! of `[worker] fleet_lease`. What it holds (the reconciler and idle-reaper roles, the live
//! sessions whose event stream it follows) it holds at the epoch its heartbeat returns, and
//! every write made under it is fenced by that epoch, so a core that stops renewing (killed,
//! frozen, cut off) loses it all within the lease and, if it wakes, writes nothing stale.
//!
//! `serve` and `worker` always run fleet work. A cockpit does on its own store (the embedded
//! SQLite default), and on a shared Postgres only while no `serve` or `worker` is alive: an
//! operator's laptop that sleeps, or an SSH session that hangs, must never hold the fleet's work.

use super::Core;
use crate::model::{CoreInfo, CoreKind};
use crate::store::Backend;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where this process stands in the fleet, as of its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub kind: CoreKind,
    /// What it holds, it holds at this epoch.
    pub epoch: i64,
    /// Whether it runs fleet work now.
    pub fleet: bool,
}

/// Who runs the fleet's work, for the front ends: the live cores, and this process's part.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetView {
    /// The cores whose lease runs (those that run fleet work, and cockpits that stand aside).
    pub cores: Vec<CoreInfo>,
    /// This process's name among them.
    pub this: String,
    /// Whether this process runs fleet work now.
    pub this_runs_fleet: bool,
}

impl FleetView {
    /// The cores that run fleet work now.
    pub fn working(&self) -> impl Iterator<Item = &CoreInfo> {
        self.cores.iter().filter(|c| c.fleet)
    }

    /// A few words for a top bar: `fleet: this cockpit`, `fleet: 2 cores`, `fleet: none`.
    pub fn summary(&self) -> String {
        let working: Vec<&CoreInfo> = self.working().collect();
        match working.as_slice() {
            [] => "fleet: none".to_string(),
            [only] if only.id == self.this => format!("fleet: this {}", only.kind),
            [only] => format!("fleet: 1 {}", only.kind),
            many => format!("fleet: {} cores", many.len()),
        }
    }
}

impl Core {
    /// This process's standing in the fleet (`None` when it runs no worker, or its lease is
    /// not known to run).
    pub fn standing(&self) -> Option<Standing> {
        *self.inner.standing.borrow()
    }

    pub(crate) fn watch_standing(&self) -> watch::Receiver<Option<Standing>> {
        self.inner.standing.subscribe()
    }

    fn set_standing(&self, standing: Option<Standing>) {
        self.inner.standing.send_if_modified(|now| {
            let changed = *now != standing;
            *now = standing;
            changed
        });
    }

    /// The fleet as the store knows it now.
    pub async fn fleet(&self) -> super::Result<FleetView> {
        Ok(FleetView {
            cores: self.store().list_cores().await?,
            this: self.instance().to_string(),
            this_runs_fleet: self.standing().is_some_and(|s| s.fleet),
        })
    }
}

/// Whether a core of `kind` should run fleet work now, given the live cores.
fn takes_part(core: &Core, kind: CoreKind, cores: &[CoreInfo]) -> bool {
    if kind.always_in_fleet() || core.store().backend() == Backend::Sqlite {
        return true;
    }
    !cores
        .iter()
        .any(|c| c.id != core.instance() && c.kind.always_in_fleet() && c.fleet)
}

/// Keeps this process's lease until `shutdown`; its standing is published on the core.
/// Leaving (what it held freed at once) is the caller's, once its fleet work has stopped.
pub(super) async fn heartbeat(core: Core, kind: CoreKind, mut shutdown: watch::Receiver<bool>) {
    let lease = core.config().worker.fleet_lease;
    let every = lease / 3;
    let mut renewed = Instant::now();
    loop {
        let fleet = match kind.always_in_fleet() {
            true => true,
            false => match core.store().list_cores().await {
                Ok(cores) => takes_part(&core, kind, &cores),
                // Cannot tell: keep to what it was doing.
                Err(_) => core.standing().is_some_and(|s| s.fleet),
            },
        };
        match core
            .store()
            .heartbeat(core.instance(), kind, fleet, lease)
            .await
        {
            Ok(epoch) => {
                renewed = Instant::now();
                let before = core.standing();
                if before.is_some_and(|b| b.epoch != epoch) {
                    tracing::warn!(
                        core = core.instance(),
                        epoch,
                        "this process's fleet lease had run out (was it stopped or cut off?): \
                         what it held is void and is taken again"
                    );
                }
                if before.map(|b| b.fleet) != Some(fleet) {
                    tracing::info!(core = core.instance(), %kind, fleet, "fleet work {}", if fleet { "taken up" } else { "left to the other cores" });
                }
                core.set_standing(Some(Standing { kind, epoch, fleet }));
            }
            Err(err) => {
                tracing::warn!(%err, "cannot renew this process's fleet lease");
                if renewed.elapsed() >= lease {
                    // Others may hold what it held by now.
                    core.set_standing(None);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
    }
    core.set_standing(None);
}

/// Frees what this process held, at once (a clean shutdown).
pub(super) async fn leave(core: &Core) {
    if let Err(err) = core.store().leave(core.instance()).await {
        tracing::warn!(%err, "cannot leave the fleet cleanly; its lease will run out");
    }
}

/// The share of `followed` sessions each of `cores` working cores follows (at least one core).
pub(super) fn fair_share(followed: usize, cores: usize) -> usize {
    followed.div_ceil(cores.max(1))
}

/// How long a caller waits for a standing that lets it work before looking again.
pub(super) const RECHECK: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn core(id: &str, kind: CoreKind, fleet: bool) -> CoreInfo {
        CoreInfo {
            id: id.into(),
            kind,
            fleet,
            epoch: 1,
            started_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            sessions: 0,
            roles: vec![],
        }
    }

    #[test]
    fn the_top_bar_says_who_runs_the_fleet() {
        let view = |cores: Vec<CoreInfo>| FleetView {
            cores,
            this: "me".into(),
            this_runs_fleet: false,
        };
        assert_eq!(view(vec![]).summary(), "fleet: none");
        assert_eq!(
            view(vec![core("me", CoreKind::Cockpit, true)]).summary(),
            "fleet: this cockpit"
        );
        assert_eq!(
            view(vec![
                core("me", CoreKind::Cockpit, false),
                core("s1", CoreKind::Serve, true)
            ])
            .summary(),
            "fleet: 1 serve"
        );
        assert_eq!(
            view(vec![
                core("s1", CoreKind::Serve, true),
                core("w1", CoreKind::Worker, true)
            ])
            .summary(),
            "fleet: 2 cores"
        );
    }

    #[test]
    fn shares_cover_every_session() {
        assert_eq!(fair_share(0, 2), 0);
        assert_eq!(fair_share(5, 2), 3);
        assert_eq!(fair_share(1000, 3), 334);
        assert_eq!(fair_share(7, 0), 7);
    }
}
