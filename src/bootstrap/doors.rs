//! The bootstrap's two doors. The sandbox's port stands in front of the harness: closed while
//! the sandbox is warm and unclaimed, then open to the claiming session's password only (each
//! call passed on with the harness's own, which never leaves the sandbox). The gateway's door
//! stands in front of the LLM gateway: once claimed, every model call goes on with the
//! session's key; before that, the warm-up's model calls are answered here, at no cost.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::watch;

/// Where the sandbox is in its life.
#[derive(Clone, Debug)]
pub enum Stage {
    /// The harness is starting (or warming up).
    Starting,
    /// Ready for a session to claim it.
    Warm,
    /// A session's: its calls pass.
    Claimed(Arc<Opened>),
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Warm => "warm",
            Stage::Claimed(_) => "claimed",
        }
    }
}

/// What a claim opened the doors with.
pub struct Opened {
    /// The `Authorization` header the session's calls must carry.
    pub auth: String,
    /// The `Authorization` header model calls go on with (the sandbox's own when absent).
    pub gateway_auth: Option<String>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opened(<redacted>)")
    }
}

/// `Basic` credentials as a header value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[derive(Clone)]
pub struct Doors {
    pub stage: watch::Sender<Stage>,
    /// The harness inside, and the credentials it asks for.
    pub harness: String,
    pub harness_auth: String,
    /// The real gateway's base URL.
    pub gateway: String,
    pub http: reqwest::Client,
}

impl Doors {
    /// The sandbox's door: the router served on its port.
    pub fn front(self) -> axum::Router {
        axum::Router::new().fallback(front).with_state(self)
    }
    /// The gateway's door, for the harness only (on loopback).
    pub fn gateway_door(self) -> axum::Router {
        axum::Router::new().fallback(gateway).with_state(self)
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// Compares without stopping at the first difference.
fn same(given: Option<&HeaderValue>, want: &str) -> bool {
    let given = given.map(HeaderValue::as_bytes).unwrap_or_default();
    let want = want.as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn front(State(doors): State<Doors>, req: Request) -> Response {
    let stage = doors.stage.borrow().clone();
    if req.uri().path() == "/agentdeck/warm" {
        let status = match stage {
            Stage::Starting => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        };
        return (
            status,
            axum::Json(serde_json::json!({ "stage": stage.name() })),
        )
            .into_response();
    }
    match stage {
        Stage::Starting => refuse(StatusCode::SERVICE_UNAVAILABLE, "the sandbox is starting"),
        // Up, and asking for a password no one has yet: what a harness says without one.
        Stage::Warm => refuse(
            StatusCode::UNAUTHORIZED,
            "this warm sandbox is not claimed by a session yet",
        ),
        Stage::Claimed(opened) => {
            if !same(req.headers().get(header::AUTHORIZATION), &opened.auth) {
                let mut resp = refuse(StatusCode::UNAUTHORIZED, "wrong or missing password");
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"sandbox\""),
                );
                return resp;
            }
            forward(&doors.http, &doors.harness, req, Some(&doors.harness_auth)).await
        }
    }
}

async fn gateway(State(doors): State<Doors>, req: Request) -> Response {
    let stage = doors.stage.borrow().clone();
    match stage {
        Stage::Claimed(opened) => {
            forward(
                &doors.http,
                &doors.gateway,
                req,
                opened.gateway_auth.as_deref(),
            )
            .await
        }
        _ if req.method() == Method::POST && req.uri().path().ends_with("/chat/completions") => {
            warm_up_answer(req).await
        }
        _ => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway opens when a session claims this sandbox",
        ),
    }
}

/// A model's answer to the warm-up, in the gateway's own form (streamed when asked so): the
/// harness does all of a turn's one-time work with nothing sent out.
async fn warm_up_answer(req: Request) -> Response {
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let asked: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = asked["model"].as_str().unwrap_or("warm-up").to_string();
    let usage = serde_json::json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
    if asked["stream"].as_bool() != Some(true) {
        return axum::Json(serde_json::json!({
            "id": "warm-up", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk =
        |delta: serde_json::Value, finish: Option<&str>, usage: Option<&serde_json::Value>| {
            let mut c = serde_json::json!({
                "id": "warm-up", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            if let Some(u) = usage {
                c["usage"] = u.clone();
            }
            format!("data: {c}\n\n")
        };
    let text = [
        chunk(
            serde_json::json!({"role": "assistant", "content": "ok"}),
            None,
            None,
        ),
        chunk(serde_json::json!({}), Some("stop"), Some(&usage)),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from(text),
    )
        .into_response()
}

/// Headers that belong to one connection, not to the call.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, keep_auth: bool) {
    for (name, value) in from {
        if hop_by_hop(name) || (!keep_auth && name == header::AUTHORIZATION) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Passes a call on to `base`, streaming both ways (the harness's event bus is a call that
/// never ends); `auth` replaces the caller's credentials when given.
async fn forward(http: &reqwest::Client, base: &str, req: Request, auth: Option<&str>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers, auth.is_none());
    if let Some(auth) = auth
        && let Ok(value) = HeaderValue::from_str(auth)
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    let mut out = http
        .request(parts.method, format!("{base}{path}"))
        .headers(headers);
    if has_body {
        out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    match out.send().await {
        Ok(resp) => {
            let mut back = Response::builder().status(resp.status().as_u16());
            if let Some(headers) = back.headers_mut() {
                copy_headers(resp.headers(), headers, true);
            }
            back.body(Body::from_stream(resp.bytes_stream()))
                .unwrap_or_else(|e| refuse(StatusCode::BAD_GATEWAY, &e.to_string()))
        }
        Err(e) => refuse(
            StatusCode::BAD_GATEWAY,
            &format!("{base} does not answer: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    /// A stand-in harness and gateway that say what they were called with; its event bus sends
    /// one event, then holds the call open until `release` is notified.
    async fn inside(release: Arc<tokio::sync::Notify>) -> String {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let said = |headers: HeaderMap, body: String| async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            axum::Json(serde_json::json!({ "auth": auth, "body": body }))
        };
        let bus = move || {
            let release = release.clone();
            async move {
                let first = futures::stream::once(async {
                    Ok::<_, std::convert::Infallible>("data: first\n\n".to_string())
                });
                let rest = futures::stream::once(async move {
                    release.notified().await;
                    Ok("data: last\n\n".to_string())
                });
                Body::from_stream(futures::StreamExt::chain(first, rest))
            }
        };
        let app = axum::Router::new()
            .route("/session", post(said))
            .route("/v1/chat/completions", post(said))
            .route("/event", get(bus));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn open(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_doors_open_to_the_claiming_session_only_and_stream() {
        let release = Arc::new(tokio::sync::Notify::new());
        let inner = inside(release.clone()).await;
        let doors = Doors {
            stage: watch::channel(Stage::Starting).0,
            harness: inner.clone(),
            harness_auth: basic("opencode", "inner-secret"),
            gateway: inner,
            http: crate::net::direct_http_client_untimed().unwrap(),
        };
        let front = open(doors.clone().front()).await;
        let gateway = open(doors.clone().gateway_door()).await;
        let http = reqwest::Client::new();
        let call = |auth: Option<&str>| {
            let mut req = http
                .post(format!("{front}/session"))
                .body("{\"title\":\"t\"}");
            if let Some(auth) = auth {
                req = req.header(header::AUTHORIZATION, auth);
            }
            req.send()
        };
        let session = basic("opencode", "session-secret");

        // Starting, then warm: closed, and saying so.
        let warm = http
            .get(format!("{front}/agentdeck/warm"))
            .send()
            .await
            .unwrap();
        assert_eq!(warm.status(), 503);
        assert_eq!(call(Some(&session)).await.unwrap().status(), 503);
        doors.stage.send_replace(Stage::Warm);
        let warm: serde_json::Value = http
            .get(format!("{front}/agentdeck/warm"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(warm["stage"], "warm");
        assert_eq!(call(Some(&session)).await.unwrap().status(), 401);

        // The warm-up's model call is answered at the door, streamed, without going out.
        let answer = http
            .post(format!("{gateway}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "m", "stream": true, "messages": []}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            answer.contains("\"content\":\"ok\"") && answer.ends_with("data: [DONE]\n\n"),
            "{answer}"
        );
        assert!(!answer.contains("auth"), "{answer}");

        // Claimed: the session's password passes, as the harness's own; no other does.
        doors.stage.send_replace(Stage::Claimed(Arc::new(Opened {
            auth: session.clone(),
            gateway_auth: Some("Bearer sk-session".into()),
        })));
        let through: serde_json::Value = call(Some(&session)).await.unwrap().json().await.unwrap();
        assert_eq!(through["auth"], basic("opencode", "inner-secret"));
        assert_eq!(through["body"], "{\"title\":\"t\"}");
        for wrong in [
            None,
            Some(basic("opencode", "inner-secret")),
            Some(basic("opencode", "session-secreT")),
        ] {
            let resp = call(wrong.as_deref()).await.unwrap();
            assert_eq!(resp.status(), 401, "{wrong:?}");
        }
        // Model calls go on with the session's key, whatever the harness sent.
        let out: serde_json::Value = http
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth("sk-placeholder")
            .body("{}")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(out["auth"], "Bearer sk-session");

        // The event bus streams through: its first event arrives while the call is open.
        let mut bus = http
            .get(format!("{front}/event"))
            .header(header::AUTHORIZATION, &session)
            .send()
            .await
            .unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), bus.chunk())
            .await
            .expect("the first event before the bus ends")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(&first[..], b"data: first\n\n");
        release.notify_one();
        let last = bus.chunk().await.unwrap().unwrap_or_default();
        assert_eq!(&last[..], b"data: last\n\n");
    }

    #[test]
    fn credentials_compare_whole() {
        let want = basic("opencode", "pw");
        assert!(same(Some(&HeaderValue::from_str(&want).unwrap()), &want));
        assert!(!same(None, &want));
        assert!(!same(
            Some(&HeaderValue::from_static("Basic b3BlbmNvZGU6cA==")),
            &want
        ));
        assert_eq!(basic("opencode", "pw"), "Basic b3BlbmNvZGU6cHc=");
    }
}
