//! The change feed: small notices of what changed, so that readers re-read only that.
//!
//! A notice never carries the data itself; a reader who gets [`Change::Resync`] (it fell behind,
//! or the feed's connection was lost and came back) re-reads everything it shows. That way no
//! reader ever misses a change.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// The Postgres NOTIFY channel every store writes to.
pub const CHANNEL: &str = "agentdeck_changes";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A session row was created or updated.
    Session(Uuid),
    /// A message was appended or updated.
    Message { session: Uuid, seq: i64 },
    /// Events up to `seq` were appended to a session's event log.
    Event { session: Uuid, seq: i64 },
    /// A task was queued or changed state.
    Task,
    /// The agent list changed.
    Agents,
    /// Something may have been missed: re-read everything.
    Resync,
}

impl Change {
    pub fn session(&self) -> Option<Uuid> {
        match self {
            Change::Session(id) => Some(*id),
            Change::Message { session, .. } | Change::Event { session, .. } => Some(*session),
            _ => None,
        }
    }

    /// Builds a change from its stored form (the NOTIFY payload's or the SQLite change row's
    /// fields). Unknown kinds are a resync: better re-read than miss something.
    pub(crate) fn from_parts(kind: &str, session: Option<&str>, seq: Option<i64>) -> Change {
        let session = session.and_then(|s| Uuid::parse_str(s).ok());
        match (kind, session) {
            ("session", Some(id)) => Change::Session(id),
            ("message", Some(session)) => Change::Message {
                session,
                seq: seq.unwrap_or(0),
            },
            ("event", Some(session)) => Change::Event {
                session,
                seq: seq.unwrap_or(0),
            },
            ("task", _) => Change::Task,
            ("agents", _) => Change::Agents,
            _ => Change::Resync,
        }
    }

    /// Parses a NOTIFY payload: `{"k":"event","s":"<uuid>","q":12}`.
    pub(crate) fn from_payload(payload: &str) -> Change {
        #[derive(Deserialize)]
        struct Wire {
            k: String,
            s: Option<String>,
            q: Option<i64>,
        }
        match serde_json::from_str::<Wire>(payload) {
            Ok(w) => Change::from_parts(&w.k, w.s.as_deref(), w.q),
            Err(err) => {
                tracing::warn!(%err, payload, "unreadable change notice; resyncing");
                Change::Resync
            }
        }
    }
}

/// A subscription to the change feed. Falling behind turns into a [`Change::Resync`].
pub struct ChangeFeed {
    rx: broadcast::Receiver<Change>,
}

impl ChangeFeed {
    pub(crate) fn new(rx: broadcast::Receiver<Change>) -> Self {
        ChangeFeed { rx }
    }

    /// The next change; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Change> {
        match self.rx.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "change feed subscriber fell behind; resync");
                Some(Change::Resync)
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A change if one is waiting, without blocking (for coalescing bursts).
    pub fn try_next(&mut self) -> Option<Change> {
        match self.rx.try_recv() {
            Ok(change) => Some(change),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Change::Resync),
            Err(_) => None,
        }
    }
}

/// Capacity of the in-process fan-out; a slower subscriber gets a resync.
pub(crate) const FANOUT_CAPACITY: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_garbage_resyncs() {
        let id = Uuid::now_v7();
        assert_eq!(
            Change::from_payload(&format!(r#"{{"k":"event","s":"{id}","q":7}}"#)),
            Change::Event {
                session: id,
                seq: 7
            }
        );
        assert_eq!(Change::from_payload(r#"{"k":"task"}"#), Change::Task);
        assert_eq!(Change::from_payload("not json"), Change::Resync);
        assert_eq!(
            Change::from_payload(r#"{"k":"session","s":"nope"}"#),
            Change::Resync
        );
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_resync() {
        let (tx, rx) = broadcast::channel(2);
        let mut feed = ChangeFeed::new(rx);
        for _ in 0..5 {
            let _ = tx.send(Change::Task);
        }
        assert_eq!(feed.next().await, Some(Change::Resync));
    }
}
