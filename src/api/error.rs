//! Errors as the REST API answers them: a status and a JSON body saying what is wrong.

use crate::core::CoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(Body {
            error: self.code,
            message: &self.message,
        });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match &err {
            CoreError::UnknownAgent { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_agent", err.to_string())
            }
            CoreError::SessionNotFound(_)
            | CoreError::NoSuchSession(_)
            | CoreError::AskNotFound { .. } => ApiError::not_found(err.to_string()),
            CoreError::Invalid(_) | CoreError::Env(_) => ApiError::bad_request(err.to_string()),
            CoreError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            // The cluster, a process or an agent did not do what was asked: gone (404), not
            // there or not answering (503), or it answered with a failure (502); with the reason.
            CoreError::Runtime(_) | CoreError::Harness(_) if err.is_missing() => {
                ApiError::new(StatusCode::NOT_FOUND, "sandbox_not_found", err.to_string())
            }
            CoreError::Runtime(_) | CoreError::Harness(_) if err.is_unavailable() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                err.to_string(),
            ),
            CoreError::Runtime(_) | CoreError::Harness(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", err.to_string())
            }
            CoreError::Server(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", err.to_string())
            }
            CoreError::Store(inner) => {
                tracing::error!(error = %inner, "store error while serving a request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is not answering; try again shortly",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::HarnessError;
    use crate::runtime::RuntimeError;

    /// What failed below the core reaches a client as what it is, with its reason: a sandbox
    /// that is gone, a cluster or agent not answering, or one that answered with a failure.
    #[test]
    fn runtime_and_harness_failures_keep_their_meaning() {
        let cases = [
            (
                CoreError::Runtime(RuntimeError::NotFound("agents/ad-1".into())),
                StatusCode::NOT_FOUND,
            ),
            (
                CoreError::Runtime(RuntimeError::Unavailable(
                    "the cluster does not answer".into(),
                )),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                CoreError::Runtime(RuntimeError::Transient("watch not synced".into())),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                CoreError::Runtime(RuntimeError::Failed("the pod refused: exit 3".into())),
                StatusCode::BAD_GATEWAY,
            ),
            (
                CoreError::Harness(HarnessError::Unreachable {
                    endpoint: "http://10.0.0.1:4096".into(),
                    reason: "connection refused".into(),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                CoreError::Harness(HarnessError::Refused("bad request".into())),
                StatusCode::BAD_GATEWAY,
            ),
        ];
        for (err, status) in cases {
            let text = err.to_string();
            let api = ApiError::from(err);
            assert_eq!(api.status, status, "{text}");
            assert_eq!(api.message, text, "the reason is kept");
        }
    }
}
