//! What an agent asks of a person and waits for (the human in the loop): a permission for a
//! tool call its policy says to `ask` about, or a question. Kept with the session as part of
//! its transcript and audit trail: what was asked, who answered what, and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

text_enum!(
    AskKind, "ask kind" {
        /// May the agent use this tool on this input?
        Permission => "permission",
        /// The agent asks the user to choose (or write) an answer.
        Question => "question",
    }
);

text_enum!(
    AskStatus, "ask status" {
        /// Waiting for a person.
        Pending => "pending",
        Answered => "answered",
        /// The agent no longer waits for it (its harness restarted, or the turn was aborted).
        Gone => "gone",
    }
);

/// An ask as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    pub session_id: Uuid,
    /// The harness's id for it (`per_…`, `que_…`).
    pub id: String,
    pub kind: AskKind,
    pub status: AskStatus,
    /// What it is about, in a few words: the tool (`bash`, `edit` …) or the question's header.
    pub title: String,
    /// The harness's own description: for a permission, the patterns, the tool's input and the
    /// tool call; for a question, the questions and their options. Untrusted text.
    pub detail: serde_json::Value,
    pub asked_at: DateTime<Utc>,
    /// The answer given: `{"reply": "once"|"always"|"reject"}` or `{"answers": [[label…]…]}`
    /// or `{"reject": true}`.
    pub answer: Option<serde_json::Value>,
    /// The reason given with the answer (a rejection's reaches the agent).
    pub message: Option<String>,
    /// Who answered: `cockpit:alice`, `api:platform`, `cli:bob`, or `agent` when it was
    /// settled in the harness itself.
    pub answered_by: Option<String>,
    pub answered_at: Option<DateTime<Utc>>,
}

impl Ask {
    /// What it asks, in one plain line: `bash: ls -la /etc` for a permission, the question's
    /// words for a question. Untrusted text, as it came from the agent (sanitise it to show it).
    pub fn summary(&self) -> String {
        match self.kind {
            AskKind::Permission => {
                let patterns: Vec<&str> = self.detail["patterns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .collect();
                if patterns.is_empty() {
                    self.title.clone()
                } else {
                    format!("{}: {}", self.title, patterns.join(", "))
                }
            }
            AskKind::Question => {
                let questions: Vec<&str> = self.detail["questions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|q| q["question"].as_str())
                    .collect();
                if questions.is_empty() {
                    self.title.clone()
                } else {
                    questions.join(" / ")
                }
            }
        }
    }
}

/// An ask as the harness raised it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAsk {
    pub id: String,
    pub kind: AskKind,
    pub title: String,
    pub detail: serde_json::Value,
}

/// A person's answer to an ask.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// To a permission.
    Permission {
        reply: PermissionReply,
        message: Option<String>,
    },
    /// To a question: for each question, the labels chosen (or written).
    Question { answers: Vec<Vec<String>> },
    /// A question the person will not answer.
    RejectQuestion,
}

text_enum!(
    PermissionReply, "permission reply" {
        /// This tool call only.
        Once => "once",
        /// This call and the like of it, for the rest of the agent's life.
        Always => "always",
        /// Not this call (the message, if any, reaches the agent).
        Reject => "reject",
    }
);

impl Answer {
    pub fn kind(&self) -> AskKind {
        match self {
            Answer::Permission { .. } => AskKind::Permission,
            Answer::Question { .. } | Answer::RejectQuestion => AskKind::Question,
        }
    }

    /// As stored in [`Ask::answer`].
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Answer::Permission { reply, .. } => serde_json::json!({ "reply": reply }),
            Answer::Question { answers } => serde_json::json!({ "answers": answers }),
            Answer::RejectQuestion => serde_json::json!({ "reject": true }),
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Answer::Permission { message, .. } => message.as_deref(),
            _ => None,
        }
    }
}
