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
                let wants = permission_wants(&self.title);
                if patterns.is_empty() {
                    wants
                } else {
                    format!("{wants}: {}", patterns.join(", "))
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

impl Ask {
    /// The answer given, in words (`allowed once`, `rejected: not on prod`, `answered eu-west`);
    /// `None` while it waits, or when the stored answer is not one agentdeck gives.
    pub fn answer_said(&self) -> Option<String> {
        let stored = self.answer.as_ref()?;
        let answer = if let Some(reply) = stored["reply"].as_str() {
            Answer::Permission {
                reply: reply.parse().ok()?,
                message: self.message.clone(),
            }
        } else if let Some(answers) = stored["answers"].as_array() {
            Answer::Question {
                answers: answers
                    .iter()
                    .map(|a| {
                        a.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|l| l.as_str().map(str::to_string))
                            .collect()
                    })
                    .collect(),
            }
        } else if stored["reject"] == true {
            Answer::RejectQuestion
        } else {
            return None;
        };
        Some(answer.said())
    }
}

/// What a permission of kind `title` (opencode's permission names) asks for, in words:
/// `bash wants to run`, `the agent wants to work outside its folder, in` … (a kind that is not a
/// tool read as one: `external_directory wants to run: /etc/*`).
pub fn permission_wants(title: &str) -> String {
    match title {
        "bash" => "bash wants to run".into(),
        "edit" | "write" | "patch" | "multiedit" => format!("{title} wants to change"),
        "read" => "read wants to open".into(),
        "list" | "glob" | "grep" => format!("{title} wants to look in"),
        "webfetch" | "websearch" => format!("{title} wants to fetch"),
        "external_directory" => "the agent wants to work outside its folder, in".into(),
        "task" => "the agent wants to start a subagent".into(),
        "doom_loop" => "the agent repeats the same call and asks to go on".into(),
        other => format!("{other} asks for permission"),
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
    /// The answer in words, for people (`allowed once`, `rejected: not on prod`, `answered
    /// eu-west`): never the stored JSON.
    pub fn said(&self) -> String {
        match self {
            Answer::Permission { reply, message } => {
                let word = match reply {
                    PermissionReply::Once => "allowed once",
                    PermissionReply::Always => "allowed always",
                    PermissionReply::Reject => "rejected",
                };
                match message.as_deref().filter(|m| !m.trim().is_empty()) {
                    Some(m) => format!("{word}: {m}"),
                    None => word.to_string(),
                }
            }
            Answer::Question { answers } => {
                let labels: Vec<String> = answers.iter().map(|a| a.join(" + ")).collect();
                format!("answered {}", labels.join(", "))
            }
            Answer::RejectQuestion => "declined to answer".into(),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(kind: AskKind, title: &str, detail: serde_json::Value) -> Ask {
        Ask {
            session_id: Uuid::nil(),
            id: "a1".into(),
            kind,
            status: AskStatus::Pending,
            title: title.into(),
            detail,
            asked_at: chrono::Utc::now(),
            answer: None,
            message: None,
            answered_by: None,
            answered_at: None,
        }
    }

    /// What is asked and answered reads as words: `external_directory wants to run: /etc/*`
    /// and `answered bash: {"reply":"once"}` did not.
    #[test]
    fn asks_and_answers_read_as_words() {
        let outside = ask(
            AskKind::Permission,
            "external_directory",
            serde_json::json!({"patterns": ["/etc/*"]}),
        );
        assert_eq!(
            outside.summary(),
            "the agent wants to work outside its folder, in: /etc/*"
        );
        let run = ask(
            AskKind::Permission,
            "bash",
            serde_json::json!({"patterns": ["ls -la"]}),
        );
        assert_eq!(run.summary(), "bash wants to run: ls -la");
        assert_eq!(
            ask(AskKind::Permission, "frobnicate", serde_json::json!({})).summary(),
            "frobnicate asks for permission"
        );
        let question = ask(
            AskKind::Question,
            "Region",
            serde_json::json!({"questions": [{"question": "Which region?"}]}),
        );
        assert_eq!(question.summary(), "Which region?");

        let mut answered = run.clone();
        answered.answer = Some(serde_json::json!({"reply": "reject"}));
        answered.message = Some("not on prod".into());
        assert_eq!(
            answered.answer_said().as_deref(),
            Some("rejected: not on prod")
        );
        answered.answer = Some(serde_json::json!({"reply": "once"}));
        answered.message = None;
        assert_eq!(answered.answer_said().as_deref(), Some("allowed once"));
        let mut chosen = question.clone();
        chosen.answer = Some(serde_json::json!({"answers": [["eu-west"]]}));
        assert_eq!(chosen.answer_said().as_deref(), Some("answered eu-west"));
        chosen.answer = Some(serde_json::json!({"reject": true}));
        assert_eq!(chosen.answer_said().as_deref(), Some("declined to answer"));
        assert_eq!(run.answer_said(), None, "not answered yet");
    }
}
