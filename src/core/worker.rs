//! The worker: claims tasks from the store with a lease, runs them, retries with backoff and
//! dead-letters what keeps failing; and, in one process at a time, the fleet's roles: the idle
//! reaper and the reconciler. It also keeps this process's place in the fleet ([`super::fleet`])
//! and runs ingest ([`super::ingest`]) for the live sessions this process follows.
//!
//! Any number of workers may share a store (every `serve` replica runs one; a cockpit does when
//! no `serve` is alive). A worker that dies mid-task stops renewing its lease; once the lease
//! runs out, another worker takes the task again. A role is held under this process's fleet
//! lease and every write made for it is fenced by it.

use super::Core;
use super::lifecycle::TaskError;
use super::reconciler::Reconciler;
use crate::config::IdleAction;
use crate::model::{CoreKind, Fence, SessionQuery, SessionStatus, Task, TaskKind, TaskStatus};
use crate::store::Change;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// How often the singletons look around.
const SINGLETON_TICK: Duration = Duration::from_secs(5);
/// Longest wait for a task notice before looking anyway (for tasks due later).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A running worker; stop it with [`WorkerHandle::stop`].
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    join: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops claiming, lets running tasks finish (up to `grace`), then returns.
    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(grace, self.join).await.is_err() {
            tracing::warn!("worker did not stop within {grace:?}; its leases will expire");
        }
    }
}

/// Starts the worker (its place in the fleet, its roles, ingest) on the current runtime, for a
/// process of `kind`.
pub fn spawn(core: Core, kind: CoreKind) -> WorkerHandle {
    let (shutdown, rx) = watch::channel(false);
    let join = tokio::spawn(run(core, kind, rx));
    WorkerHandle { shutdown, join }
}

fn backoff(core: &Core, attempts: i32) -> Duration {
    let cfg = &core.config().worker;
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let base = cfg.backoff.saturating_mul(2u32.saturating_pow(exp));
    let capped = base.min(cfg.max_backoff);
    // up to 20% jitter so that a fleet does not retry in lockstep
    let jitter = capped.mul_f64(rand::random::<f64>() * 0.2);
    capped + jitter
}

async fn run(core: Core, kind: CoreKind, mut shutdown: watch::Receiver<bool>) {
    let cfg = core.config().worker.clone();
    let worker = core.instance().to_string();
    let slots = Arc::new(Semaphore::new(cfg.concurrency as usize));
    let mut feed = core.subscribe();
    let (heartbeat_stop, heartbeat_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(super::fleet::heartbeat(core.clone(), kind, heartbeat_rx));
    let mut standing = core.watch_standing();
    let singletons = tokio::spawn(run_singletons(core.clone(), shutdown.clone()));
    let ingest = tokio::spawn(super::ingest::run(core.clone(), shutdown.clone()));
    tracing::info!(%worker, %kind, concurrency = cfg.concurrency, "worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Tasks are taken only while this process runs fleet work.
        if !standing.borrow().is_some_and(|s| s.fleet) {
            tokio::select! {
                _ = standing.changed() => {}
                _ = tokio::time::sleep(super::fleet::RECHECK) => {}
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        match core
            .store()
            .claim_task(&worker, core.runtime().kind(), cfg.lease, cfg.backoff)
            .await
        {
            Ok(Some(task)) => {
                let core = core.clone();
                let worker = worker.clone();
                let slot = Slot {
                    slots: slots.clone(),
                    permit: Arc::new(std::sync::Mutex::new(Some(permit))),
                };
                // The slot goes back when the task is done (it may have given it back, and
                // taken another, meanwhile).
                tokio::spawn(async move { execute(&core, &worker, task, slot).await });
            }
            Ok(None) => {
                drop(permit);
                let wait = async {
                    loop {
                        match feed.next().await {
                            Some(Change::Task | Change::Resync) | None => break,
                            Some(_) => {}
                        }
                    }
                };
                tokio::select! {
                    _ = wait => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => break,
                }
            }
            Err(err) => {
                drop(permit);
                tracing::warn!(%err, "cannot claim tasks; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    // Let running tasks finish: take every slot back; the roles and the followed sessions are
    // given up, then this process leaves the fleet, so that others take over at once.
    let _ = slots.acquire_many(cfg.concurrency).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), singletons).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), ingest).await;
    let _ = heartbeat_stop.send(true);
    let _ = heartbeat.await;
    super::fleet::leave(&core).await;
    tracing::info!(%worker, "worker stopped");
}

tokio::task_local! {
    /// The worker slot of the task running here.
    static SLOT: Slot;
}

/// A running task's worker slot, which it gives back while it only waits.
#[derive(Clone)]
struct Slot {
    slots: Arc<Semaphore>,
    permit: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
}

impl Slot {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<tokio::sync::OwnedSemaphorePermit>> {
        self.permit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `wait` without this task's worker slot, taking one back afterwards: a task that waits
/// for a pod to be scheduled or a harness to answer (seconds, and for a burst of sessions all
/// of them at once) lets other tasks run meanwhile. Its lease stays held and renewed. Outside a
/// worker task, just `wait`.
pub(crate) async fn without_slot<F: std::future::Future>(wait: F) -> F::Output {
    let Ok(slot) = SLOT.try_with(Slot::clone) else {
        return wait.await;
    };
    drop(slot.held().take());
    let out = wait.await;
    if let Ok(permit) = slot.slots.clone().acquire_owned().await {
        *slot.held() = Some(permit);
    }
    out
}

/// Runs one task with its lease renewed until it is done, and records the outcome.
async fn execute(core: &Core, worker: &str, task: Task, slot: Slot) {
    let lease = core.config().worker.lease;
    let renew = {
        let core = core.clone();
        let worker = worker.to_string();
        let id = task.id;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match core.store().renew_lease(id, &worker, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(task = %id, "lost the lease on a running task");
                        break;
                    }
                    Err(err) => tracing::warn!(task = %id, %err, "cannot renew lease"),
                }
            }
        })
    };
    let span =
        tracing::info_span!("task", id = %task.id, kind = %task.kind, attempt = task.attempts);
    let outcome = {
        let core = core.clone();
        let task = task.clone();
        let worker = worker.to_string();
        // A panicking handler is a failed attempt, not a dead worker.
        tokio::spawn(SLOT.scope(slot, async move { core.run_task(&task, &worker).await })).await
    };
    renew.abort();
    let _enter = span.enter();
    let outcome = match outcome {
        Ok(result) => result,
        Err(join) => Err(TaskError::retry(format!("handler crashed: {join}"))),
    };
    let store = core.store();
    match outcome {
        Ok(()) => match store.complete_task(task.id, worker).await {
            Ok(true) => tracing::debug!("task done"),
            Ok(false) => tracing::warn!("task finished after its lease was taken over"),
            Err(err) => tracing::warn!(%err, "cannot record task as done; it will run again"),
        },
        Err(failure) => {
            let retry_in = backoff(core, task.attempts);
            tracing::warn!(error = %failure.message, permanent = failure.permanent, "task failed");
            match store
                .fail_task(
                    task.id,
                    worker,
                    &failure.message,
                    retry_in,
                    failure.permanent,
                )
                .await
            {
                Ok(Some(TaskStatus::Dead)) => {
                    tracing::error!(error = %failure.message, "task dead-lettered");
                    if let Some(session) = task
                        .session_id
                        .filter(|_| task.known_kind().is_ok_and(|k| k == TaskKind::Deliver))
                        && let Err(err) =
                            core.fail_pending_messages(session, &failure.message).await
                    {
                        tracing::warn!(error = %err.message, "cannot fail the unsent messages");
                    }
                    if let Some(session) = task
                        .session_id
                        .filter(|_| task.known_kind().is_ok_and(|k| k.drives_lifecycle()))
                    {
                        let reason = format!(
                            "{} gave up after {} attempt(s): {}",
                            task.kind, task.attempts, failure.message
                        );
                        if let Err(err) = core.fail_session(session, task.command, &reason).await {
                            tracing::warn!(error = %err.message, "cannot mark session failed");
                        }
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "cannot record task failure"),
            }
        }
    }
}

/// The fleet's roles: one process at a time runs each.
const REAPER: &str = "idle-reaper";
const RECONCILER: &str = "reconciler";
/// Hands the store's notices to the webhooks ([`super::webhooks`]).
const NOTIFIER: &str = "notifier";
/// Keeps the agents' warm pools ([`super::warm`]).
const WARM_POOLS: &str = "warm-pools";
/// How soon after a session changed the notifier looks for its notices (changes come in
/// bursts: one look for a burst).
const NOTICE_DELAY: Duration = Duration::from_millis(200);

/// Takes (or keeps) `role` for this process; the core to do its work with, every write fenced
/// by the role, while this process holds it.
pub(super) async fn hold(core: &Core, role: &str) -> Option<Core> {
    let standing = core.standing().filter(|s| s.fleet)?;
    match core
        .store()
        .take_role(role, core.instance(), standing.epoch)
        .await
    {
        Ok(true) => Some(core.fenced(Fence::Role {
            name: role.to_string(),
            core: core.instance().to_string(),
            epoch: standing.epoch,
        })),
        Ok(false) => None,
        Err(err) => {
            tracing::warn!(role, %err, "cannot take or keep a fleet role");
            None
        }
    }
}

/// Holds (or waits for) the roles and runs them every tick; the notifier also soon after a
/// session changed.
async fn run_singletons(core: Core, mut shutdown: watch::Receiver<bool>) {
    let mut state = Reconciler::default();
    let mut reconciling: Option<Core> = None;
    let mut notifying: Option<Core> = None;
    let mut notices_due: Option<tokio::time::Instant> = None;
    let mut feed = core.subscribe();
    let mut feed_open = true;
    let mut health = core.runtime().watch();
    let mut tick = tokio::time::interval(SINGLETON_TICK);
    loop {
        let due = async {
            match notices_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                if let Some(reaper) = hold(&core, REAPER).await
                    && let Err(err) = reap_idle(&reaper).await
                {
                    tracing::warn!(%err, "idle reaper pass failed");
                }
                reconciling = hold(&core, RECONCILER).await;
                if let Some(reconciler) = &reconciling
                    && let Err(err) = state.pass(reconciler).await
                {
                    tracing::warn!(%err, "reconciler pass failed");
                }
                notifying = hold(&core, NOTIFIER).await;
                notices_due = None;
                hand_on_notices(notifying.as_ref()).await;
                if let Some(keeper) = hold(&core, WARM_POOLS).await {
                    keeper.keep_warm_pools().await;
                }
            }
            // A pool one short is filled again at once, not at the next tick.
            _ = core.warm_claimed() => {
                if let Some(keeper) = hold(&core, WARM_POOLS).await {
                    keeper.keep_warm_pools().await;
                }
            }
            _ = due => {
                notices_due = None;
                hand_on_notices(notifying.as_ref()).await;
            }
            change = feed.next(), if feed_open => match change {
                Some(Change::Session(_) | Change::Resync) if notifying.is_some() => {
                    notices_due.get_or_insert_with(|| tokio::time::Instant::now() + NOTICE_DELAY);
                }
                Some(_) => {}
                // The store is going away: the tick still looks.
                None => feed_open = false,
            },
            change = health.recv() => match change {
                Ok(change) => {
                    if let Some(reconciler) = &reconciling {
                        state.on_health(reconciler, change).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // The runtime's watch is not running (yet): look again later.
                    tokio::time::sleep(SINGLETON_TICK).await;
                    health = core.runtime().watch();
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    for role in [REAPER, RECONCILER, NOTIFIER, WARM_POOLS] {
        if let Err(err) = core.store().release_role(role, core.instance()).await {
            tracing::debug!(role, %err, "cannot give the role up; its lease will run out");
        }
    }
}

/// The notifier's pass, when this process holds the role.
async fn hand_on_notices(notifier: Option<&Core>) {
    if let Some(notifier) = notifier
        && let Err(err) = notifier.hand_on_notices().await
    {
        tracing::warn!(%err, "notifier pass failed");
    }
}

/// Suspends (or ends) sessions idle past their deadline.
async fn reap_idle(core: &Core) -> super::Result<()> {
    let due = core
        .list_sessions(&SessionQuery {
            statuses: Some(SessionStatus::AT_REST.to_vec()),
            idle_before: Some(chrono::Utc::now()),
            limit: Some(500),
            ..Default::default()
        })
        .await?;
    for session in due {
        tracing::info!(session = %session.id, "idle past its deadline");
        let result = match core.config().sessions.idle_action {
            IdleAction::Suspend => core.suspend(session.id).await,
            IdleAction::End => core.end(session.id).await,
        };
        if let Err(err) = result {
            tracing::debug!(session = %session.id, %err, "idle reaping skipped");
        }
    }
    Ok(())
}
