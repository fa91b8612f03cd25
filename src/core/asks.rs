//! The human in the loop: what an agent asks of a person (a permission for a tool call, a
//! question) and the answers. Ingest records asks from the harness's bus; an answer is taken
//! in the store first (the first answer wins, however many cockpits and API clients race for
//! it), then given to the harness; if the harness does not take it, the ask waits again (or,
//! when the agent no longer waits for it, is settled as gone) and the caller is told why.

use super::{Core, CoreError, Result};
use crate::harness::HarnessError;
use crate::model::{Answer, Ask, AskKind, AskStatus};
use crate::store::StoreError;
use uuid::Uuid;

/// Longest answer text (a label, a reason) taken.
const MAX_ANSWER_CHARS: usize = 4000;

impl Core {
    /// The session's asks of `kind` (every kind when `None`), oldest first; only those still
    /// waiting when `pending_only`.
    pub async fn asks(
        &self,
        id: Uuid,
        kind: Option<AskKind>,
        pending_only: bool,
    ) -> Result<Vec<Ask>> {
        self.get_session(id).await?;
        let mut asks = self.store().list_asks(id, pending_only).await?;
        asks.retain(|a| kind.is_none_or(|k| a.kind == k));
        Ok(asks)
    }

    /// Answers ask `ask_id` of session `id` as `by` (`cockpit:alice`, `api:platform` …).
    ///
    /// A second answer, or an answer to an ask the agent gave up on, is a conflict saying so;
    /// an unknown ask is not found; an answer of the wrong kind or shape is invalid. Nothing
    /// changes unless the harness took the answer.
    pub async fn answer(&self, id: Uuid, ask_id: &str, answer: Answer, by: &str) -> Result<Ask> {
        let session = self.get_session(id).await?;
        self.on_this_runtime(&session)?;
        let found = self
            .store()
            .list_asks(id, false)
            .await?
            .into_iter()
            .find(|a| a.id == ask_id)
            .ok_or_else(|| CoreError::AskNotFound {
                session: id,
                id: ask_id.to_string(),
            })?;
        check_answer(&found, &answer)?;
        let taken = match self
            .store()
            .answer_ask(id, ask_id, &answer.to_json(), answer.message(), by)
            .await
        {
            Ok(taken) => taken,
            Err(e) if e.is_not_found() => {
                return Err(CoreError::AskNotFound {
                    session: id,
                    id: ask_id.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let given = match self.endpoint_for_answer(&session).await {
            Ok(endpoint) => self.harness().answer(&endpoint, ask_id, &answer).await,
            Err(e) => Err(e),
        };
        match given {
            Ok(()) => {
                tracing::info!(session = %id, ask = ask_id, by, answer = %answer.to_json(), "answered");
                Ok(taken)
            }
            Err(HarnessError::NotWaiting(why)) => {
                tracing::info!(session = %id, ask = ask_id, %why, "the agent no longer waits for the ask");
                self.store().reopen_ask(id, ask_id, by).await?;
                self.store()
                    .settle_ask(id, ask_id, AskStatus::Gone, None)
                    .await?;
                Err(CoreError::Conflict(format!(
                    "the agent no longer waits for {} {ask_id} (its turn ended or its harness restarted)",
                    found.kind
                )))
            }
            Err(e) => {
                // Not given: it waits again, for this answer or another.
                self.store().reopen_ask(id, ask_id, by).await?;
                Err(e.into())
            }
        }
    }

    /// Where the session's harness answers now, for giving it an answer.
    async fn endpoint_for_answer(
        &self,
        session: &crate::model::Session,
    ) -> std::result::Result<crate::harness::Endpoint, HarnessError> {
        let unreachable = |reason: String| HarnessError::Unreachable {
            endpoint: format!("session {}", session.id),
            reason,
        };
        let sandbox = Self::sandbox_of(session).ok_or_else(|| {
            unreachable(format!("the session is {} with no sandbox", session.status))
        })?;
        let url = self
            .runtime()
            .health(&sandbox)
            .await
            .map_err(|e| unreachable(format!("sandbox health: {e}")))?
            .endpoint
            .ok_or_else(|| unreachable("the sandbox has no endpoint".into()))?;
        self.harness_endpoint(session.id, url)
            .await
            .map_err(|e: StoreError| unreachable(format!("store: {e}")))
    }
}

/// An answer fits its ask: the same kind, one list of labels per question, no label empty and
/// none too long.
fn check_answer(ask: &Ask, answer: &Answer) -> Result<()> {
    if ask.kind != answer.kind() {
        return Err(CoreError::Invalid(match ask.kind {
            AskKind::Permission => format!(
                "{} is a permission request: answer it with a reply (once, always or reject)",
                ask.id
            ),
            AskKind::Question => format!(
                "{} is a question: answer it with answers (one list of labels per question) or reject it",
                ask.id
            ),
        }));
    }
    let long = |t: &str| t.chars().count() > MAX_ANSWER_CHARS;
    match answer {
        Answer::Permission { message, .. } if message.as_deref().is_some_and(long) => {
            Err(CoreError::Invalid(format!(
                "the reason is longer than {MAX_ANSWER_CHARS} characters"
            )))
        }
        Answer::Question { answers } => {
            let asked = ask.detail["questions"].as_array().map_or(0, Vec::len);
            if answers.len() != asked {
                return Err(CoreError::Invalid(format!(
                    "{} asks {asked} question(s): give one list of labels for each, not {}",
                    ask.id,
                    answers.len()
                )));
            }
            if answers.iter().any(|labels| labels.is_empty()) {
                return Err(CoreError::Invalid(
                    "every question needs at least one label chosen or written".into(),
                ));
            }
            if answers
                .iter()
                .flatten()
                .any(|label| label.trim().is_empty() || long(label))
            {
                return Err(CoreError::Invalid(format!(
                    "a label must be 1 to {MAX_ANSWER_CHARS} characters"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
