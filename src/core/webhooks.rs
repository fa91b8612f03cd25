//! Webhooks: a team hears of its agents with no cockpit open. The store records a notice with
//! the very change that caused it (an agent starts waiting for a person, fails, finishes a
//! turn); the fleet's notifier (a role: one process at a time) hands each notice to the
//! `[[webhooks]]` that want it as one task per webhook, in the same write that deletes the
//! notice; the worker delivers each task as a POST of JSON, retried with backoff, signed when
//! the webhook has a secret. A receiver may see a notice twice (a delivery whose answer was
//! lost is sent again): `X-Agentdeck-Delivery` names it.

use super::Core;
use super::lifecycle::{TaskError, TaskResult};
use crate::config::Webhook;
use crate::model::{AskStatus, MessageRole, NewTask, Notice, NoticeKind, Session, Task, TaskKind};
use crate::sanitize;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// Notices handed on per write.
const BATCH: i64 = 200;
/// Deliveries of one notice to one webhook (with the worker's backoff between them, capped at
/// `[worker] max_backoff`).
const ATTEMPTS: i32 = 8;
/// How long a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest excerpt of the agent's last words in a `done` notice.
const EXCERPT_CHARS: usize = 1000;

/// What a notice says, in words (untrusted parts cleaned): for a notification or a chat.
pub fn notice_text(event: NoticeKind, session: &Session) -> String {
    let title = sanitize::line(&session.title);
    match event {
        NoticeKind::Waiting => format!("{title} waits for you"),
        NoticeKind::Failed => {
            let why = session
                .failure_reason
                .as_deref()
                .map(sanitize::line)
                .unwrap_or_else(|| "no reason was recorded".into());
            format!("{title} failed: {why}")
        }
        NoticeKind::Done => format!("{title} finished its turn"),
    }
}

/// What a `notice.webhook` task carries.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Delivery {
    notice: i64,
    session: Uuid,
    event: NoticeKind,
    at: chrono::DateTime<chrono::Utc>,
    webhook: String,
}

fn task_for(notice: &Notice, hook: &Webhook) -> NewTask {
    let delivery = Delivery {
        notice: notice.id,
        session: notice.session_id,
        event: notice.event,
        at: notice.at,
        webhook: hook.name.clone(),
    };
    // Not the session's task: a slow receiver must not hold up the session's own work (its
    // tasks run one at a time).
    NewTask::new(
        TaskKind::Webhook,
        serde_json::to_value(&delivery).unwrap_or(Value::Null),
    )
    .max_attempts(ATTEMPTS)
    .dedupe(format!("notice:{}:{}", notice.id, hook.name))
}

impl Core {
    /// The notifier's pass: every notice recorded so far becomes a task for each webhook that
    /// wants it (none when no webhook does: the notice is only deleted). Returns how many
    /// notices were handed on.
    pub(super) async fn hand_on_notices(&self) -> super::Result<usize> {
        let config = self.config();
        let mut handed = 0;
        loop {
            let notices = self.store().list_notices(BATCH).await?;
            let Some(last) = notices.last() else {
                return Ok(handed);
            };
            let tasks: Vec<NewTask> = notices
                .iter()
                .flat_map(|n| {
                    config
                        .webhooks
                        .iter()
                        .filter(|h| h.wants(&n.team, n.event))
                        .map(move |h| task_for(n, h))
                })
                .collect();
            self.store().hand_on_notices(last.id, &tasks).await?;
            handed += notices.len();
            if tasks.is_empty() {
                tracing::trace!(notices = notices.len(), "notices wanted by no webhook");
            } else {
                tracing::debug!(
                    notices = notices.len(),
                    deliveries = tasks.len(),
                    "notices handed to webhooks"
                );
            }
            if i64::try_from(notices.len()).unwrap_or(i64::MAX) < BATCH {
                return Ok(handed);
            }
        }
    }

    /// Delivers one notice to one webhook (a `notice.webhook` task).
    pub(super) async fn deliver_webhook(&self, task: &Task) -> TaskResult {
        let delivery: Delivery = serde_json::from_value(task.payload.clone())
            .map_err(|e| TaskError::permanent(format!("unreadable webhook task: {e}")))?;
        let config = self.config();
        let Some(hook) = config.webhooks.iter().find(|h| h.name == delivery.webhook) else {
            tracing::info!(webhook = %delivery.webhook, notice = delivery.notice, "the webhook is no longer configured; its notice is dropped");
            return Ok(());
        };
        let Some(session) = self.store().get_session(delivery.session).await? else {
            return Ok(());
        };
        let body = self.webhook_body(&delivery, &session).await?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| TaskError::permanent(format!("cannot write the notice: {e}")))?;
        post(hook, &delivery, body).await
    }

    /// The JSON a webhook receives. `text` is a sentence (what a chat's incoming webhook shows).
    async fn webhook_body(
        &self,
        delivery: &Delivery,
        session: &Session,
    ) -> Result<Value, TaskError> {
        let mut body = json!({
            "event": delivery.event,
            "notice": delivery.notice,
            "at": delivery.at,
            "text": notice_text(delivery.event, session),
            "session": {
                "id": session.id,
                "title": sanitize::line(&session.title),
                "team": session.team,
                "agent_id": session.agent_id,
                "status": session.status,
                "failure_reason": session.failure_reason.as_deref().map(sanitize::line),
            },
        });
        match delivery.event {
            NoticeKind::Waiting => {
                let asks: Vec<Value> = self
                    .store()
                    .list_asks(session.id, true)
                    .await?
                    .into_iter()
                    .filter(|a| a.status == AskStatus::Pending)
                    .map(|a| json!({"id": a.id, "kind": a.kind, "title": sanitize::line(&a.title)}))
                    .collect();
                body["asks"] = Value::Array(asks);
            }
            NoticeKind::Done => {
                let recent = self
                    .store()
                    .list_messages(session.id, (session.last_message_seq - 4).max(0), 4)
                    .await?;
                if let Some(last) = recent
                    .iter()
                    .rev()
                    .find(|m| m.role == MessageRole::Assistant)
                {
                    let text = sanitize::text(&last.text()).into_owned();
                    let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
                    if excerpt.len() < text.len() {
                        excerpt.push('…');
                    }
                    body["last_message"] = Value::String(excerpt);
                }
            }
            NoticeKind::Failed => {}
        }
        Ok(body)
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let mut out = String::from("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// POSTs `body`; a refusal that retrying cannot mend (4xx but 408 and 429) is permanent.
async fn post(hook: &Webhook, delivery: &Delivery, body: Vec<u8>) -> TaskResult {
    let client = crate::net::http_client(TIMEOUT)
        .map_err(|e| TaskError::retry(format!("cannot build an HTTP client: {e}")))?;
    let mut request = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("agentdeck/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Agentdeck-Event", delivery.event.as_str())
        .header("X-Agentdeck-Delivery", delivery.notice.to_string());
    if let Some(var) = &hook.secret_env {
        let secret = std::env::var(var).ok().filter(|s| !s.is_empty()).ok_or_else(|| {
            TaskError::permanent(format!(
                "webhook {:?} signs with ${var}, which is not set in this process's environment",
                hook.name
            ))
        })?;
        request = request.header("X-Agentdeck-Signature", signature(secret.as_bytes(), &body));
    }
    let answer = request.body(body).send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!("no answer within {}s", TIMEOUT.as_secs())
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            e.to_string()
        };
        TaskError::retry(format!("webhook {:?}: {why}", hook.name))
    })?;
    let status = answer.status();
    if status.is_success() {
        tracing::info!(webhook = %hook.name, notice = delivery.notice, event = %delivery.event, session = %delivery.session, "notice delivered");
        return Ok(());
    }
    let said: String = answer
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let message = format!(
        "webhook {:?} answered {status}: {}",
        hook.name,
        sanitize::line(&said)
    );
    let permanent = status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
    Err(if permanent {
        TaskError::permanent(message)
    } else {
        TaskError::retry(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
