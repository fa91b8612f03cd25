//! Text that Postgres refuses, kept anyway. Its `text` and `jsonb` types cannot hold the NUL
//! character (an agent that `cat`s a binary file sends it), and an insert holding one fails
//! ("unsupported Unicode escape sequence"), which once stalled a session's ingest for good.
//!
//! So on Postgres, and only there, NUL is written as U+E000 (a private-use character) followed
//! by `0`, and U+E000 itself as two of them; every read undoes both, so what is read back is what
//! the agent sent, byte for byte. Text without either character (nearly all of it) is written and
//! read as it is, without a copy. SQLite stores NUL as it is and needs none of this.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type, TypeInfo, ValueRef};
use std::borrow::Cow;

/// The escape character, and its UTF-8 bytes.
const ESC: char = '\u{E000}';
const ESC_UTF8: &[u8] = "\u{E000}".as_bytes();
/// How serde_json writes NUL inside a JSON string.
const NUL_ESCAPE: &[u8] = b"\\u0000";

fn has(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Plain text as Postgres may hold it.
pub(super) fn encode_text(text: &str) -> Cow<'_, str> {
    if !text.contains(['\0', ESC]) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => {
                out.push(ESC);
                out.push('0');
            }
            ESC => {
                out.push(ESC);
                out.push(ESC);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Plain text as it was before [`encode_text`].
pub(super) fn decode_text(text: String) -> String {
    if !text.contains(ESC) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some(ESC) => out.push(ESC),
            // Not written by us (a row older than this encoding): kept as found.
            Some(other) => {
                out.push(ESC);
                out.push(other);
            }
            None => out.push(ESC),
        }
    }
    out
}

/// Optional plain text, read back.
pub(super) fn decode_opt(text: Option<String>) -> Option<String> {
    text.map(decode_text)
}

/// Serialised JSON as Postgres may hold it: NUL only ever appears in it as the escape `\u0000`
/// inside a string (JSON's structure is ASCII), so that escape becomes U+E000 `0`.
pub(super) fn encode_json(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    if !has(bytes, NUL_ESCAPE) && !has(bytes, ESC_UTF8) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    let mut rest = json;
    while let Some(i) = rest.find(['\\', ESC]) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with(ESC) {
            out.push(ESC);
            out.push(ESC);
            rest = &rest[ESC.len_utf8()..];
        } else if rest.as_bytes().starts_with(NUL_ESCAPE) {
            out.push(ESC);
            out.push('0');
            rest = &rest[NUL_ESCAPE.len()..];
        } else {
            // Any other escape is kept whole, so that `\\u0000` (a backslash, then text) is not
            // taken for a NUL.
            let n = rest.chars().take(2).map(char::len_utf8).sum::<usize>();
            out.push_str(&rest[..n]);
            rest = &rest[n..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Serialised JSON as it was before [`encode_json`].
pub(super) fn decode_json(json: &[u8]) -> Cow<'_, [u8]> {
    if !has(json, ESC_UTF8) {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len() + 8);
    let mut rest = json;
    while let Some(i) = memchr::memmem::find(rest, ESC_UTF8) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + ESC_UTF8.len()..];
        if rest.starts_with(b"0") {
            out.extend_from_slice(NUL_ESCAPE);
            rest = &rest[1..];
        } else if rest.starts_with(ESC_UTF8) {
            out.extend_from_slice(ESC_UTF8);
            rest = &rest[ESC_UTF8.len()..];
        } else {
            out.extend_from_slice(ESC_UTF8);
        }
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// A value kept in a `jsonb` column through [`encode_json`] and [`decode_json`] (sqlx's `Json`
/// otherwise: the same binary format).
pub(super) struct PgJson<T>(pub T);

impl<T> Type<Postgres> for PgJson<T> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("jsonb")
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <sqlx::types::Json<T> as Type<Postgres>>::compatible(ty)
    }
}

impl<T: serde::Serialize> Encode<'_, Postgres> for PgJson<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let json = serde_json::to_string(&self.0)?;
        // jsonb's binary format: a version byte, then the text.
        buf.push(1);
        buf.extend_from_slice(encode_json(&json).as_bytes());
        Ok(IsNull::No)
    }
}

impl<'r, T: serde::de::DeserializeOwned> Decode<'r, Postgres> for PgJson<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let binary_jsonb =
            value.format() == PgValueFormat::Binary && value.type_info().name() == "JSONB";
        let mut bytes = value.as_bytes()?;
        if binary_jsonb {
            match bytes.split_first() {
                Some((1, text)) => bytes = text,
                Some((v, _)) => return Err(format!("unsupported jsonb format version {v}").into()),
                None => return Err("an empty jsonb value".into()),
            }
        }
        Ok(PgJson(serde_json::from_slice(&decode_json(bytes))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_nul_and_the_escape_itself_comes_back_as_it_was() {
        for text in [
            "plain",
            "",
            "a\0b",
            "\0",
            "\u{E000}",
            "\u{E000}0",
            "x\u{E000}\0\u{E000}\u{E000}0\0",
        ] {
            let stored = encode_text(text);
            assert!(!stored.contains('\0'), "{stored:?}");
            assert_eq!(decode_text(stored.into_owned()), text);
        }
        assert!(matches!(encode_text("plain"), Cow::Borrowed(_)));
    }

    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
            }
            _ => false,
        }
    }

    #[test]
    fn json_with_nul_comes_back_as_it_was() {
        let values = [
            serde_json::json!({"text": "ELF\0\0\u{1}binary", "k\0": ["\u{E000}", "\\u0000"]}),
            serde_json::json!("\\\0"),
            serde_json::json!({"plain": "text ✓"}),
        ];
        for value in values {
            let json = serde_json::to_string(&value).unwrap();
            let stored = encode_json(&json);
            let raw: serde_json::Value = serde_json::from_str(&stored).unwrap();
            assert!(!has_nul(&raw), "what Postgres gets holds no NUL: {stored}");
            let back: serde_json::Value =
                serde_json::from_slice(&decode_json(stored.as_bytes())).unwrap();
            assert_eq!(back, value);
        }
        // A backslash followed by the text u0000 is not a NUL.
        let literal = serde_json::to_string(&serde_json::json!("\\u0000")).unwrap();
        assert_eq!(encode_json(&literal), literal.as_str());
    }
}
