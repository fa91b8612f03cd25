//! `stand-in-harness`: a harness that does nothing, answering the routes of opencode's server API
//! that agentdeck calls, for measuring agentdeck at fleet size on the test control plane (a pod
//! and a harness per session, with none of an agent's cost: it takes about 2 MB where opencode
//! takes 150-480 MB). It is a stand-in, named as one; the real opencode is what the end-to-end
//! tests run.
//!
//! - `GET /global/health`: healthy;
//! - `POST /session`, `GET /session/{id}`: sessions it made (it forgets them when it restarts,
//!   as opencode does);
//! - `GET /session/{id}/message`: an empty conversation until it is prompted (`prompt_async`,
//!   `message`), then one empty assistant message, finished (no agent, no model call: enough
//!   for a warm pool's bootstrap to end its warm-up turn); `abort` is accepted; `DELETE
//!   /session/{id}` forgets it;
//! - `GET /permission`, `GET /question`: nothing waits;
//! - `GET /event`: a bus that says `server.connected`, then stays open and silent (a comment
//!   every 30 s keeps it open through proxies).
//!
//! ```sh
//! cargo build --release --example stand-in-harness
//! stand-in-harness serve --hostname 127.0.0.1 --port 4096   # opencode's own arguments
//! ```
//! An agent runs it by its command, e.g. `command = ["stand-in-harness", "serve", "--hostname",
//! "{host}", "--port", "{port}"]` with the binary on the PATH of the runtime (the tests' kubelet
//! inherits its own).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Its sessions, and whether each was prompted.
#[derive(Default)]
struct Sessions(Mutex<HashMap<String, bool>>);

fn args() -> Result<(String, u16), String> {
    let mut host = "127.0.0.1".to_string();
    let mut port = 4096u16;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "serve" => {}
            "--hostname" => host = it.next().ok_or("--hostname needs a value")?,
            "--port" => {
                port = it
                    .next()
                    .ok_or("--port needs a value")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--help" | "-h" => {
                return Err("usage: stand-in-harness serve [--hostname HOST] [--port PORT]".into());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok((host, port))
}

async fn create(State(sessions): State<Arc<Sessions>>) -> Response {
    let id = format!("ses_{:016x}", rand::random::<u64>());
    if let Ok(mut s) = sessions.0.lock() {
        s.insert(id.clone(), false);
    }
    axum::Json(json!({"id": id, "title": "stand-in", "version": "stand-in"})).into_response()
}

async fn session(State(sessions): State<Arc<Sessions>>, Path(id): Path<String>) -> Response {
    let known = sessions
        .0
        .lock()
        .map(|s| s.contains_key(&id))
        .unwrap_or(false);
    if known {
        axum::Json(json!({"id": id, "title": "stand-in"})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"name": "NotFoundError", "data": {"message": format!("session {id} not found")}})),
        )
            .into_response()
    }
}

async fn events() -> Response {
    let connected = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(
            "data: {\"type\":\"server.connected\",\"properties\":{}}\n\n".to_string(),
        )
    });
    let keepalive = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Some((Ok(": keep-alive\n\n".to_string()), ()))
    });
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(connected, keepalive));
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn prompted(
    State(sessions): State<Arc<Sessions>>,
    Path(id): Path<String>,
) -> axum::Json<serde_json::Value> {
    if let Ok(mut s) = sessions.0.lock()
        && let Some(prompted) = s.get_mut(&id)
    {
        *prompted = true;
    }
    axum::Json(json!({}))
}

async fn messages(
    State(sessions): State<Arc<Sessions>>,
    Path(id): Path<String>,
) -> axum::Json<serde_json::Value> {
    let prompted = sessions
        .0
        .lock()
        .map(|s| s.get(&id).copied().unwrap_or(false))
        .unwrap_or(false);
    if !prompted {
        return axum::Json(json!([]));
    }
    axum::Json(json!([{
        "info": {"id": "msg_stand_in", "sessionID": id, "role": "assistant",
                 "time": {"created": 0, "completed": 0}},
        "parts": []
    }]))
}

async fn forget(State(sessions): State<Arc<Sessions>>, Path(id): Path<String>) -> axum::Json<bool> {
    let known = sessions
        .0
        .lock()
        .map(|mut s| s.remove(&id).is_some())
        .unwrap_or(false);
    axum::Json(known)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (host, port) = match args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let app = Router::new()
        .route(
            "/global/health",
            get(|| async { axum::Json(json!({"healthy": true, "version": "stand-in"})) }),
        )
        .route("/session", post(create))
        .route("/session/{id}", get(session).delete(forget))
        .route("/session/{id}/message", get(messages).post(prompted))
        .route(
            "/session/{id}/prompt_async",
            post(|state, path| async {
                let _ = prompted(state, path).await;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/session/{id}/abort",
            post(|| async { axum::Json(json!(true)) }),
        )
        .route("/permission", get(|| async { axum::Json(json!([])) }))
        .route("/question", get(|| async { axum::Json(json!([])) }))
        .route("/event", get(events))
        .with_state(Arc::new(Sessions::default()));
    let listener = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("stand-in-harness: cannot listen on {host}:{port}: {err}");
            std::process::exit(1);
        }
    };
    eprintln!("stand-in-harness listening on http://{host}:{port}");
    if let Err(err) = axum::serve(listener, app).await {
        eprintln!("stand-in-harness: {err}");
        std::process::exit(1);
    }
}
