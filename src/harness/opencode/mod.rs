//! The opencode harness: `opencode serve` in each sandbox, driven over its HTTP API and
//! followed on its `/event` bus.

mod client;
pub use client::USERNAME;
mod decode;

use crate::config::AgentSpec;
use crate::harness::sse::SseParser;
use crate::harness::{
    Endpoint, EventStream, GatewayAccess, Harness, HarnessError, HarnessMessage, Prompt,
};
use crate::model::{Answer, NewAsk, ToolRule};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// opencode sends a heartbeat about every 10 s; a bus silent for this long is dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(35);
/// Largest single event kept (a huge tool output, say); larger ones are logged and skipped.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

pub struct Opencode {
    client: client::Client,
    /// For the event bus: no overall timeout (it is long-lived), a connect timeout only.
    streaming: reqwest::Client,
}

impl Opencode {
    pub fn new() -> Result<Self, HarnessError> {
        crate::net::ensure_crypto();
        let streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| HarnessError::Refused(format!("cannot build an HTTP client: {e}")))?;
        Ok(Opencode {
            client: client::Client::new()?,
            streaming,
        })
    }
}

/// The provider and model ids of `provider/model`.
fn split_model(model: &str) -> (&str, &str) {
    model.split_once('/').unwrap_or(("litellm", model))
}

#[async_trait]
impl Harness for Opencode {
    async fn health(&self, endpoint: &Endpoint) -> Result<(), HarnessError> {
        self.client.health(endpoint).await
    }

    async fn create_session(
        &self,
        endpoint: &Endpoint,
        title: &str,
    ) -> Result<String, HarnessError> {
        self.client.create_session(endpoint, title).await
    }

    async fn has_session(&self, endpoint: &Endpoint, session: &str) -> Result<bool, HarnessError> {
        self.client.has_session(endpoint, session).await
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        session: &str,
        prompt: &Prompt,
    ) -> Result<(), HarnessError> {
        self.client
            .prompt_async(
                endpoint,
                session,
                &prompt.model,
                prompt.system.as_deref(),
                prompt.no_reply,
                vec![json!({"type": "text", "text": prompt.text})],
            )
            .await
    }

    async fn abort(&self, endpoint: &Endpoint, session: &str) -> Result<(), HarnessError> {
        self.client.abort(endpoint, session).await
    }

    async fn delete_session(&self, endpoint: &Endpoint, session: &str) -> Result<(), HarnessError> {
        self.client.delete_session(endpoint, session).await
    }

    async fn pending_asks(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Vec<(String, NewAsk)>, HarnessError> {
        let mut all = Vec::new();
        for (what, kind) in [
            ("permission", "permission.asked"),
            ("question", "question.asked"),
        ] {
            for raw in self.client.pending(endpoint, what).await? {
                let session = raw["sessionID"].as_str().map(str::to_string);
                if let (Some(session), Some(ask)) = (session, decode::ask(kind, &raw)) {
                    all.push((session, ask));
                }
            }
        }
        Ok(all)
    }

    async fn answer(
        &self,
        endpoint: &Endpoint,
        id: &str,
        answer: &Answer,
    ) -> Result<(), HarnessError> {
        let id = path_segment(id);
        let (path, body) = match answer {
            Answer::Permission { reply, message } => {
                let mut body = json!({ "reply": reply.as_str() });
                if let Some(message) = message.as_deref().filter(|m| !m.trim().is_empty()) {
                    body["message"] = json!(message);
                }
                (format!("/permission/{id}/reply"), body)
            }
            Answer::Question { answers } => (
                format!("/question/{id}/reply"),
                json!({ "answers": answers }),
            ),
            Answer::RejectQuestion => (format!("/question/{id}/reject"), json!({})),
        };
        self.client.reply(endpoint, &path, body).await
    }

    async fn messages(
        &self,
        endpoint: &Endpoint,
        session: &str,
    ) -> Result<Vec<HarnessMessage>, HarnessError> {
        let wire = self.client.messages(endpoint, session).await?;
        Ok(wire
            .iter()
            .filter_map(|m| decode::message(&m.info, &m.parts))
            .collect())
    }

    async fn events(&self, endpoint: &Endpoint) -> Result<EventStream, HarnessError> {
        let resp = client::request(&self.streaming, reqwest::Method::GET, endpoint, "/event")
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| HarnessError::Unreachable {
                endpoint: endpoint.url.clone(),
                reason: e.to_string(),
            })?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(client::unauthorized("event bus"));
        }
        if !resp.status().is_success() {
            return Err(HarnessError::Refused(format!(
                "{}/event answered {}",
                endpoint.url.trim_end_matches('/'),
                resp.status()
            )));
        }
        let endpoint = endpoint.url.clone();
        let bytes = resp.bytes_stream();
        let state = (
            bytes,
            SseParser::new(MAX_EVENT_BYTES),
            std::collections::VecDeque::new(),
        );
        let stream = futures::stream::unfold(state, move |(mut bytes, mut parser, mut queue)| {
            let endpoint = endpoint.clone();
            async move {
                loop {
                    if let Some(event) = queue.pop_front() {
                        return Some((Ok(event), (bytes, parser, queue)));
                    }
                    let chunk = match tokio::time::timeout(HEARTBEAT_TIMEOUT, bytes.next()).await {
                        Err(_) => {
                            let err = HarnessError::Unreachable {
                                endpoint,
                                reason: format!(
                                    "no heartbeat for {}s",
                                    HEARTBEAT_TIMEOUT.as_secs()
                                ),
                            };
                            return Some((Err(err), (bytes, parser, queue)));
                        }
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => {
                            let err = HarnessError::Unreachable {
                                endpoint,
                                reason: e.to_string(),
                            };
                            return Some((Err(err), (bytes, parser, queue)));
                        }
                        Ok(Some(Ok(chunk))) => chunk,
                    };
                    for sse in parser.feed(&chunk) {
                        match crate::harness::json::parse_event(&sse.data) {
                            Ok(raw) => queue.push_back(decode::event(&raw)),
                            Err(err) => {
                                tracing::warn!(%err, bytes = sse.data.len(), "skipping a malformed harness event");
                            }
                        }
                    }
                }
            }
        });
        // An error ends the stream: the caller reconnects and catches up.
        let mut failed = false;
        Ok(stream
            .take_while(move |item| {
                let go = !failed;
                failed = item.is_err();
                futures::future::ready(go)
            })
            .boxed())
    }

    fn sandbox_files(
        &self,
        agent: &AgentSpec,
        gateway: &GatewayAccess,
    ) -> BTreeMap<String, String> {
        let (provider, model) = split_model(&agent.model);
        let mut model_config = json!({ "tool_call": true });
        if let Some(price) = &gateway.price {
            // opencode's prices are USD per million tokens.
            let per_million = |p: f64| p * 1e6;
            let mut cost = json!({
                "input": per_million(price.input),
                "output": per_million(price.output),
            });
            if let Some(p) = price.cache_read {
                cost["cache_read"] = json!(per_million(p));
            }
            if let Some(p) = price.cache_write {
                cost["cache_write"] = json!(per_million(p));
            }
            model_config["cost"] = cost;
        }
        let config = json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                provider: {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "agentdeck gateway",
                    "options": {
                        "baseURL": format!("{}/v1", gateway.base_url.trim_end_matches('/')),
                        "apiKey": format!("{{env:{}}}", gateway.key_env),
                    },
                    "models": { model: model_config }
                }
            },
            "model": agent.model,
            "small_model": agent.model,
            "autoupdate": false,
            "share": "disabled",
        });
        // The permission block is written in its own order: a pattern table's order is its
        // meaning (the last match wins), which a JSON value would sort away.
        let config = WithPermission {
            base: config,
            permission: Permission(agent),
        };
        // opencode installs its plugin package from npm at start unless its config dir already
        // lists it as installed; seed that, so a sandbox makes no registry call and stops
        // promptly. The config dir is `$HOME/.config/opencode`, and HOME is `home/` in the
        // sandbox's working folder on every runtime.
        let config_dir = "home/.config/opencode";
        BTreeMap::from([
            (
                "opencode.json".to_string(),
                serde_json::to_string_pretty(&config).unwrap_or_default(),
            ),
            (
                format!("{config_dir}/package.json"),
                r#"{"dependencies":{"@opencode-ai/plugin":"*"}}"#.to_string(),
            ),
            (
                format!("{config_dir}/package-lock.json"),
                r#"{"lockfileVersion":3,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}"#
                    .to_string(),
            ),
            (format!("{config_dir}/node_modules/.agentdeck"), String::new()),
        ])
    }

    fn auth_env(&self, password: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "OPENCODE_SERVER_USERNAME".to_string(),
                client::USERNAME.to_string(),
            ),
            ("OPENCODE_SERVER_PASSWORD".to_string(), password.to_string()),
        ])
    }
}

/// opencode's config: everything else, then the permission block.
#[derive(serde::Serialize)]
struct WithPermission<'a> {
    #[serde(flatten)]
    base: serde_json::Value,
    permission: Permission<'a>,
}

/// The agent's tool policy as opencode's `permission` block: every tool allowed unless the
/// agent's `permission` table says otherwise (`ask` makes opencode wait for a person); a tool's
/// pattern table as an object in the order it was written.
struct Permission<'a>(&'a AgentSpec);

impl serde::Serialize for Permission<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Ordered<'a>(&'a [(String, crate::model::ToolPolicy)]);
        impl serde::Serialize for Ordered<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (pattern, policy) in self.0 {
                    map.serialize_entry(pattern, policy.as_str())?;
                }
                map.end()
            }
        }
        let rules = &self.0.permission;
        let defaults = ["bash", "edit", "webfetch"]
            .into_iter()
            .filter(|tool| !rules.contains_key(*tool));
        let mut map = serializer.serialize_map(None)?;
        for tool in defaults {
            map.serialize_entry(tool, "allow")?;
        }
        for (tool, rule) in rules {
            match rule {
                ToolRule::Every(policy) => map.serialize_entry(tool, policy.as_str())?,
                ToolRule::Patterns(patterns) => map.serialize_entry(tool, &Ordered(patterns))?,
            }
        }
        map.end()
    }
}

/// An id from opencode, made safe as one path segment (they are `per_…`/`que_…` words; anything
/// else is percent-encoded rather than trusted).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Harness;
    use crate::model::{ToolPolicy, ToolRule};

    #[test]
    fn the_permission_block_keeps_each_tools_patterns_in_order() {
        let dirs = crate::config::Dirs {
            config_dir: "/c".into(),
            data_dir: "/d".into(),
            state_dir: "/s".into(),
            cache_dir: "/k".into(),
        };
        let mut agent = crate::config::load_text("", "t.toml", dirs)
            .ok()
            .and_then(|c| c.agents.get("opencode").cloned())
            .expect("the built-in agent");
        agent.permission = BTreeMap::from([
            (
                "bash".to_string(),
                ToolRule::Patterns(vec![
                    ("*".to_string(), ToolPolicy::Ask),
                    ("git status".to_string(), ToolPolicy::Allow),
                    ("cat *".to_string(), ToolPolicy::Allow),
                ]),
            ),
            ("webfetch".to_string(), ToolRule::Every(ToolPolicy::Deny)),
        ]);
        let harness = Opencode::new().expect("a client");
        let files = harness.sandbox_files(
            &agent,
            &GatewayAccess {
                base_url: "http://gw".into(),
                key_env: "KEY".into(),
                price: Some(crate::model::ModelPrice {
                    input: 2.5e-06,
                    output: 1e-05,
                    cache_read: Some(1.25e-06),
                    cache_write: None,
                }),
            },
        );
        let text = &files["opencode.json"];
        let config: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(
            config["permission"],
            json!({"edit": "allow", "webfetch": "deny",
                   "bash": {"*": "ask", "git status": "allow", "cat *": "allow"}})
        );
        assert_eq!(
            config["model"], agent.model,
            "the rest of the config is there"
        );
        // The gateway's price, per million tokens as opencode reads it.
        let (provider, model) = split_model(&agent.model);
        let cost = &config["provider"][provider]["models"][model]["cost"];
        assert!(
            (cost["input"].as_f64().unwrap_or_default() - 2.5).abs() < 1e-9,
            "{cost}"
        );
        assert!(
            (cost["output"].as_f64().unwrap_or_default() - 10.0).abs() < 1e-9,
            "{cost}"
        );
        assert!(
            (cost["cache_read"].as_f64().unwrap_or_default() - 1.25).abs() < 1e-9,
            "{cost}"
        );
        assert!(cost.get("cache_write").is_none(), "{cost}");
        // in the order written (the last match wins), not sorted
        let at = |needle: &str| text.find(needle).unwrap_or(usize::MAX);
        assert!(
            at("\"*\": \"ask\"") < at("\"git status\"") && at("\"git status\"") < at("\"cat *\""),
            "{text}"
        );
    }
}
