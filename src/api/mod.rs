//! The REST API of `agentdeck serve`: the core over HTTP (axum).

mod auth;
mod cockpit;
mod error;
mod events;
mod metrics;
mod sessions;
mod shell;
pub mod tls;

pub use auth::{ALL_TEAMS, Caller};
pub use error::ApiError;

use crate::core::Core;
use axum::Router;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    pub metrics: Arc<metrics::HttpMetrics>,
}

/// The whole API as a router.
pub fn router(core: Core) -> Router {
    let state = AppState {
        core,
        metrics: Arc::new(metrics::HttpMetrics::default()),
    };
    Router::new()
        .route("/api/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/api/sessions/{id}",
            get(sessions::show)
                .delete(sessions::end)
                .patch(sessions::rename),
        )
        .route(
            "/api/sessions/{id}/messages",
            post(sessions::send).get(sessions::messages),
        )
        .route("/api/sessions/{id}/events", get(events::stream))
        .route("/api/sessions/{id}/live", get(cockpit::live))
        .route("/api/sessions/{id}/logs", get(cockpit::logs))
        .route("/api/sessions/{id}/shell", get(shell::shell))
        .route("/api/changes", get(cockpit::changes))
        .route("/api/status", get(cockpit::status))
        .route("/api/whoami", get(cockpit::whoami))
        .route("/api/sandboxes", get(cockpit::sandboxes))
        .route("/api/sessions/{id}/diagnosis", get(sessions::diagnosis))
        .route("/api/sessions/{id}/fork", post(sessions::fork))
        .route("/api/sessions/{id}/budget", post(sessions::budget))
        .route("/api/sessions/{id}/diff", get(sessions::diff))
        .route("/api/sessions/{id}/forks", get(sessions::forks))
        .route("/api/sessions/{id}/permissions", get(sessions::permissions))
        .route(
            "/api/sessions/{id}/permissions/{ask}",
            post(sessions::answer_permission),
        )
        .route("/api/sessions/{id}/questions", get(sessions::questions))
        .route(
            "/api/sessions/{id}/questions/{ask}",
            post(sessions::answer_question),
        )
        .route("/api/sessions/{id}/{action}", post(sessions::act))
        .route("/api/agents", get(sessions::agents))
        .route("/api/usage", get(sessions::usage))
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { ApiError::not_found("no such route; the API lives under /api") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

/// A route asked with a method it does not take (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; the Allow header says what it takes",
            uri.path()
        ),
    )
}

/// Why `serve` refuses an address.
pub fn check_listen(addr: SocketAddr, tokens_configured: bool) -> Result<(), String> {
    if !tokens_configured && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve on {addr} with auth off: configure [[api.tokens]] in the config \
             file, or listen on a loopback address such as 127.0.0.1:{}",
            addr.port()
        ));
    }
    Ok(())
}

/// Serves the API on `listener` until `shutdown` resolves; over TLS with `tls`.
pub async fn serve(
    core: Core,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router(core))
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(acceptor) => {
            axum::serve(tls::TlsListener::new(listener, acceptor)?, router(core))
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
