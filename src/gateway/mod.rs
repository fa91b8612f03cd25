//! The LLM gateway (LiteLLM's OpenAI-compatible proxy) in front of the model providers.

use std::time::Duration;

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
