//! HTTP calls to opencode's server API (`opencode serve`), the harness in each sandbox.

use crate::harness::{Endpoint, HarnessError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// How long a plain request may take (prompts are sent async; they return at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

/// One message as `GET /session/:id/message` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    pub info: Value,
    #[serde(default)]
    pub parts: Vec<Value>,
}

/// `provider/model` as opencode wants it: `{"providerID", "modelID"}`.
pub fn model_ref(model: &str) -> Value {
    match model.split_once('/') {
        Some((provider, model)) => json!({"providerID": provider, "modelID": model}),
        None => json!({"providerID": "litellm", "modelID": model}),
    }
}

/// The user name opencode asks for with `OPENCODE_SERVER_PASSWORD` (set explicitly in the
/// sandbox too, so a change of opencode's default cannot lock agentdeck out).
pub const USERNAME: &str = "opencode";

/// `url` + `path`, with the password when the sandbox has one.
pub fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    endpoint: &Endpoint,
    path: &str,
) -> reqwest::RequestBuilder {
    let url = format!("{}{path}", endpoint.url.trim_end_matches('/'));
    let req = http.request(method, url);
    match endpoint.password() {
        Some(password) => req.basic_auth(USERNAME, Some(password)),
        None => req,
    }
}

/// What a 401 from the harness means for an operator.
pub fn unauthorized(what: &str) -> HarnessError {
    HarnessError::Refused(format!(
        "{what}: the harness refused agentdeck's password (401): the sandbox was started with \
         another one; restart the sandbox"
    ))
}

impl Client {
    pub fn new() -> Result<Self, HarnessError> {
        let http = crate::net::direct_http_client(REQUEST_TIMEOUT)
            .map_err(|e| HarnessError::Refused(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { http })
    }

    fn req(
        &self,
        method: reqwest::Method,
        endpoint: &Endpoint,
        path: &str,
    ) -> reqwest::RequestBuilder {
        request(&self.http, method, endpoint, path)
    }

    fn unreachable(endpoint: &Endpoint, err: reqwest::Error) -> HarnessError {
        HarnessError::Unreachable {
            endpoint: endpoint.url.clone(),
            reason: if err.is_connect() {
                "connection refused".to_string()
            } else if err.is_timeout() {
                "timed out".to_string()
            } else {
                err.to_string()
            },
        }
    }

    /// Sends a request and reads a JSON answer (or none, for 204), turning errors into
    /// [`HarnessError`]s that say what opencode said.
    async fn call(
        &self,
        endpoint: &Endpoint,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, HarnessError> {
        let resp = request
            .send()
            .await
            .map_err(|e| Self::unreachable(endpoint, e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Self::unreachable(endpoint, e))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(unauthorized(what));
        }
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return crate::harness::json::parse(&text)
                .map(|(value, _)| value)
                .map_err(|e| {
                    HarnessError::Refused(format!(
                        "{what}: opencode answered something unreadable: {e}"
                    ))
                });
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v["data"]["message"]
                    .as_str()
                    .or_else(|| v["message"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| text.chars().take(300).collect());
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(HarnessError::UnknownSession(format!("{what}: {detail}")));
        }
        Err(HarnessError::Refused(format!("{what}: {status}: {detail}")))
    }

    pub async fn health(&self, endpoint: &Endpoint) -> Result<(), HarnessError> {
        let req = self
            .req(reqwest::Method::GET, endpoint, "/global/health")
            .timeout(Duration::from_secs(3));
        let v = self.call(endpoint, req, "health").await?;
        if v["healthy"].as_bool() == Some(false) {
            return Err(HarnessError::Refused(
                "opencode says it is not healthy".into(),
            ));
        }
        Ok(())
    }

    pub async fn create_session(
        &self,
        endpoint: &Endpoint,
        title: &str,
    ) -> Result<String, HarnessError> {
        let req = self
            .req(reqwest::Method::POST, endpoint, "/session")
            .json(&json!({"title": title}));
        let v = self.call(endpoint, req, "create session").await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Refused("opencode created a session without an id".into()))
    }

    /// Deletes a conversation and what it holds.
    pub async fn delete_session(
        &self,
        endpoint: &Endpoint,
        session: &str,
    ) -> Result<(), HarnessError> {
        let req = self.req(
            reqwest::Method::DELETE,
            endpoint,
            &format!("/session/{session}"),
        );
        self.call(endpoint, req, "delete session").await.map(|_| ())
    }

    /// Whether opencode still knows `session` (it forgets them when its process restarts).
    pub async fn has_session(
        &self,
        endpoint: &Endpoint,
        session: &str,
    ) -> Result<bool, HarnessError> {
        let req = self.req(
            reqwest::Method::GET,
            endpoint,
            &format!("/session/{session}"),
        );
        match self.call(endpoint, req, "get session").await {
            Ok(_) => Ok(true),
            Err(HarnessError::UnknownSession(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts a turn; returns once opencode accepted it (the reply streams on `/event`). A
    /// `no_reply` prompt (history added without a turn) is sent to `/message`, which returns
    /// once it is stored, so that a prompt sent next comes after it.
    pub async fn prompt_async(
        &self,
        endpoint: &Endpoint,
        session: &str,
        model: &str,
        system: Option<&str>,
        no_reply: bool,
        parts: Vec<Value>,
    ) -> Result<(), HarnessError> {
        let mut body = json!({"model": model_ref(model), "parts": parts});
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        if no_reply {
            body["noReply"] = json!(true);
        }
        let req = self
            .req(
                reqwest::Method::POST,
                endpoint,
                &if no_reply {
                    format!("/session/{session}/message")
                } else {
                    format!("/session/{session}/prompt_async")
                },
            )
            .json(&body);
        self.call(endpoint, req, "send prompt").await.map(|_| ())
    }

    /// What opencode waits for a person to answer: `GET /permission` or `GET /question`.
    pub async fn pending(
        &self,
        endpoint: &Endpoint,
        what: &str,
    ) -> Result<Vec<Value>, HarnessError> {
        let req = self.req(reqwest::Method::GET, endpoint, &format!("/{what}"));
        let v = self.call(endpoint, req, &format!("list {what}s")).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Answers a permission request or a question: `POST /{permission|question}/:id/{route}`.
    /// A request opencode does not have (answered, or lost in a restart) is `NotWaiting`.
    pub async fn reply(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: Value,
    ) -> Result<(), HarnessError> {
        let req = self.req(reqwest::Method::POST, endpoint, path).json(&body);
        match self.call(endpoint, req, "answer").await {
            Ok(_) => Ok(()),
            Err(HarnessError::UnknownSession(why)) => Err(HarnessError::NotWaiting(why)),
            Err(e) => Err(e),
        }
    }

    pub async fn abort(&self, endpoint: &Endpoint, session: &str) -> Result<(), HarnessError> {
        let req = self.req(
            reqwest::Method::POST,
            endpoint,
            &format!("/session/{session}/abort"),
        );
        self.call(endpoint, req, "abort").await.map(|_| ())
    }

    pub async fn messages(
        &self,
        endpoint: &Endpoint,
        session: &str,
    ) -> Result<Vec<WireMessage>, HarnessError> {
        let req = self.req(
            reqwest::Method::GET,
            endpoint,
            &format!("/session/{session}/message"),
        );
        let v = self.call(endpoint, req, "list messages").await?;
        serde_json::from_value(v)
            .map_err(|e| HarnessError::Refused(format!("unreadable message list: {e}")))
    }
}
