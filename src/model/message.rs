//! Messages of a transcript and the parts they are made of.

use super::{MessageRole, MessageStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub session_id: Uuid,
    /// Position in the session's transcript, from 1, assigned by the store without gaps or races.
    pub seq: i64,
    pub role: MessageRole,
    pub status: MessageStatus,
    pub parts: Vec<Part>,
    pub error: Option<String>,
    /// The harness's own id for this message, once it is known.
    pub harness_message_id: Option<String>,
    /// What an assistant message used and cost, once it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the agent changed in files answering this (a person's) message, as the harness
    /// saw it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<FileDiff>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Message {
    /// All text parts joined, for previews and search.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if let Part::Text { text } = part {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
        }
        out
    }
}

/// One file an agent's turn changed: a unified diff and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDiff {
    pub file: String,
    pub patch: String,
    pub additions: i64,
    pub deletions: i64,
    /// `added`, `modified`, `deleted` …, as the harness says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// What one turn changed: the person's message it answered, and the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnDiff {
    /// The person's message's place in the transcript.
    pub seq: i64,
    /// What the person asked (its first line).
    pub asked: String,
    pub files: Vec<FileDiff>,
}

/// What one assistant message used and cost, as the harness reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
    pub reasoning: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    /// USD. `None` when nobody knows the model's price: tokens were used and the harness,
    /// having no price for them, said they cost nothing.
    pub cost: Option<f64>,
}

impl Usage {
    /// Every token of it, whatever its kind.
    pub fn tokens(&self) -> i64 {
        self.input + self.output + self.reasoning + self.cache_read + self.cache_write
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    Pending,
    Running,
    Completed,
    Error,
    /// It did not finish: its turn was aborted, failed, or lost its sandbox (`error` says
    /// which).
    Stopped,
}

/// One piece of a message. Parts of a kind this version does not know are kept as they came
/// (`Other`), so nothing the harness said is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    Reasoning {
        text: String,
    },
    Tool {
        call_id: String,
        tool: String,
        status: ToolStatus,
        #[serde(default)]
        input: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When it started running and when it ended, as the harness says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended_at: Option<DateTime<Utc>>,
    },
    File {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime: Option<String>,
    },
    Patch {
        files: Vec<String>,
    },
    #[serde(untagged)]
    Other(serde_json::Value),
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text { text: text.into() }
    }

    /// A tool call still pending or running when its turn ended will not finish: it is
    /// `Stopped`, saying `why`. Returns whether it changed.
    pub fn stop_unfinished(&mut self, why: &str) -> bool {
        match self {
            Part::Tool { status, error, .. }
                if matches!(status, ToolStatus::Pending | ToolStatus::Running) =>
            {
                *status = ToolStatus::Stopped;
                *error = Some(why.to_string());
                true
            }
            _ => false,
        }
    }
}

/// Why the unfinished tool calls of a message that ended `status` stopped (`None` when it
/// ended well or has not ended).
pub fn why_tools_stopped(status: MessageStatus, error: Option<&str>) -> Option<String> {
    match status {
        MessageStatus::Aborted => Some("aborted with its turn".to_string()),
        MessageStatus::Failed => Some(match error {
            Some(e) => format!("its turn failed: {e}"),
            None => "its turn failed".to_string(),
        }),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: MessageRole,
    pub status: MessageStatus,
    pub parts: Vec<Part>,
    pub harness_message_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MessagePatch {
    pub status: Option<MessageStatus>,
    pub parts: Option<Vec<Part>>,
    pub error: Option<Option<String>>,
    pub harness_message_id: Option<Option<String>>,
    pub usage: Option<Usage>,
    pub diffs: Option<Vec<FileDiff>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_unknown_parts_are_kept() -> Result<(), serde_json::Error> {
        let json = r#"[
            {"type":"text","text":"hi"},
            {"type":"tool","call_id":"c1","tool":"bash","status":"completed","input":{"cmd":"ls"},"output":"a\nb"},
            {"type":"step-start","snapshot":"abc"}
        ]"#;
        let parts: Vec<Part> = serde_json::from_str(json)?;
        assert_eq!(parts[0], Part::text("hi"));
        assert!(
            matches!(&parts[1], Part::Tool { status: ToolStatus::Completed, output: Some(o), .. } if o == "a\nb")
        );
        match &parts[2] {
            Part::Other(v) => assert_eq!(v["snapshot"], "abc"),
            other => panic!("unknown part was not kept: {other:?}"),
        }
        let back: Vec<Part> = serde_json::from_str(&serde_json::to_string(&parts)?)?;
        assert_eq!(back, parts);
        Ok(())
    }
}
