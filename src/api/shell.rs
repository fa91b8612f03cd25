//! `GET /api/sessions/{id}/shell?tty=true&term=T&cols=C&rows=R`, upgraded to a WebSocket: a
//! shell in the session's sandbox for an operator elsewhere (a remote cockpit's `!`,
//! `agentdeck --server URL sessions shell ID`). On Kubernetes it is a process in the pod
//! (`pods/exec` by `serve`); on the local runtime, a program here on a terminal of its own. The
//! frames are `crate::shell_socket`'s. Who opened it (the token's holder) goes into the
//! session's history and the log; a read-only token is refused (the extractor refuses every
//! upgrade to it), another team's session is not found.
//!
//! Everything that can go wrong before the shell runs is an ordinary JSON error, not a
//! WebSocket: the session, its sandbox, the runtime.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::sessions::{Params, Segments, visible};
use crate::core::ShellOptions;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    #[serde(default)]
    tty: bool,
    term: Option<String>,
    cols: Option<u16>,
    rows: Option<u16>,
}

pub async fn shell(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(p): Params<ShellParams>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let wants_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let (true, Some(key)) = (wants_websocket, key) else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "the shell is a WebSocket: connect with Upgrade: websocket (agentdeck --server URL \
             sessions shell ID does)",
        ));
    };
    let session = visible(&state, &caller, &id).await?;
    let options = ShellOptions {
        tty: p.tty,
        term: p
            .term
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic())),
        size: p.cols.zip(p.rows).filter(|(c, r)| *c > 0 && *r > 0),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let shell = state
        .core
        .attached_shell(session.id, &options, &caller.who())
        .await?;
    let id = session.id;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                crate::shell_socket::serve(ws, shell).await;
                tracing::info!(session = %id, "shell closed");
            }
            Err(e) => tracing::warn!(session = %id, error = %e, "the shell's upgrade failed"),
        }
    });
    let accept = crate::shell_socket::accept_key(&key);
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(response)
}
