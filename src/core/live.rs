//! Live text: the streamed text of a session as it arrives, wherever it is ingested. The core
//! that follows a session publishes its deltas in-process at once and, on Postgres, to the other
//! processes every few milliseconds (batched, see `store::deltas`); a watcher gets both, and
//! never its own process's twice.

use super::Core;
use crate::model::LiveDelta;
use crate::store::{Backend, DeltaWatch};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// How long a delta waits for others to go out with it to other processes.
const BATCH_WINDOW: Duration = Duration::from_millis(4);
/// Most deltas sent in one go.
const BATCH_MOST: usize = 512;

/// The streamed text of one session, from whichever process follows it.
pub struct DeltaFeed {
    session: Uuid,
    this: String,
    local: broadcast::Receiver<LiveDelta>,
    remote: DeltaWatch,
    queued: VecDeque<LiveDelta>,
}

/// What a [`DeltaFeed`] says next.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    Delta(LiveDelta),
    /// Some deltas were missed (the watcher fell behind): re-read the stored text.
    Missed,
}

impl DeltaFeed {
    pub async fn next(&mut self) -> Live {
        loop {
            if let Some(delta) = self.queued.pop_front() {
                return Live::Delta(delta);
            }
            tokio::select! {
                local = self.local.recv() => match local {
                    Ok(delta) if delta.session == self.session => return Live::Delta(delta),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Live::Missed,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
                remote = self.remote.next() => match remote {
                    // This process's own, heard back: it had them in-process already.
                    Some(batch) if batch.origin == self.this => {}
                    Some(batch) => self.queued.extend((*batch).clone().into_deltas()),
                    None => return Live::Missed,
                },
            }
        }
    }
}

impl Core {
    /// The streamed text of `session` as it arrives, from this process or the one following it.
    pub fn watch_deltas(&self, session: Uuid) -> DeltaFeed {
        DeltaFeed {
            session,
            this: self.instance().to_string(),
            local: self.inner.deltas.subscribe(),
            remote: self.store().watch_deltas(session),
            queued: VecDeque::new(),
        }
    }
}

/// Sends this process's deltas to the other processes, batched, until `shutdown` (Postgres
/// only: on the embedded store, one process shows its own).
pub(super) async fn publish(core: Core, mut shutdown: watch::Receiver<bool>) {
    if core.store().backend() != Backend::Postgres {
        return;
    }
    let mut deltas = core.inner.deltas.subscribe();
    loop {
        let first = tokio::select! {
            d = deltas.recv() => d,
            _ = shutdown.changed() => return,
        };
        let mut batch = match first {
            Ok(delta) => vec![delta],
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "live text fell behind; the watchers re-read");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let until = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_MOST {
            match tokio::time::timeout_at(until, deltas.recv()).await {
                Ok(Ok(delta)) => batch.push(delta),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        if let Err(err) = core.store().publish_deltas(core.instance(), &batch).await {
            tracing::debug!(%err, "cannot send live text to other processes");
        }
    }
}
