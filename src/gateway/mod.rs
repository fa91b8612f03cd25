//! The LLM gateway (LiteLLM's OpenAI-compatible proxy) in front of the model providers: its
//! health, and the keys sandboxes use to reach it. The master key stays with agentdeck; a
//! sandbox gets a per-session virtual key (where the gateway keeps a database) or a configured
//! sandbox key.

use crate::config::GatewayConfig;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no gateway is configured ([gateway] url)")]
    NotConfigured,
    #[error("the gateway master key is not set: export {0}")]
    NoMasterKey(String),
    #[error("the gateway at {url} is not reachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the gateway refused: {0}")]
    Refused(String),
}

/// Whether the gateway answers its liveness probe; `Err` says why not, for `doctor`.
pub async fn check_health(base_url: &str) -> Result<(), String> {
    let url = format!("{}/health/liveliness", base_url.trim_end_matches('/'));
    let client = crate::net::http_client(Duration::from_secs(3))
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("{url} answered {}", resp.status())),
        Err(e) if e.is_connect() => Err(format!("nothing listens at {base_url}")),
        Err(e) if e.is_timeout() => Err(format!("{url} did not answer within 3s")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// The key a sandbox gets, and whether agentdeck must revoke it when the session ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxKey {
    pub key: String,
    pub revocable: bool,
}

pub struct Gateway {
    config: GatewayConfig,
    http: reqwest::Client,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        let http = crate::net::http_client(Duration::from_secs(15))
            .map_err(|e| GatewayError::Refused(format!("cannot build an HTTP client: {e}")))?;
        Ok(Gateway { config, http })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    fn master_key(&self) -> Result<String, GatewayError> {
        std::env::var(&self.config.master_key_env)
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| GatewayError::NoMasterKey(self.config.master_key_env.clone()))
    }

    fn url(&self, path: &str) -> Result<String, GatewayError> {
        let base = self
            .config
            .url
            .as_deref()
            .ok_or(GatewayError::NotConfigured)?;
        Ok(format!("{}{path}", base.trim_end_matches('/')))
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, GatewayError> {
        let url = self.url(path)?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(self.master_key()?)
            .json(&body)
            .send()
            .await
            .map_err(|e| GatewayError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail: String = text.chars().take(300).collect();
            return Err(GatewayError::Refused(format!("{path}: {status}: {detail}")));
        }
        serde_json::from_str(&text)
            .map_err(|e| GatewayError::Refused(format!("{path}: unreadable answer: {e}")))
    }

    /// The key for a new sandbox of `session`, allowed only `model`.
    pub async fn key_for(
        &self,
        session: uuid::Uuid,
        model: &str,
    ) -> Result<Option<SandboxKey>, GatewayError> {
        if self.config.virtual_keys {
            let gateway_model = model.split_once('/').map_or(model, |(_, m)| m);
            let mut body = json!({
                "models": [gateway_model],
                "duration": format!("{}s", self.config.key_duration.as_secs()),
                "metadata": {"agentdeck_session": session.to_string()},
                "key_alias": format!("agentdeck-{session}"),
            });
            if let Some(budget) = self.config.key_budget {
                body["max_budget"] = json!(budget);
            }
            let answer = self.post("/key/generate", body).await?;
            let key = answer["key"]
                .as_str()
                .ok_or_else(|| GatewayError::Refused("/key/generate returned no key".into()))?;
            return Ok(Some(SandboxKey {
                key: key.to_string(),
                revocable: true,
            }));
        }
        Ok(self.config.sandbox_key_env.as_ref().and_then(|var| {
            std::env::var(var)
                .ok()
                .filter(|k| !k.is_empty())
                .map(|key| SandboxKey {
                    key,
                    revocable: false,
                })
        }))
    }

    /// Revokes a session's virtual key.
    pub async fn revoke(&self, key: &str) -> Result<(), GatewayError> {
        self.post("/key/delete", json!({"keys": [key]}))
            .await
            .map(|_| ())
    }
}
