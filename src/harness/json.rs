//! Reading the harness's JSON whatever its strings hold. opencode is JavaScript: a string cut at
//! a UTF-16 index (a tool's output truncated in the middle of an emoji) is written with an
//! unpaired surrogate escape such as `"\ud83d"`, which no Rust string can hold, and serde_json
//! refuses the whole document. Rather than lose that event (a turn's end, say), each unpaired
//! surrogate is read as U+FFFD, and the event says so in a note (see [`REPAIRED`]).

use serde_json::Value;

/// The key of the note added to an event read with replacements; kept with it in the session's
/// event log.
pub const REPAIRED: &str = "agentdeck_note";
const REPAIRED_TEXT: &str =
    "the harness sent unpaired UTF-16 surrogates; each was replaced by U+FFFD";

/// Parses JSON; unpaired surrogate escapes become U+FFFD. The bool says whether any did.
pub fn parse(text: &str) -> Result<(Value, bool), serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(value) => Ok((value, false)),
        Err(err) => match repair_surrogates(text) {
            Some(repaired) => Ok((serde_json::from_str(&repaired)?, true)),
            None => Err(err),
        },
    }
}

/// Parses an event; when anything was replaced, the event carries a note saying so.
pub fn parse_event(text: &str) -> Result<Value, serde_json::Error> {
    let (mut value, repaired) = parse(text)?;
    if repaired && let Some(object) = value.as_object_mut() {
        object.insert(REPAIRED.to_string(), Value::from(REPAIRED_TEXT));
    }
    if repaired {
        tracing::warn!("{REPAIRED_TEXT}");
    }
    Ok(value)
}

fn hex4(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..4)?).ok()?;
    u16::from_str_radix(text, 16).ok()
}

fn is_high(unit: u16) -> bool {
    (0xD800..0xDC00).contains(&unit)
}

fn is_low(unit: u16) -> bool {
    (0xDC00..0xE000).contains(&unit)
}

/// The text with every unpaired surrogate escape replaced by `\ufffd`; `None` when there was none.
fn repair_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        // An escape: `\uXXXX`, or a backslash and one character (kept whole, so that `\\ud800`
        // stays a backslash and text).
        let unit = (bytes.get(i + 1) == Some(&b'u'))
            .then(|| hex4(&bytes[i + 2..]))
            .flatten();
        let Some(unit) = unit else {
            out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
            i += 2;
            continue;
        };
        let next = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
            .then(|| hex4(&bytes[i + 8..]))
            .flatten();
        match (is_high(unit), is_low(unit), next) {
            (true, _, Some(low)) if is_low(low) => {
                out.extend_from_slice(&bytes[i..i + 12]);
                i += 12;
            }
            (true, _, _) | (_, true, _) => {
                out.extend_from_slice(b"\\ufffd");
                changed = true;
                i += 6;
            }
            _ => {
                out.extend_from_slice(&bytes[i..i + 6]);
                i += 6;
            }
        }
    }
    // Only ASCII was replaced by ASCII: still UTF-8.
    changed.then(|| String::from_utf8(out).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaired_surrogates_become_replacement_characters_and_pairs_stay() {
        let (value, repaired) =
            parse(r#"{"a":"cut \ud83d","b":"\ude00x","c":"\ud83d\ude00"}"#).unwrap();
        assert!(repaired);
        assert_eq!(value["a"], "cut \u{FFFD}");
        assert_eq!(value["b"], "\u{FFFD}x");
        assert_eq!(value["c"], "😀");
    }

    #[test]
    fn good_json_is_read_as_it_is_and_bad_json_is_still_refused() {
        assert_eq!(
            parse(r#"{"t":"\\ud800 is text"}"#).unwrap(),
            (serde_json::json!({"t": "\\ud800 is text"}), false)
        );
        assert!(parse(r#"{"t": nope}"#).is_err());
        assert!(parse(r#"{"t":"\ud800"#).is_err());
    }

    #[test]
    fn a_repaired_event_carries_a_note() {
        let event = parse_event(r#"{"type":"x","properties":{"delta":"\udc00"}}"#).unwrap();
        assert_eq!(event["properties"]["delta"], "\u{FFFD}");
        assert_eq!(event[REPAIRED], REPAIRED_TEXT);
        let clean = parse_event(r#"{"type":"x"}"#).unwrap();
        assert!(clean.get(REPAIRED).is_none());
    }
}
