//! opencode's bus events and message parts, decoded into agentdeck's model. Unknown event
//! types and part types are kept (as `Other`), never an error.

use crate::harness::{HarnessEvent, HarnessMessage, MessageInfo, Update};
use crate::model::{AskKind, AskStatus, FileDiff, MessageRole, NewAsk, Part, ToolStatus, Usage};
use serde_json::{Value, json};

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn error_text(error: &Value) -> Option<String> {
    if error.is_null() {
        return None;
    }
    Some(
        error["data"]["message"]
            .as_str()
            .or_else(|| error["message"].as_str())
            .or_else(|| error["name"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string()),
    )
}

pub fn message_info(info: &Value) -> Option<MessageInfo> {
    let role = match info["role"].as_str()? {
        "user" => MessageRole::User,
        "assistant" => MessageRole::Assistant,
        _ => MessageRole::System,
    };
    let error = error_text(&info["error"]);
    Some(MessageInfo {
        id: text(&info["id"])?,
        role,
        done: !info["time"]["completed"].is_null() || error.is_some(),
        aborted: info["error"]["name"] == "MessageAbortedError",
        usage: usage(info),
        diffs: diffs(info),
        error,
    })
}

/// A person's message's `summary.diffs`: what the turn answering it changed (opencode sends it
/// again at each step, and once more after the turn).
fn diffs(info: &Value) -> Option<Vec<FileDiff>> {
    let list = info["summary"]["diffs"].as_array()?;
    Some(
        list.iter()
            .filter_map(|d| {
                Some(FileDiff {
                    file: d["file"].as_str()?.to_string(),
                    patch: d["patch"].as_str().unwrap_or_default().to_string(),
                    additions: d["additions"].as_i64().unwrap_or_default(),
                    deletions: d["deletions"].as_i64().unwrap_or_default(),
                    status: text(&d["status"]),
                })
            })
            .collect(),
    )
}

/// An assistant message's tokens and cost (`info.tokens`, `info.cost`). opencode prices tokens
/// from its model config and says 0 for a model without a price: tokens used at 0 are a price
/// nobody knows, not a free turn.
fn usage(info: &Value) -> Option<Usage> {
    let tokens = info.get("tokens").filter(|t| t.is_object())?;
    let count = |v: &Value| v.as_f64().map_or(0, |n| n.max(0.0).round() as i64);
    let mut usage = Usage {
        input: count(&tokens["input"]),
        output: count(&tokens["output"]),
        reasoning: count(&tokens["reasoning"]),
        cache_read: count(&tokens["cache"]["read"]),
        cache_write: count(&tokens["cache"]["write"]),
        cost: None,
    };
    let cost = info["cost"].as_f64().filter(|c| c.is_finite() && *c >= 0.0);
    usage.cost = match cost {
        Some(c) if c > 0.0 => Some(c),
        _ if usage.tokens() == 0 => Some(0.0),
        _ => None,
    };
    Some(usage)
}

/// Whether a shell tool's output ends with opencode's note that the command was aborted
/// (`<shell_metadata>` in newer versions, `<bash_metadata>` in older ones).
fn aborted_shell(output: &str) -> bool {
    let tail = output.trim_end();
    ["shell_metadata", "bash_metadata"].iter().any(|tag| {
        tail.ends_with(&format!("</{tag}>"))
            && tail
                .rsplit_once(&format!("<{tag}>"))
                .is_some_and(|(_, note)| note.contains("User aborted the command"))
    })
}

/// A time opencode gives in milliseconds since the epoch.
fn millis(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(v.as_i64()?)
}

/// An opencode part as an agentdeck part.
pub fn part(p: &Value) -> Part {
    match p["type"].as_str().unwrap_or_default() {
        "text" => Part::Text {
            text: p["text"].as_str().unwrap_or_default().to_string(),
        },
        "reasoning" => Part::Reasoning {
            text: p["text"].as_str().unwrap_or_default().to_string(),
        },
        "tool" => {
            let state = &p["state"];
            let status = match state["status"].as_str() {
                Some("completed") => ToolStatus::Completed,
                Some("error") => ToolStatus::Error,
                Some("running") => ToolStatus::Running,
                _ => ToolStatus::Pending,
            };
            let output = text(&state["output"]).or_else(|| text(&state["metadata"]["output"]));
            let mut error = text(&state["error"]);
            // opencode's shell tool, aborted, ends "completed" with a note in its output.
            let status = match &output {
                Some(o) if status == ToolStatus::Completed && aborted_shell(o) => {
                    error = Some("aborted: the command was killed".to_string());
                    ToolStatus::Stopped
                }
                _ => status,
            };
            Part::Tool {
                call_id: p["callID"].as_str().unwrap_or_default().to_string(),
                tool: p["tool"].as_str().unwrap_or_default().to_string(),
                status,
                input: state["input"].clone(),
                output,
                error,
                started_at: millis(&state["time"]["start"]),
                ended_at: millis(&state["time"]["end"]),
            }
        }
        "file" => Part::File {
            path: text(&p["filename"]).or_else(|| text(&p["source"]["path"])),
            url: text(&p["url"]),
            mime: text(&p["mime"]),
        },
        "patch" => Part::Patch {
            files: p["files"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        },
        _ => Part::Other(p.clone()),
    }
}

/// One bus event (`{"id","type","properties"}`) decoded.
pub fn event(raw: &Value) -> HarnessEvent {
    let kind = raw["type"].as_str().unwrap_or("unknown").to_string();
    let props = &raw["properties"];
    let mut session = text(&props["sessionID"]);
    let update = match kind.as_str() {
        "message.updated" => {
            session = session.or_else(|| text(&props["info"]["sessionID"]));
            message_info(&props["info"]).map_or(Update::Other, Update::Message)
        }
        "message.part.updated" => {
            let p = &props["part"];
            session = session.or_else(|| text(&p["sessionID"]));
            match (text(&p["messageID"]), text(&p["id"])) {
                (Some(message_id), Some(part_id)) => Update::Part {
                    message_id,
                    part_id,
                    part: part(p),
                },
                _ => Update::Other,
            }
        }
        "message.part.delta" => match (text(&props["messageID"]), text(&props["partID"])) {
            (Some(message_id), Some(part_id)) => Update::Delta {
                message_id,
                part_id,
                field: text(&props["field"]).unwrap_or_else(|| "text".to_string()),
                delta: text(&props["delta"]).unwrap_or_default(),
            },
            _ => Update::Other,
        },
        "session.status" => match props["status"]["type"].as_str() {
            Some("busy") | Some("retry") => Update::Busy,
            Some("idle") => Update::Idle,
            _ => Update::Other,
        },
        "permission.asked" | "question.asked" => {
            ask(&kind, props).map_or(Update::Other, Update::Asked)
        }
        "permission.replied" => settled(props, json!({ "reply": props["reply"] })),
        "question.replied" => settled(props, json!({ "answers": props["answers"] })),
        "question.rejected" => settled(props, json!({ "reject": true })),
        "session.idle" => Update::Idle,
        "session.error" => Update::Error(
            error_text(&props["error"]).unwrap_or_else(|| "the harness reported an error".into()),
        ),
        _ => Update::Other,
    };
    HarnessEvent {
        session,
        kind,
        payload: props.clone(),
        update,
    }
}

/// A permission request (`permission.asked`, an entry of `GET /permission`) or a question
/// (`question.asked`, `GET /question`) as an ask. The detail keeps what opencode said, but the
/// ids already in the ask.
pub fn ask(kind: &str, props: &Value) -> Option<NewAsk> {
    let id = text(&props["id"])?;
    let mut detail = props.clone();
    if let Some(map) = detail.as_object_mut() {
        map.remove("id");
        map.remove("sessionID");
    }
    let (kind, title) = if kind.starts_with("question") {
        let header = props["questions"][0]["header"]
            .as_str()
            .or_else(|| props["questions"][0]["question"].as_str())
            .unwrap_or("question");
        (AskKind::Question, header.to_string())
    } else {
        let tool = props["permission"].as_str().unwrap_or("permission");
        (AskKind::Permission, tool.to_string())
    };
    Some(NewAsk {
        id,
        kind,
        title,
        detail,
    })
}

fn settled(props: &Value, answer: Value) -> Update {
    match text(&props["requestID"]) {
        Some(id) => Update::AskSettled {
            id,
            status: AskStatus::Answered,
            answer: Some(answer),
        },
        None => Update::Other,
    }
}

/// One entry of `GET /session/:id/message`.
pub fn message(info: &Value, parts: &[Value]) -> Option<HarnessMessage> {
    Some(HarnessMessage {
        info: message_info(info)?,
        parts: parts
            .iter()
            .filter_map(|p| Some((text(&p["id"])?, part(p))))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(line: &str) -> HarnessEvent {
        event(&serde_json::from_str(line).unwrap_or_default())
    }

    #[test]
    fn real_events_decode() {
        let e = decode(
            r#"{"id":"evt_1","type":"message.part.updated","properties":{"sessionID":"ses_1","part":{"type":"tool","tool":"bash","callID":"call_1","state":{"status":"completed","input":{"command":"echo ok"},"output":"ok\n","metadata":{"exit":0}},"id":"prt_1","sessionID":"ses_1","messageID":"msg_1"}}}"#,
        );
        assert_eq!(e.session.as_deref(), Some("ses_1"));
        match e.update {
            Update::Part {
                part:
                    Part::Tool {
                        status,
                        output,
                        input,
                        ..
                    },
                message_id,
                ..
            } => {
                assert_eq!(status, ToolStatus::Completed);
                assert_eq!(output.as_deref(), Some("ok\n"));
                assert_eq!(input["command"], "echo ok");
                assert_eq!(message_id, "msg_1");
            }
            other => panic!("{other:?}"),
        }
        let e = decode(
            r#"{"id":"evt_2","type":"message.part.delta","properties":{"sessionID":"ses_1","messageID":"msg_2","partID":"prt_2","field":"text","delta":"Ran "}}"#,
        );
        assert_eq!(
            e.update,
            Update::Delta {
                message_id: "msg_2".into(),
                part_id: "prt_2".into(),
                field: "text".into(),
                delta: "Ran ".into()
            }
        );
        let e = decode(
            r#"{"type":"message.updated","properties":{"sessionID":"ses_1","info":{"id":"msg_3","role":"assistant","time":{"created":1,"completed":2}}}}"#,
        );
        assert!(matches!(
            e.update,
            Update::Message(MessageInfo {
                done: true,
                role: MessageRole::Assistant,
                ..
            })
        ));
        let e = decode(
            r#"{"type":"message.updated","properties":{"info":{"id":"msg_4","sessionID":"ses_9","role":"assistant","time":{"created":1},"error":{"name":"APIError","data":{"message":"rate limited"}}}}}"#,
        );
        assert_eq!(e.session.as_deref(), Some("ses_9"));
        assert!(
            matches!(e.update, Update::Message(MessageInfo { done: true, aborted: false, error: Some(ref m), .. }) if m == "rate limited")
        );
        // What opencode says of a turn stopped by an abort.
        let e = decode(
            r#"{"type":"message.updated","properties":{"info":{"id":"msg_5","sessionID":"ses_9","role":"assistant","time":{"created":1},"error":{"name":"MessageAbortedError","data":{"message":"Aborted"}}}}}"#,
        );
        assert!(
            matches!(e.update, Update::Message(MessageInfo { done: true, aborted: true, error: Some(ref m), .. }) if m == "Aborted")
        );
        // What 1.18.33 says of a finished assistant message: tokens and a price.
        let e = decode(
            r#"{"type":"message.updated","properties":{"info":{"id":"msg_6","sessionID":"ses_9","role":"assistant","cost":0.0213,"tokens":{"input":1200,"output":340,"reasoning":20,"cache":{"read":512,"write":0}},"time":{"created":1,"completed":2}}}}"#,
        );
        match e.update {
            Update::Message(MessageInfo { usage: Some(u), .. }) => {
                assert_eq!(
                    (u.input, u.output, u.reasoning, u.cache_read, u.cache_write),
                    (1200, 340, 20, 512, 0)
                );
                assert_eq!(u.cost, Some(0.0213));
            }
            other => panic!("{other:?}"),
        }
        // Tokens at 0: nobody knew the price. No tokens at 0: it cost nothing.
        let unpriced = usage(
            &serde_json::json!({"cost": 0, "tokens": {"input": 10, "output": 3, "reasoning": 0, "cache": {"read": 0, "write": 0}}}),
        );
        assert_eq!(unpriced.and_then(|u| u.cost), None);
        assert_eq!(unpriced.map(|u| u.tokens()), Some(13));
        let nothing = usage(&serde_json::json!({"cost": 0, "tokens": {"input": 0, "output": 0}}));
        assert_eq!(nothing.and_then(|u| u.cost), Some(0.0));
        assert_eq!(usage(&serde_json::json!({"role": "user"})), None);
        // A person's message says what its turn changed (as 1.18.33 sends it).
        let e = decode(
            r#"{"type":"message.updated","properties":{"info":{"id":"msg_7","sessionID":"ses_9","role":"user","time":{"created":1},"summary":{"diffs":[{"file":"a.txt","patch":"--- a.txt\n+++ a.txt\n@@ -0,0 +1,1 @@\n+hi\n","additions":1,"deletions":0,"status":"added"}]}}}}"#,
        );
        match e.update {
            Update::Message(MessageInfo { diffs: Some(d), .. }) => {
                assert_eq!(d.len(), 1);
                assert_eq!(
                    (d[0].file.as_str(), d[0].additions, d[0].status.as_deref()),
                    ("a.txt", 1, Some("added"))
                );
                assert!(d[0].patch.contains("+hi"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(r#"{"type":"session.status","properties":{"sessionID":"s","status":{"type":"idle"}}}"#).update, Update::Idle);
        assert_eq!(
            decode(r#"{"type":"server.heartbeat","properties":{}}"#).update,
            Update::Other
        );
        assert_eq!(decode("[1,2]").update, Update::Other);
        // A shell command killed by an abort: opencode says "completed", with a note.
        let aborted = part(
            &serde_json::json!({"type": "tool", "tool": "bash", "callID": "c",
            "state": {"status": "completed", "input": {"command": "sleep 300"},
                      "output": "(no output)\n\n<shell_metadata>\nUser aborted the command\n</shell_metadata>"}}),
        );
        assert!(
            matches!(&aborted, Part::Tool { status: ToolStatus::Stopped, error: Some(e), .. } if e.contains("aborted")),
            "{aborted:?}"
        );
        // Output that only quotes the words is still a finished command.
        let quoted = part(
            &serde_json::json!({"type": "tool", "tool": "bash", "callID": "c",
            "state": {"status": "completed", "input": {"command": "cat log"},
                      "output": "User aborted the command\n"}}),
        );
        assert!(
            matches!(
                &quoted,
                Part::Tool {
                    status: ToolStatus::Completed,
                    ..
                }
            ),
            "{quoted:?}"
        );
        assert!(matches!(
            part(&serde_json::json!({"type":"step-start","id":"p"})),
            Part::Other(_)
        ));
    }
}
