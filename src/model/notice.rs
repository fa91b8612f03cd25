//! A notice: something a person should hear of (an agent waiting for them, failing, finishing a
//! turn), recorded by the store with the change that caused it and handed on to webhooks.

use super::NoticeKind;
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// In the order they happened, fleet-wide.
    pub id: i64,
    pub session_id: Uuid,
    /// The session's team, for the webhooks that serve one team.
    pub team: String,
    pub event: NoticeKind,
    pub at: DateTime<Utc>,
}
