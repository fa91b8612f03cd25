//! Ingest's writes, grouped: every pump of a core hands what it gathered (a session's raw events
//! and its messages' changes) to a few writer lanes, and each lane commits everything waiting in
//! one transaction ([`Store::write_ingest`]). While a lane commits, the next writes gather for
//! the next commit, so the number of commits follows the store's pace, not the number of
//! sessions or of their events: a quiet session's write goes out at once, and three hundred
//! busy ones share a handful of commits.

use crate::store::{IngestWrite, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Writes gathered into one commit at most.
const GROUP_WRITES: usize = 256;
/// Raw events gathered into one commit at most (a group stops growing past it).
const GROUP_EVENTS: usize = 4_000;

struct Request {
    write: IngestWrite,
    done: oneshot::Sender<crate::store::Result<()>>,
}

/// Where a core's pumps send their writes. The lanes stop when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct IngestWrites {
    queue: mpsc::Sender<Request>,
}

impl IngestWrites {
    /// Starts `lanes` writer lanes over `store` (more than one lets commits overlap on a store
    /// that takes concurrent writers).
    pub(crate) fn start(store: Arc<dyn Store>, lanes: usize) -> IngestWrites {
        let (queue, rx) = mpsc::channel::<Request>(GROUP_WRITES * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..lanes.max(1) {
            tokio::spawn(lane(store.clone(), rx.clone()));
        }
        IngestWrites { queue }
    }

    /// Writes `write` with the next group, and says how it went (fenced, failed or done).
    pub(crate) async fn write(&self, write: IngestWrite) -> crate::store::Result<()> {
        if write.is_empty() {
            return Ok(());
        }
        let (done, result) = oneshot::channel();
        if self.queue.send(Request { write, done }).await.is_err() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        result
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
    }
}

/// One lane: takes everything waiting (one request at least), commits it, answers each.
async fn lane(store: Arc<dyn Store>, queue: Arc<Mutex<mpsc::Receiver<Request>>>) {
    loop {
        let group = {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut events = first.write.events.len();
            let mut group = vec![first];
            while group.len() < GROUP_WRITES && events < GROUP_EVENTS {
                match rx.try_recv() {
                    Ok(next) => {
                        events += next.write.events.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        let (writes, answers): (Vec<IngestWrite>, Vec<_>) =
            group.into_iter().map(|r| (r.write, r.done)).unzip();
        let results = store.write_ingest(&writes).await;
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result);
        }
    }
}
