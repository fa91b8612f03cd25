//! Search in a transcript: smart-case matching, the hits of each message found by wrapping
//! its text (never drawing it), and the current hit's matches marked on the lines drawn.

use super::*;

/// A search: what is looked for, the hit last moved to, and the lines with a match.
pub(super) struct Search {
    pub(super) matcher: Matcher,
    /// The hit last moved to.
    pub(super) current: Option<Anchor>,
    /// One per message (for `hits_look`): the lines where a match starts.
    pub(super) hits: Vec<Hits>,
    pub(super) hits_look: Option<TextLook>,
}

/// The lines of a message (from 0) where a match starts, each with the first match on it; for
/// the message's revision `rev`.
#[derive(Default)]
pub(super) struct Hits {
    pub(super) rev: u64,
    pub(super) lines: Vec<(u32, Spot)>,
}

/// Where a match is in a message, whatever the look: the piece (see [`pieces`]), the line of
/// its text (0 for a piece of one line) and the byte it starts at. In drawing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Spot {
    pub(super) piece: u32,
    pub(super) row: u32,
    pub(super) at: u32,
}

/// A hit: the message (by seq) and the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Anchor {
    pub(super) seq: i64,
    pub(super) spot: Spot,
}

/// The current hit's matches as drawn (kept from a frame to the next): those starting on the
/// hit's line, for what they were found with.
pub(super) struct Emphasis {
    pub(super) query: String,
    pub(super) anchor: Anchor,
    pub(super) look: TextLook,
    /// The message they are in, and its revision.
    pub(super) message: usize,
    pub(super) rev: u64,
    /// Where they are drawn: (line of the message, byte range of its text), by line.
    pub(super) segments: Vec<(usize, Range<usize>)>,
}

impl Emphasis {
    /// The ranges on line `k` of the message.
    pub(super) fn on(&self, k: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.segments
            .iter()
            .filter(move |(line, _)| *line == k)
            .map(|(_, range)| range.clone())
    }
}

impl Search {
    /// Brings `hits` up to date for `look`: only messages changed since are searched again.
    pub(super) fn refresh(&mut self, messages: &[Message], shapes: &[Shape], look: &Look<'_>) {
        let key = look.text_look();
        if self.hits_look != Some(key) {
            self.hits.clear();
            self.hits_look = Some(key);
        }
        self.hits.resize_with(messages.len(), Hits::default);
        for ((hits, m), shape) in self.hits.iter_mut().zip(messages).zip(shapes) {
            if hits.rev == shape.rev {
                continue;
            }
            hits.rev = shape.rev;
            hits.lines.clear();
            matches_in(m, shape, look, &self.matcher, |spot, segments| {
                if let Some(&(line, _)) = segments.first() {
                    let line = to_u32(line);
                    if hits.lines.last().is_none_or(|&(l, _)| l != line) {
                        hits.lines.push((line, spot));
                    }
                }
            });
        }
    }

    /// The current hit's matches for `look`: `kept` when it is still right.
    pub(super) fn emphasis(
        &self,
        kept: Option<Emphasis>,
        messages: &[Message],
        shapes: &[Shape],
        look: &Look<'_>,
    ) -> Option<Emphasis> {
        let anchor = self.current?;
        let key = look.text_look();
        if let Some(e) = kept
            && e.anchor == anchor
            && e.look == key
            && e.query == self.matcher.query
            && shapes.get(e.message).is_some_and(|s| s.rev == e.rev)
        {
            return Some(e);
        }
        let i = messages.binary_search_by_key(&anchor.seq, |m| m.seq).ok()?;
        // the hit's line is where the last match up to the anchor starts
        let mut line = None;
        let mut segments = Vec::new();
        matches_in(
            &messages[i],
            shapes.get(i)?,
            look,
            &self.matcher,
            |spot, found| {
                let Some(&(start, _)) = found.first() else {
                    return;
                };
                if spot <= anchor.spot {
                    if line != Some(start) {
                        segments.clear();
                        line = Some(start);
                    }
                    segments.extend_from_slice(found);
                } else if line == Some(start) {
                    segments.extend_from_slice(found);
                }
            },
        );
        segments.sort_by_key(|(line, range)| (*line, range.start));
        Some(Emphasis {
            query: self.matcher.query.clone(),
            anchor,
            look: key,
            message: i,
            rev: shapes.get(i)?.rev,
            segments,
        })
    }

    /// `line` with its matches marked: `current` (byte ranges of its text: the current hit's
    /// matches) in the theme's selection style, the other matches in it underlined. Only
    /// matches within the line are found here: a match wrapped onto the next line is marked
    /// (on both) only when it is the current hit.
    pub(super) fn highlight(
        &self,
        line: &Line<'static>,
        current: impl Iterator<Item = Range<usize>>,
        theme: &Theme,
    ) -> Line<'static> {
        // its text: after the indent on a line of text, else all of it
        let (skip, text): (usize, Cow<'_, str>) = match &line.spans[..] {
            [indent, text] if KINDS.iter().any(|k| k.indent() == indent.content) => {
                (indent.content.len(), Cow::Borrowed(&*text.content))
            }
            [indent, rest @ ..] if KINDS.iter().any(|k| k.indent() == indent.content) => (
                indent.content.len(),
                rest.iter().map(|s| &*s.content).collect(),
            ),
            spans => (0, spans.iter().map(|s| &*s.content).collect()),
        };
        let mut marks: Vec<(Range<usize>, Style)> = current
            .map(|r| (r.start + skip..r.end + skip, theme.selected))
            .collect();
        let emphasised = marks.len();
        for found in self.matcher.find_all(&text) {
            let r = found.start + skip..found.end + skip;
            if !marks[..emphasised]
                .iter()
                .any(|(m, _)| m.start < r.end && r.start < m.end)
            {
                marks.push((r, Style::default().add_modifier(Modifier::UNDERLINED)));
            }
        }
        if marks.is_empty() {
            return line.clone();
        }
        marks.sort_by_key(|(r, _)| r.start);
        mark(line, &marks)
    }
}

/// `line` with each byte range of `marks` (of its spans' text end to end; in order, not
/// overlapping) in its span's style patched with the mark's.
pub(super) fn mark(line: &Line<'static>, marks: &[(Range<usize>, Style)]) -> Line<'static> {
    let mut spans = Vec::with_capacity(line.spans.len() + 2 * marks.len());
    let mut marks = marks.iter().peekable();
    let mut offset = 0;
    for span in &line.spans {
        let text = &*span.content;
        let end = offset + text.len();
        let mut at = offset;
        let mut piece = |from: usize, to: usize, style: Style| {
            if let Some(part) = text.get(from - offset..to - offset)
                && !part.is_empty()
            {
                spans.push(Span::styled(part.to_string(), style));
            }
        };
        while let Some((range, style)) = marks.peek() {
            if range.start >= end {
                break;
            }
            let (from, to) = (range.start.max(at), range.end.min(end));
            if from > at {
                piece(at, from, span.style);
            }
            if to > from {
                piece(from, to, span.style.patch(*style));
            }
            at = at.max(to);
            if range.end > end {
                break;
            }
            marks.next();
        }
        if at < end {
            piece(at, end, span.style);
        }
        offset = end;
    }
    let mut marked = Line::from(spans);
    marked.style = line.style;
    marked.alignment = line.alignment;
    marked
}

/// Every match of `matcher` in `m` drawn with `look`, in drawing order: where it is in the
/// text, and where it is drawn, one (line of the message, byte range of that line's text)
/// for each line it is on, the first where it starts. Lines of text are found by wrapping
/// their text, never drawn; the lines that never wrap (header, tool calls...) are drawn.
pub(super) fn matches_in(
    m: &Message,
    shape: &Shape,
    look: &Look<'_>,
    matcher: &Matcher,
    mut visit: impl FnMut(Spot, &[(usize, Range<usize>)]),
) {
    let mut line = 0;
    let mut drawn = Vec::new();
    let mut wrapped = Vec::new();
    let mut rows: Vec<(Range<usize>, usize)> = Vec::new();
    let mut segments = Vec::new();
    pieces(m, look.tools_open, |piece, p| match p {
        // folded reasoning is a line like a tool call's: drawn and searched as drawn
        Piece::Text(kind, _) if kind != Kind::Reasoning || look.reasoning_open => {
            let Piece::Text(_, text) = p else { return };
            let room = look.width.saturating_sub(kind.indent().len()).max(1);
            if let Some(laid) = shape.laid(piece) {
                // laid out: matched in each line's text; a row's range is after its head
                let room = look.wrap.then_some(room);
                for k in 0..laid.lines.len() {
                    let text = laid.line_text(k);
                    let mut found = matcher.find_all(text).peekable();
                    if found.peek().is_none() {
                        line += laid.count_rows(k, room);
                        continue;
                    }
                    rows.clear();
                    laid.rows(k, room, |r| rows.push((r.range, r.head.len())));
                    for found in found {
                        segments.clear();
                        for (j, (p, head)) in rows.iter().enumerate() {
                            let (from, to) = (found.start.max(p.start), found.end.min(p.end));
                            if from < to {
                                segments
                                    .push((line + j, from - p.start + head..to - p.start + head));
                            }
                        }
                        let spot = Spot {
                            piece,
                            row: to_u32(k),
                            at: to_u32(found.start),
                        };
                        visit(spot, &segments);
                    }
                    line += rows.len();
                }
                return;
            }
            for (row, raw) in as_drawn(&text).lines().enumerate() {
                let mut found = matcher.find_all(raw).peekable();
                if found.peek().is_none() {
                    line += lines_of(raw, look.wrap, room);
                    continue;
                }
                wrapped.clear();
                if look.wrap && !raw.is_empty() {
                    wrap(raw, room, |p| wrapped.push(p));
                } else {
                    wrapped.push(0..raw.len());
                }
                for found in found {
                    segments.clear();
                    for (k, p) in wrapped.iter().enumerate() {
                        let (from, to) = (found.start.max(p.start), found.end.min(p.end));
                        if from < to {
                            segments.push((line + k, from - p.start..to - p.start));
                        }
                    }
                    let at = to_u32(found.start);
                    visit(
                        Spot {
                            piece,
                            row: to_u32(row),
                            at,
                        },
                        &segments,
                    );
                }
                line += wrapped.len();
            }
        }
        fixed => {
            drawn.clear();
            draw_piece(m, look, fixed, None, &mut drawn);
            for l in &drawn {
                let text: String = l.spans.iter().map(|s| &*s.content).collect();
                for found in matcher.find_all(&text) {
                    let at = to_u32(found.start);
                    visit(Spot { piece, row: 0, at }, &[(line, found)]);
                }
                line += 1;
            }
        }
    });
}

/// How many lines a line of text takes.
pub(super) fn lines_of(raw: &str, wrapping: bool, room: usize) -> usize {
    if !wrapping || raw.is_empty() {
        1
    } else if raw.is_ascii() {
        raw.len().div_ceil(room.max(1))
    } else {
        let mut n = 0;
        wrap(raw, room, |_| n += 1);
        n
    }
}

/// A query and how it matches, in smart case: exactly when it has an uppercase letter, else
/// char by char, each lowercased (see [`fold`]).
pub(super) struct Matcher {
    pub(super) query: String,
    pub(super) exact: bool,
    /// The query's chars, folded.
    pub(super) folded: Vec<char>,
}

/// A char lowercased, when that makes one char (not, say, 'İ', which makes two).
pub(super) fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

impl Matcher {
    pub(super) fn new(query: &str) -> Matcher {
        Matcher {
            query: query.to_string(),
            exact: query.chars().any(char::is_uppercase),
            folded: query.chars().map(fold).collect(),
        }
    }

    /// The matches in `hay`, left to right, not overlapping, as byte ranges.
    pub(super) fn find_all<'h>(&'h self, hay: &'h str) -> impl Iterator<Item = Range<usize>> + 'h {
        // ASCII in ASCII: byte by byte
        let bytes = !self.exact && self.query.is_ascii() && hay.is_ascii();
        let mut from = 0;
        std::iter::from_fn(move || {
            let found = self.find(hay, from, bytes)?;
            from = found.end;
            Some(found)
        })
    }

    pub(super) fn find(&self, hay: &str, from: usize, bytes: bool) -> Option<Range<usize>> {
        let rest = hay.get(from..)?;
        if self.query.is_empty() {
            return None;
        }
        let found = if self.exact {
            rest.find(&self.query).map(|at| at..at + self.query.len())
        } else if bytes {
            let q = self.query.as_bytes();
            rest.as_bytes()
                .windows(q.len())
                .position(|w| w.eq_ignore_ascii_case(q))
                .map(|at| at..at + q.len())
        } else {
            self.find_folded(rest)
        }?;
        Some(from + found.start..from + found.end)
    }

    pub(super) fn find_folded(&self, hay: &str) -> Option<Range<usize>> {
        let (&first, rest) = self.folded.split_first()?;
        hay.char_indices().find_map(|(at, c)| {
            if fold(c) != first {
                return None;
            }
            let mut end = at + c.len_utf8();
            let mut chars = hay.get(end..)?.chars();
            for &q in rest {
                let h = chars.next().filter(|&h| fold(h) == q)?;
                end += h.len_utf8();
            }
            Some(at..end)
        })
    }
}
