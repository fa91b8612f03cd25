//! Text measured in terminal cells: the width of what a terminal draws (wide CJK and emoji
//! take two cells, combining marks none), wrapping into rows, and cutting to fit, never
//! splitting a character from the marks that go with it. Input is sanitised text with no tabs
//! or newlines.

use ratatui::text::{Line, Span};
use std::borrow::Cow;
use std::ops::Range;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The cells `c` takes, as [`clusters`] count it.
pub fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// A line of text (sanitised, no tabs or newlines) as the units wrapping never splits: each
/// char that takes cells with the zero-width chars after it (combining marks, joiners,
/// variation selectors), as its byte offset and width in cells. The width is measured
/// on the whole cluster, so a variation selector that makes a symbol an emoji (two cells) is
/// counted. Zero-width chars at the start of the line make a cluster of width 0.
pub fn clusters(line: &str) -> impl Iterator<Item = (usize, usize)> {
    // Each char's width is looked up once (an ASCII char takes one cell and is never
    // zero-width in sanitised text, so it needs no lookup at all).
    let mut chars = line
        .char_indices()
        .map(|(at, c)| (at, if c.is_ascii() { 1 } else { char_width(c) }))
        .peekable();
    std::iter::from_fn(move || {
        let (start, width) = chars.next()?;
        let mut end = None;
        while let Some(&(at, 0)) = chars.peek() {
            chars.next();
            end = Some(at);
        }
        let width = match end {
            // one char: its own width
            None => width,
            // with marks after it: the whole cluster's (a variation selector can widen it)
            Some(last) => {
                let end = last + line[last..].chars().next().map_or(0, char::len_utf8);
                line[start..end].width()
            }
        };
        Some((start, width))
    })
}

/// Splits a non-empty line into the pieces it wraps into, `room` cells wide (as byte ranges):
/// a piece ends before the cluster that would take it past `room`, so a wide char never
/// straddles the edge; a cluster wider than `room` still goes on a line (its own).
pub fn wrap(line: &str, room: usize, mut piece: impl FnMut(Range<usize>)) {
    let room = room.max(1);
    if line.is_ascii() {
        // one cell a byte
        for at in (0..line.len()).step_by(room) {
            piece(at..(at + room).min(line.len()));
        }
        return;
    }
    let mut start = 0;
    let mut used = 0;
    for (at, width) in clusters(line) {
        if used > 0 && used + width > room {
            piece(start..at);
            start = at;
            used = 0;
        }
        used += width;
    }
    piece(start..line.len());
}

/// The longest start of `text` at most `cells` wide, cut between clusters.
pub fn truncate(text: &str, cells: usize) -> &str {
    let mut used = 0;
    for (at, width) in clusters(text) {
        used += width;
        if used > cells {
            return &text[..at];
        }
    }
    text
}

/// The cells `text` takes.
pub fn width(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        clusters(text).map(|(_, w)| w).sum()
    }
}

/// `text` cut to at most `cells` wide, with `…` as its last cell when anything was cut, and
/// at a word boundary when one is near the end (so a reason reads "Back-off pulling…", not
/// "Back-off pul…").
pub fn ellipsize(text: &str, cells: usize) -> Cow<'_, str> {
    if width(text) <= cells {
        return Cow::Borrowed(text);
    }
    if cells == 0 {
        return Cow::Borrowed("");
    }
    let cut = truncate(text, cells - 1);
    // back to the last space if that keeps at least half of what fits (as wrapping does)
    let cut = match cut.rfind(' ') {
        Some(at) if width(&cut[..at]) * 2 >= cells - 1 => cut[..at].trim_end(),
        _ => cut,
    };
    Cow::Owned(format!("{cut}…"))
}

/// Like [`wrap`], but a row ends after the last space in it when that keeps at least half the
/// row: prose breaks between words, and a long word or path still breaks where it must.
pub fn wrap_words(line: &str, room: usize, piece: impl FnMut(Range<usize>)) {
    wrap_words_of(line, clusters(line), room, piece)
}

/// [`wrap_words`] for a line whose every char takes one cell: the same rows, no char's width
/// looked up.
pub fn wrap_words_narrow(line: &str, room: usize, piece: impl FnMut(Range<usize>)) {
    wrap_words_of(
        line,
        line.char_indices().map(|(at, _)| (at, 1)),
        room,
        piece,
    )
}

/// The walk of [`wrap_words`] over `line`'s units (byte offset, cells), as [`clusters`]
/// gives them.
fn wrap_words_of(
    line: &str,
    units: impl Iterator<Item = (usize, usize)>,
    room: usize,
    mut piece: impl FnMut(Range<usize>),
) {
    let room = room.max(1);
    let mut start = 0;
    let mut used = 0;
    // where the row would end after its last space, and the width up to there
    let mut space: Option<(usize, usize)> = None;
    for (at, width) in units {
        if used > 0 && used + width > room {
            match space {
                Some((end, kept)) if kept * 2 >= room => {
                    piece(start..end);
                    start = end;
                    used -= kept;
                    if used > 0 && used + width > room {
                        piece(start..at);
                        start = at;
                        used = 0;
                    }
                }
                _ => {
                    piece(start..at);
                    start = at;
                    used = 0;
                }
            }
            space = None;
        }
        used += width;
        if line.as_bytes()[at] == b' ' {
            space = Some((at + 1, used));
        }
    }
    piece(start..line.len());
}

/// A styled line (sanitised, no tabs) as the rows it takes `room` cells wide, broken between
/// words where it can (see [`wrap_words`]); each row keeps the styles of the text it holds.
/// Rows after the first hang under the first one's text: under its last column (text after two
/// spaces, as in `label    value`), else as far as its leading spaces and a `- ` bullet go;
/// never by more than half the room.
pub fn wrap_line(line: &Line<'_>, room: usize) -> Vec<Line<'static>> {
    let room = room.max(1);
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    if width(&text) <= room {
        return vec![owned(line)];
    }
    let mut first = 0..0;
    wrap_words(&text, room, |r| {
        if first.end == 0 {
            first = r;
        }
    });
    let lead = text.len() - text.trim_start_matches(' ').len();
    let column = text[lead..first.end]
        .rfind("  ")
        .map(|at| lead + at + 2)
        .filter(|&at| at < first.end && text[at..].starts_with(|c| c != ' '));
    let hang = match column {
        Some(at) => width(&text[..at]),
        None => lead + if text[lead..].starts_with("- ") { 2 } else { 0 },
    };
    let hang = if hang * 2 > room { 0 } else { hang };
    let row = |range: Range<usize>, indent: usize| {
        let mut spans = Vec::new();
        if indent > 0 {
            spans.push(Span::raw(" ".repeat(indent)));
        }
        let mut at = 0;
        for span in &line.spans {
            let (from, to) = (at, at + span.content.len());
            at = to;
            let (a, b) = (from.max(range.start), to.min(range.end));
            if a < b {
                spans.push(Span::styled(text[a..b].to_string(), span.style));
            }
        }
        Line::from(spans).style(line.style)
    };
    let mut rows = vec![row(first.clone(), 0)];
    let rest = &text[first.end..];
    wrap_words(rest, room - hang, |r| {
        rows.push(row(first.end + r.start..first.end + r.end, hang));
    });
    rows
}

fn owned(line: &Line<'_>) -> Line<'static> {
    Line::from(
        line.spans
            .iter()
            .map(|s| Span::styled(s.content.to_string(), s.style))
            .collect::<Vec<_>>(),
    )
    .style(line.style)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::{Modifier, Style};

    fn rows(text: &str, room: usize) -> Vec<&str> {
        let mut out = Vec::new();
        wrap_words(text, room, |r| out.push(&text[r]));
        out
    }

    #[test]
    fn words_break_between_words_and_long_ones_where_they_must() {
        assert_eq!(
            rows("the image cannot be pulled", 12),
            ["the image ", "cannot be ", "pulled"]
        );
        assert_eq!(
            rows("/a/very/long/path/name", 8),
            ["/a/very/", "long/pat", "h/name"]
        );
        // a space early in the row would waste it: break in the word instead
        assert_eq!(rows("a bcdefghij", 8), ["a bcdefg", "hij"]);
        // wide chars never straddle the edge
        assert_eq!(rows("日本語の文", 5), ["日本", "語の", "文"]);
        for (text, room) in [("the image cannot be pulled", 7), ("日本 語の 文", 3)] {
            assert!(rows(text, room).iter().all(|r| width(r) <= room), "{text}");
            assert_eq!(rows(text, room).concat(), text);
        }
    }

    #[test]
    fn styled_lines_keep_their_styles_across_rows() {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let line = Line::from(vec![
            Span::styled("status ", bold),
            Span::raw("failed to pull"),
        ]);
        let wrapped = wrap_line(&line, 10);
        let text: Vec<String> = wrapped.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["status ", "failed to ", "pull"]);
        assert_eq!(wrapped[0].spans[0].style, bold);
        assert_eq!(wrapped[1].spans[0].style, Style::default());
        assert_eq!(wrap_line(&line, 80).len(), 1);
        let rows = |text: &'static str, room| -> Vec<String> {
            wrap_line(&Line::from(text), room)
                .iter()
                .map(|l| l.to_string())
                .collect()
        };
        // a bullet's rows hang under its text
        assert_eq!(
            rows("  - restart the sandbox when it is up", 20),
            ["  - restart the ", "    sandbox when it ", "    is up"]
        );
        // a `label   value` line's rows hang under the value
        assert_eq!(
            rows("  failure   cannot create the sandbox", 24),
            [
                "  failure   cannot ",
                "            create the ",
                "            sandbox"
            ]
        );
    }

    #[test]
    fn ellipsis_marks_what_was_cut() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(
            ellipsize("ImagePullBackOff: Back-off pulling image", 24),
            "ImagePullBackOff:…"
        );
        assert_eq!(ellipsize("abcdefghij", 5), "abcd…");
        assert_eq!(ellipsize("日本語日本語", 5), "日本…");
        assert!(width(&ellipsize("ImagePullBackOff: Back-off pulling image", 24)) <= 24);
        assert_eq!(ellipsize("anything", 0), "");
    }
}
