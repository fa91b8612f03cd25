//! Forking a session: a new session, in a sandbox of its own, whose conversation is its
//! parent's up to a chosen message. The parent's transcript up to there is copied with the new
//! session's row, its history event and its provisioning task, in one transaction; when the
//! fork's sandbox comes up, that conversation is replayed to its new harness the way recovery
//! replays a conversation. The fork is linked to its parent (`parent_id`, `fork_seq`), and the
//! parent's history records the fork.

use super::{Core, CoreError, MAX_TITLE_CHARS, Result};
use crate::model::{
    Fork, Message, MessageRole, MessageStatus, NewEvent, NewMessage, NewSession, Session,
    SessionCreation, SessionQuery, TaskKind, env,
};
use uuid::Uuid;

impl Core {
    /// Forks session `id` at message `at_seq` (the fork's conversation is messages 1 to
    /// `at_seq`). A fork point outside the transcript is invalid and changes nothing.
    pub async fn fork(&self, id: Uuid, at_seq: i64) -> Result<Session> {
        let parent = self.get_session(id).await?;
        if at_seq < 1 || at_seq > parent.last_message_seq {
            return Err(CoreError::Invalid(match parent.last_message_seq {
                0 => format!("session {id} has no messages yet to fork at"),
                last => format!(
                    "no message #{at_seq} to fork session {id} at: its messages are #1 to #{last}"
                ),
            }));
        }
        let agent = self.agent(&parent.agent_id)?;
        let mut history = Vec::new();
        let mut after = 0;
        while after < at_seq {
            let page = self
                .store()
                .list_messages(id, after, (at_seq - after).min(500))
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            history.extend(page.iter().filter(|m| m.seq <= at_seq).map(copied));
        }
        // The parent's own env vars go with it; agentdeck's (keys, passwords) are made anew.
        let mut own = self.store().session_env(id).await?;
        own.retain(|name, _| !env::is_reserved(name));
        let env_keys: Vec<&String> = own.keys().collect();
        let title: String = format!("fork of {}", parent.title)
            .chars()
            .take(MAX_TITLE_CHARS)
            .collect();
        let fork_id = Uuid::now_v7();
        let session = self
            .store()
            .create_session(&SessionCreation {
                created: NewEvent::new(
                    "session.created",
                    serde_json::json!({
                        "agent_id": agent.id,
                        "team": parent.team,
                        "by": self.instance(),
                        "env_keys": env_keys,
                        "forked_from": id,
                        "at_seq": at_seq,
                    }),
                ),
                session: NewSession {
                    id: Some(fork_id),
                    agent_id: agent.id.clone(),
                    team: parent.team.clone(),
                    title,
                    env: own.clone(),
                    // A fork starts spending from nothing, under its parent's budget.
                    budget_usd: parent.budget_usd,
                },
                first_message: None,
                task: self.task(TaskKind::Provision, fork_id),
                fork: Some(Fork {
                    parent: id,
                    at_seq,
                    history,
                }),
            })
            .await?;
        let forked = [NewEvent::new(
            "session.forked",
            serde_json::json!({"fork": fork_id, "at_seq": at_seq}),
        )];
        super::write_aside("recording the fork in its parent's history", id, || {
            self.store().append_events(id, &forked)
        })
        .await;
        tracing::info!(session = %fork_id, parent = %id, at_seq, "session forked");
        Ok(session)
    }

    /// The sessions forked from `id`, newest first.
    pub async fn forks(&self, id: Uuid) -> Result<Vec<Session>> {
        self.get_session(id).await?;
        Ok(self
            .store()
            .list_sessions(&SessionQuery {
                parent: Some(id),
                limit: Some(1000),
                ..Default::default()
            })
            .await?)
    }
}

/// A message of the parent as the fork's: as it was, except a turn still streaming, which the
/// fork will not finish (it is marked aborted) and the harness's ids, which are the parent's.
fn copied(m: &Message) -> NewMessage {
    let status = match (m.role, m.status) {
        (MessageRole::Assistant, MessageStatus::Pending) => MessageStatus::Aborted,
        (_, status) => status,
    };
    let mut parts = m.parts.clone();
    if let Some(why) = crate::model::why_tools_stopped(status, m.error.as_deref()) {
        for part in &mut parts {
            part.stop_unfinished(&why);
        }
    }
    NewMessage {
        role: m.role,
        status,
        parts,
        harness_message_id: None,
    }
}
