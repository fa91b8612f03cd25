//! The LLM gateway (LiteLLM's OpenAI-compatible proxy) in front of the model providers: its
//! health, and the keys sandboxes use to reach it. The master key stays with agentdeck; a
//! sandbox gets a per-session virtual key (where the gateway keeps a database) or a configured
//! sandbox key.

use crate::config::GatewayConfig;
use crate::model::ModelPrice;
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
    /// `/model/info`, as last read, and when.
    prices: tokio::sync::Mutex<Option<(std::time::Instant, PriceList)>>,
}

/// Each model's price by its gateway name (`None`: the gateway knows no price for it).
type PriceList = std::collections::HashMap<String, Option<ModelPrice>>;

/// How long a read of the gateway's prices is used.
const PRICES_FOR: Duration = Duration::from_secs(600);

/// The price in one entry of LiteLLM's `/model/info` (`model_info.input_cost_per_token` …);
/// `None` unless both the input and the output price are there.
fn price_of(entry: &serde_json::Value) -> Option<ModelPrice> {
    let info = &entry["model_info"];
    let per_token = |key: &str| info[key].as_f64().filter(|p| p.is_finite() && *p >= 0.0);
    Some(ModelPrice {
        input: per_token("input_cost_per_token")?,
        output: per_token("output_cost_per_token")?,
        cache_read: per_token("cache_read_input_token_cost"),
        cache_write: per_token("cache_creation_input_token_cost"),
    })
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        let http = crate::net::http_client(Duration::from_secs(15))
            .map_err(|e| GatewayError::Refused(format!("cannot build an HTTP client: {e}")))?;
        Ok(Gateway {
            config,
            http,
            prices: tokio::sync::Mutex::new(None),
        })
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

    /// What `model` (`provider/name`, as an agent names it) costs, from the gateway's
    /// `/model/info` (read again every 10 minutes). `Ok(None)`: the gateway knows no price.
    pub async fn price(&self, model: &str) -> Result<Option<ModelPrice>, GatewayError> {
        let name = model.split_once('/').map_or(model, |(_, m)| m);
        let mut cached = self.prices.lock().await;
        if let Some((at, list)) = cached.as_ref()
            && at.elapsed() < PRICES_FOR
        {
            return Ok(list.get(name).copied().flatten());
        }
        let url = self.url("/model/info")?;
        let mut request = self.http.get(&url);
        if let Ok(key) = self.master_key() {
            request = request.bearer_auth(key);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| GatewayError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(GatewayError::Refused(format!("/model/info: {status}")));
        }
        let answer: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| GatewayError::Refused(format!("/model/info: unreadable answer: {e}")))?;
        let list: PriceList = answer["data"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| Some((e["model_name"].as_str()?.to_string(), price_of(e))))
                    .collect()
            })
            .unwrap_or_default();
        let price = list.get(name).copied().flatten();
        *cached = Some((std::time::Instant::now(), list));
        Ok(price)
    }

    /// Revokes a session's virtual key.
    pub async fn revoke(&self, key: &str) -> Result<(), GatewayError> {
        self.post("/key/delete", json!({"keys": [key]}))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_needs_input_and_output() {
        // As LiteLLM 1.106 answers for gpt-4o and for a custom provider's model.
        let priced = serde_json::json!({"model_name": "mock-gpt", "model_info": {
            "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-06, "cache_creation_input_token_cost": null}});
        assert_eq!(
            price_of(&priced),
            Some(ModelPrice {
                input: 2.5e-06,
                output: 1e-05,
                cache_read: Some(1.25e-06),
                cache_write: None
            })
        );
        let unknown = serde_json::json!({"model_name": "scripted", "model_info": {
            "input_cost_per_token": null, "output_cost_per_token": null}});
        assert_eq!(price_of(&unknown), None);
    }
}
