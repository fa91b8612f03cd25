//! Untrusted text (titles, transcripts, logs, pod messages) made safe for a terminal: no escape
//! sequence, control character or OSC from an agent or a pod can reach the operator's terminal.

use std::borrow::Cow;

/// Removes escape sequences and control characters; keeps newlines and tabs. Text with none of
/// them (nearly all of it) comes back borrowed, found so by one pass over its bytes.
pub fn text(input: &str) -> Cow<'_, str> {
    if is_clean(input) {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(strip(input))
    }
}

/// Whether `input` has no char [`strip`] would remove: no control char but newline and tab
/// (C0, DEL, and C1, which is U+0080..U+009F: bytes `C2 80..=9F`; escape sequences all start
/// with one), and no bidi override (U+202A..U+202E: `E2 80 AA..=AE`; U+2066..U+2069:
/// `E2 81 A6..=A9`). In UTF-8, `C2` and `E2` only ever lead a char, so bytes are enough.
fn is_clean(input: &str) -> bool {
    let bytes = input.as_bytes();
    !bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\n' | b'\t' => false,
        0x00..=0x1f | 0x7f => true,
        0xc2 => matches!(bytes.get(i + 1), Some(0x80..=0x9f)),
        0xe2 => matches!(
            (bytes.get(i + 1), bytes.get(i + 2)),
            (Some(0x80), Some(0xaa..=0xae)) | (Some(0x81), Some(0xa6..=0xa9))
        ),
        _ => false,
    })
}

fn strip(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            // C1 CSI / OSC / DCS introducers (8-bit forms)
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            // bidi overrides can disguise text
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Like [`text`], for one table cell or status line: newlines and tabs become spaces.
pub fn line(input: &str) -> String {
    text(input).replace(['\n', '\t'], " ")
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            skip_string(chars);
        }
        Some(_) => {
            // two-character sequences (ESC c, ESC 7 …) and charset selections (ESC ( B)
            if let Some(c) = chars.next()
                && matches!(c, '(' | ')' | '*' | '+' | '#' | '%')
            {
                chars.next();
            }
        }
        None => {}
    }
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // parameters and intermediates, then one final byte in @..~
    for c in chars.by_ref() {
        if ('@'..='~').contains(&c) {
            return;
        }
        if !(' '..='?').contains(&c) {
            return;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // until BEL, ST (ESC \) or the 8-bit ST
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(text("a\u{1b}[31mred\u{1b}[0m b"), "ared b");
        assert_eq!(text("x\u{1b}]0;pwned title\u{7}y"), "xy");
        assert_eq!(
            text("x\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\"),
            "xlink"
        );
        assert_eq!(text("bell\u{7}\rcr\u{8}"), "bellcr");
        assert_eq!(text("keep\nnew\tlines"), "keep\nnew\tlines");
        assert_eq!(line("one\ntwo"), "one two");
        assert_eq!(text("\u{9b}2Jcleared"), "cleared");
        assert_eq!(text("evil\u{202e}txt"), "eviltxt");
        assert_eq!(text("日本語 ok"), "日本語 ok");
        assert_eq!(text("trailing\u{1b}"), "trailing");
    }

    #[test]
    fn clean_text_comes_back_borrowed() {
        for clean in [
            "",
            "plain ASCII, punctuation ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./",
            "keep\nnew\tlines\n",
            "日本語のテキスト 한글 Ｆｕｌｌ",
            "emoji 😀 👍🏽 ❤\u{fe0f} 👨\u{200d}👩\u{200d}👧, combining e\u{301}",
            "near the removed ranges: \u{a0} \u{ff} \u{2029} \u{202f} \u{2065} \u{206a} \u{2000}",
        ] {
            assert!(matches!(text(clean), Cow::Borrowed(_)), "{clean:?}");
            assert_eq!(text(clean), clean);
        }
    }

    #[test]
    fn every_removed_char_is_still_removed() {
        let removed = (0u32..0x20)
            .filter(|&c| c != 0x0a && c != 0x09)
            .chain(0x7f..=0x9f)
            .chain(0x202a..=0x202e)
            .chain(0x2066..=0x2069)
            .filter_map(char::from_u32);
        for c in removed {
            let input = format!("a{c}b");
            let out = text(&input);
            assert!(matches!(out, Cow::Owned(_)), "{c:?}");
            assert!(!out.contains(c), "{c:?} kept");
            assert!(out.starts_with('a'), "{c:?}");
        }
    }

    #[test]
    fn the_fast_path_borrows_exactly_when_nothing_would_change() {
        // every char of the basic plane, and some beyond
        let chars = (0u32..=0x3_0000)
            .filter(|&c| c <= 0x1_0000 || c % 97 == 0)
            .filter_map(char::from_u32);
        for c in chars {
            for input in [format!("{c}"), format!("x{c}y"), format!("日{c}")] {
                assert_eq!(
                    is_clean(&input),
                    strip(&input) == input,
                    "{c:?} in {input:?}"
                );
            }
        }
    }
}
