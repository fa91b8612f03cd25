//! Live text across processes: streamed text (deltas) sent by the process that follows a
//! session to every process that watches it, through Postgres's NOTIFY on a channel per session
//! (`agentdeck_d_<session>`), which only the processes showing that session LISTEN to: a cockpit
//! is sent the text of the transcript it shows, not the fleet's.
//!
//! A notice's payload is `{"o": origin, "s": session, "d": [[seq, part, text], …]}`, kept under
//! Postgres's 8000-byte limit (a long delta is cut, at a character, into several). Deltas are
//! ephemeral: one lost (a dropped connection, a watcher that falls behind) costs a moment of
//! liveness, never text, which the stored message has at the next flush.

use crate::model::LiveDelta;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// Room for the payload (Postgres refuses 8000 bytes or more).
const MAX_PAYLOAD: usize = 7_600;
/// A delta's text is cut into pieces of at most this many bytes.
const MAX_TEXT: usize = 6_000;
/// What a watcher may fall behind by before it misses deltas.
const WATCH_CAPACITY: usize = 1024;

/// Deltas of one session from one process, as a notice carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaBatch {
    /// The process that sent them (its core's name).
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(rename = "s")]
    pub session: Uuid,
    #[serde(rename = "d")]
    pub deltas: Vec<(i64, usize, String)>,
    /// The notice's number from its sender: Postgres delivers one of the same payloads sent in
    /// one transaction, so no two may be the same (a long delta cut into equal pieces).
    #[serde(rename = "n", default)]
    pub number: u64,
}

/// The numbers of this process's notices.
static NOTICES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl DeltaBatch {
    pub fn into_deltas(self) -> impl Iterator<Item = LiveDelta> {
        let session = self.session;
        self.deltas
            .into_iter()
            .map(move |(seq, part, text)| LiveDelta {
                session,
                seq,
                part,
                text,
            })
    }
}

/// The NOTIFY channel of a session.
pub fn channel(session: Uuid) -> String {
    format!("agentdeck_d_{}", session.simple())
}

fn session_of(channel: &str) -> Option<Uuid> {
    channel
        .strip_prefix("agentdeck_d_")
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// Cuts `text` into pieces of at most `max` bytes, at character boundaries.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// The notices that carry `deltas` (of any sessions, in order), as (channel, payload).
pub fn encode(origin: &str, deltas: &[LiveDelta]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(Uuid, Vec<String>, usize)> = None;
    let head = |session: Uuid| {
        let number = NOTICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "{{\"o\":{},\"s\":\"{session}\",\"n\":{number},\"d\":[",
            serde_json::Value::from(origin)
        )
    };
    let finish = |current: Option<(Uuid, Vec<String>, usize)>, out: &mut Vec<_>| {
        if let Some((session, items, _)) = current
            && !items.is_empty()
        {
            out.push((
                channel(session),
                format!("{}{}]}}", head(session), items.join(",")),
            ));
        }
    };
    for delta in deltas {
        for piece in pieces(&delta.text, MAX_TEXT) {
            let item = serde_json::json!([delta.seq, delta.part, piece]).to_string();
            let fits = current.as_ref().is_some_and(|(session, _, size)| {
                *session == delta.session && size + item.len() < MAX_PAYLOAD
            });
            if !fits {
                finish(current.take(), &mut out);
                current = Some((delta.session, Vec::new(), head(delta.session).len() + 2));
            }
            if let Some((_, items, size)) = current.as_mut() {
                *size += item.len() + 1;
                items.push(item);
            }
        }
    }
    finish(current, &mut out);
    out
}

/// Reads a notice; `None` for one that is not a delta notice (logged).
pub fn decode(channel: &str, payload: &str) -> Option<DeltaBatch> {
    let session = session_of(channel)?;
    match serde_json::from_str::<DeltaBatch>(payload) {
        Ok(batch) if batch.session == session => Some(batch),
        Ok(_) => None,
        Err(err) => {
            tracing::debug!(%err, "unreadable delta notice");
            None
        }
    }
}

/// What the listener is asked to do.
pub(crate) enum Order {
    Listen(Uuid),
    Unlisten(Uuid),
}

/// A watched session: where its batches go, and how many watch it.
type Watched = (broadcast::Sender<Arc<DeltaBatch>>, usize);

/// The watched sessions of one store, and the listener's orders.
#[derive(Default)]
pub(crate) struct Hub {
    watched: Mutex<HashMap<Uuid, Watched>>,
    orders: Mutex<Option<mpsc::UnboundedSender<Order>>>,
}

impl Hub {
    /// Hands a batch to the watchers of its session.
    pub(crate) fn deliver(&self, channel: &str, payload: &str) {
        let Some(batch) = decode(channel, payload) else {
            return;
        };
        if let Ok(watched) = self.watched.lock()
            && let Some((tx, _)) = watched.get(&batch.session)
        {
            let _ = tx.send(Arc::new(batch));
        }
    }

    /// Sets where orders go (the listener, once it runs); returns false when it already ran.
    pub(crate) fn start(&self, orders: mpsc::UnboundedSender<Order>) -> bool {
        let Ok(mut slot) = self.orders.lock() else {
            return false;
        };
        if slot.is_some() {
            return false;
        }
        // The sessions watched before the listener ran.
        if let Ok(watched) = self.watched.lock() {
            for id in watched.keys() {
                let _ = orders.send(Order::Listen(*id));
            }
        }
        *slot = Some(orders);
        true
    }

    fn order(&self, order: Order) {
        if let Ok(slot) = self.orders.lock()
            && let Some(tx) = slot.as_ref()
        {
            let _ = tx.send(order);
        }
    }
}

/// A watch on one session's deltas from other processes; stops listening when the last watch
/// of the session goes.
pub struct DeltaWatch {
    rx: Option<broadcast::Receiver<Arc<DeltaBatch>>>,
    guard: Option<(Weak<Hub>, Uuid)>,
}

impl DeltaWatch {
    /// A watch that never yields (a store with no other processes to hear from).
    pub fn none() -> DeltaWatch {
        DeltaWatch {
            rx: None,
            guard: None,
        }
    }

    pub(crate) fn of(hub: &Arc<Hub>, session: Uuid) -> DeltaWatch {
        let Ok(mut watched) = hub.watched.lock() else {
            return DeltaWatch::none();
        };
        let new = !watched.contains_key(&session);
        let entry = watched
            .entry(session)
            .or_insert_with(|| (broadcast::channel(WATCH_CAPACITY).0, 0));
        entry.1 += 1;
        let rx = entry.0.subscribe();
        drop(watched);
        if new {
            hub.order(Order::Listen(session));
        }
        DeltaWatch {
            rx: Some(rx),
            guard: Some((Arc::downgrade(hub), session)),
        }
    }

    /// The next batch; waits for ever on a watch that can hear nothing. `None` when deltas were
    /// missed (the watcher fell behind): whoever shows them re-reads the stored text.
    pub async fn next(&mut self) -> Option<Arc<DeltaBatch>> {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(batch) => Some(batch),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for DeltaWatch {
    fn drop(&mut self) {
        let Some((hub, session)) = self.guard.take() else {
            return;
        };
        let Some(hub) = hub.upgrade() else { return };
        let last = match hub.watched.lock() {
            Ok(mut watched) => match watched.get_mut(&session) {
                Some(entry) if entry.1 <= 1 => {
                    watched.remove(&session);
                    true
                }
                Some(entry) => {
                    entry.1 -= 1;
                    false
                }
                None => false,
            },
            Err(_) => false,
        };
        if last {
            hub.order(Order::Unlisten(session));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(session: Uuid, seq: i64, text: &str) -> LiveDelta {
        LiveDelta {
            session,
            seq,
            part: 1,
            text: text.to_string(),
        }
    }

    #[test]
    fn notices_stay_under_the_limit_and_carry_every_delta_in_order() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let long = "é".repeat(10_000) + "\"quoted\" \u{0}";
        let deltas = vec![
            delta(a, 1, "Hello"),
            delta(a, 1, " world"),
            delta(b, 3, "other"),
            delta(a, 2, &long),
        ];
        let notices = encode("host:1:ab", &deltas);
        assert!(notices.iter().all(|(_, p)| p.len() < 8000));
        let mut payloads: Vec<&String> = notices.iter().map(|(_, p)| p).collect();
        payloads.sort();
        payloads.dedup();
        assert_eq!(
            payloads.len(),
            notices.len(),
            "no two notices alike (Postgres delivers one of equal payloads)"
        );
        let mut back: Vec<LiveDelta> = Vec::new();
        for (channel, payload) in &notices {
            let batch = decode(channel, payload).expect("a delta notice");
            assert_eq!(batch.origin, "host:1:ab");
            back.extend(batch.into_deltas());
        }
        // The long one comes back in pieces, in order, whole.
        let text_of = |seq| -> String {
            back.iter()
                .filter(|d| d.session == a && d.seq == seq)
                .map(|d| d.text.as_str())
                .collect()
        };
        assert_eq!(text_of(1), "Hello world");
        assert_eq!(text_of(2), long);
        assert_eq!(back[0].text, "Hello");
        assert!(back.iter().any(|d| d.session == b && d.text == "other"));
        assert_eq!(notices[0].0, channel(a));
    }

    #[test]
    fn a_notice_for_another_session_or_garbage_is_dropped() {
        let a = Uuid::now_v7();
        let (_, payload) = encode("o", &[delta(a, 1, "x")]).remove(0);
        assert!(decode(&channel(Uuid::now_v7()), &payload).is_none());
        assert!(decode(&channel(a), "not json").is_none());
        assert!(decode("agentdeck_changes", &payload).is_none());
    }
}
