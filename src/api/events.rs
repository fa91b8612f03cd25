//! `GET /api/sessions/{id}/events`: the session's event log as Server-Sent Events, from the
//! start (or after `Last-Event-ID` / `?after_seq=`) and then live. Each event's id is its seq,
//! so a client that reconnects with `Last-Event-ID` misses nothing and sees nothing twice.
//!
//! Once caught up, streamed text is sent too as it arrives, whichever process follows the
//! session: `event: delta`, `{"seq", "part", "text"}` (the message's seq, the part's index),
//! without an id. Deltas are a live preview; the stored events that follow are the record.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::sessions::Segments;
use super::sessions::{Params, visible};
use crate::core::Core;
use crate::core::live::{DeltaFeed, Live};
use crate::core::{Change, ChangeFeed};
use crate::model::{Event, LiveDelta, SessionStatus};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    after_seq: Option<i64>,
}

struct Cursor {
    core: Core,
    session: Uuid,
    last: i64,
    feed: ChangeFeed,
    live: DeltaFeed,
    buffer: VecDeque<Event>,
    done: bool,
}

/// What the stream sends next.
enum Item {
    Event(Event),
    Delta(LiveDelta),
}

impl Cursor {
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last = event.seq;
                return Some(Item::Event(event));
            }
            if self.done {
                return None;
            }
            match self.core.events(self.session, self.last, 500).await {
                Ok(page) if !page.is_empty() => {
                    self.buffer.extend(page);
                    continue;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(session = %self.session, %err, "event stream stops");
                    return None;
                }
            }
            // Caught up. An ended session has nothing more to say.
            match self.core.get_session(self.session).await {
                Ok(s) if s.status == SessionStatus::Dead && s.last_event_seq <= self.last => {
                    self.done = true;
                    continue;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
            loop {
                let change = tokio::select! {
                    change = self.feed.next() => change,
                    live = self.live.next() => match live {
                        Live::Delta(delta) => return Some(Item::Delta(delta)),
                        Live::Missed => continue,
                    },
                };
                match change {
                    Some(Change::Event { session, seq }) if session == self.session => {
                        if seq > self.last {
                            break;
                        }
                    }
                    Some(Change::Session(id)) if id == self.session => break,
                    Some(Change::Resync) => break,
                    Some(_) => {}
                    None => return None,
                }
            }
        }
    }
}

pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    headers: HeaderMap,
    Params(p): Params<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let from_header = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event seq"))?,
        ),
    };
    // Subscribe before reading, so nothing written in between is missed.
    let cursor = Cursor {
        feed: state.core.subscribe(),
        live: state.core.watch_deltas(session.id),
        core: state.core.clone(),
        session: session.id,
        last: from_header.or(p.after_seq).unwrap_or(0).max(0),
        buffer: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(cursor, |mut cursor| async move {
        let sse = match cursor.next().await? {
            Item::Event(event) => {
                let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_string());
                sse::Event::default()
                    .id(event.seq.to_string())
                    .event(event.kind.clone())
                    .data(data)
            }
            Item::Delta(delta) => sse::Event::default().event("delta").data(
                serde_json::json!({"seq": delta.seq, "part": delta.part, "text": delta.text})
                    .to_string(),
            ),
        };
        Some((Ok(sse), cursor))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
