//! What a cockpit that is a client of `serve` reads besides the sessions' own routes, each
//! limited to the caller's team like every other route (another team's sessions do not exist
//! for it: they are not sent, not counted, and their ids answer 404):
//!
//! - `GET /api/changes`: what changes, as Server-Sent Events. It starts with `resync` (read
//!   again what you show: a client that reconnects misses nothing that way), then `session`
//!   (the session as it is now), `message` (`{"session", "seq"}`: a message was added or
//!   changed), `health` (`{"session", "health"}`: its sandbox's health changed), `agents`, and
//!   `resync` again whenever the server itself may have missed something.
//! - `GET /api/sessions/{id}/live`: the session's streamed text as it arrives (`delta`
//!   events, `{"seq", "part", "text"}`; `missed` when some were lost: read the stored text).
//! - `GET /api/whoami`: the caller's team, name and whether it is read-only (a cockpit with a
//!   read-only token is a read-only cockpit).
//! - `GET /api/status`: whether the store, the runtime and the gateway answer, and who runs the
//!   fleet's work (a cockpit's top bar).
//! - `GET /api/sandboxes`: the health of the caller's live sessions' sandboxes.
//! - `GET /api/sessions/{id}/logs?tail=N&since=SECS&follow=true`: the sandbox's log, a line per
//!   `line` event (and `end`, with why, when it ends).
//! - `GET /api/sessions/{id}/shell` (a WebSocket): a shell in the sandbox (`super::shell`).

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::sessions::{Params, Segments, visible};
use crate::core::live::Live;
use crate::core::{Change, ChangeFeed, Core};
use crate::model::HealthChange;
use crate::model::{SessionQuery, SessionStatus};
use axum::Json;
use axum::extract::State;
use axum::response::sse::{self, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How often an idle stream says it is still there (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Which sessions the caller may see, learned as their ids come by (a session's team never
/// changes).
struct Teams {
    caller: Caller,
    seen: HashMap<Uuid, bool>,
}

impl Teams {
    async fn may_see(&mut self, core: &Core, id: Uuid) -> bool {
        if self.caller.teams().is_none() {
            return true;
        }
        if let Some(seen) = self.seen.get(&id) {
            return *seen;
        }
        let visible = match core.get_session(id).await {
            Ok(s) => self.caller.may_see(&s),
            Err(_) => false,
        };
        self.seen.insert(id, visible);
        visible
    }
}

struct Changes {
    core: Core,
    teams: Teams,
    feed: ChangeFeed,
    health: broadcast::Receiver<HealthChange>,
    started: bool,
}

impl Changes {
    /// The next event for this caller.
    async fn next(&mut self) -> Option<sse::Event> {
        if !self.started {
            self.started = true;
            return Some(sse::Event::default().event("resync").data("{}"));
        }
        loop {
            let change = tokio::select! {
                change = self.feed.next() => change?,
                health = self.health.recv() => {
                    match health {
                        Ok(h) => {
                            let Some(id) = h.session_id else { continue };
                            if !self.teams.may_see(&self.core, id).await {
                                continue;
                            }
                            let data = serde_json::json!({"session": id, "health": h.health});
                            return Some(sse::Event::default().event("health").data(data.to_string()));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some(sse::Event::default().event("resync").data("{}"));
                        }
                        // The runtime's watch may start later: changes still come.
                        Err(broadcast::error::RecvError::Closed) => {
                            self.health = broadcast::channel(1).1;
                            continue;
                        }
                    }
                }
            };
            match change {
                Change::Session(id) => {
                    let Ok(session) = self.core.get_session(id).await else {
                        continue;
                    };
                    let visible = self.teams.caller.may_see(&session);
                    self.teams.seen.insert(id, visible);
                    if visible {
                        let data = serde_json::to_string(&session).unwrap_or_default();
                        return Some(sse::Event::default().event("session").data(data));
                    }
                }
                Change::Message { session, seq } => {
                    if self.teams.may_see(&self.core, session).await {
                        let data = serde_json::json!({"session": session, "seq": seq});
                        return Some(
                            sse::Event::default()
                                .event("message")
                                .data(data.to_string()),
                        );
                    }
                }
                Change::Agents => return Some(sse::Event::default().event("agents").data("{}")),
                Change::Resync => return Some(sse::Event::default().event("resync").data("{}")),
                Change::Event { .. } | Change::Task => {}
            }
        }
    }
}

pub async fn changes(
    State(state): State<AppState>,
    caller: Caller,
) -> Sse<impl Stream<Item = Result<sse::Event, Infallible>>> {
    let changes = Changes {
        feed: state.core.subscribe(),
        health: state.core.subscribe_health(),
        core: state.core.clone(),
        teams: Teams {
            caller,
            seen: HashMap::new(),
        },
        started: false,
    };
    let stream = futures::stream::unfold(changes, |mut changes| async move {
        let event = changes.next().await?;
        Some((Ok(event), changes))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

pub async fn live(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let feed = state.core.watch_deltas(session.id);
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = match feed.next().await {
            Live::Delta(d) => sse::Event::default().event("delta").data(
                serde_json::json!({"seq": d.seq, "part": d.part, "text": d.text}).to_string(),
            ),
            Live::Missed => sse::Event::default().event("missed").data("{}"),
        };
        Some((Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// `{"ok": true}` or `{"ok": false, "error": "…"}`.
fn answer(result: &Result<(), String>) -> serde_json::Value {
    match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    }
}

pub async fn whoami(caller: Caller) -> Json<serde_json::Value> {
    Json(caller.to_json())
}

pub async fn status(State(state): State<AppState>, _caller: Caller) -> Json<serde_json::Value> {
    let core = &state.core;
    let (store, runtime, gateway, fleet) = tokio::join!(
        core.store_health(),
        core.runtime_health(),
        core.gateway_health(),
        core.fleet()
    );
    Json(serde_json::json!({
        "store": answer(&store),
        "runtime": answer(&runtime),
        "runtime_kind": core.runtime_kind(),
        "runtime_context": core.runtime_context(),
        "gateway": answer(&gateway),
        "fleet": fleet.ok().map(|f| f.summary()),
    }))
}

pub async fn sandboxes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = state.core.fleet_health().await?;
    let mine: Option<std::collections::HashSet<Uuid>> = match caller.teams() {
        None => None,
        Some(teams) => Some(
            state
                .core
                .list_sessions(&SessionQuery {
                    teams: Some(teams),
                    statuses: Some(SessionStatus::ALL.to_vec()),
                    limit: Some(100_000),
                    ..Default::default()
                })
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect(),
        ),
    };
    let sandboxes: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|(id, _, _)| mine.as_ref().is_none_or(|m| m.contains(id)))
        .map(|(id, title, health)| match health {
            Ok(h) => serde_json::json!({"session": id, "title": title, "health": h}),
            Err(e) => serde_json::json!({"session": id, "title": title, "error": e}),
        })
        .collect();
    // The agents' warm pools (agents are everyone's, as /api/agents shows them).
    let pools = state.core.pool_health().await;
    Ok(Json(
        serde_json::json!({ "sandboxes": sandboxes, "pools": pools }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    tail: Option<usize>,
    /// Seconds back from now.
    since: Option<u64>,
    #[serde(default)]
    follow: bool,
}

pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(p): Params<LogParams>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let session = visible(&state, &caller, &id).await?;
    let options = crate::model::LogOptions {
        tail: p.tail,
        since: p.since.map(Duration::from_secs),
        follow: p.follow,
    };
    let lines = state.core.sandbox_logs(session.id, options).await?;
    let events = lines
        .map(|line| match line {
            Ok(line) => sse::Event::default().event("line").data(line),
            Err(e) => sse::Event::default().event("end").data(e.to_string()),
        })
        .chain(futures::stream::once(async {
            sse::Event::default().event("end").data("end of log")
        }))
        .map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
