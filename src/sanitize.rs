//! Untrusted text (titles, transcripts, logs, pod messages) made safe for a terminal: no escape
//! sequence, control character or OSC from an agent or a pod can reach the operator's terminal.

/// Removes escape sequences and control characters; keeps newlines and tabs.
pub fn text(input: &str) -> String {
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
}
