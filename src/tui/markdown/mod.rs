//! Markdown as an agent writes it, laid out for a terminal: headings, lists, quotes, emphasis,
//! links, code blocks (with syntax colouring, see [`code`]) and tables become lines of plain
//! text with marks saying how each run of it looks. The layout does not depend on the width
//! or the theme: wrapping ([`Laid::rows`]) and styling ([`Mark::style`]) come after, so a
//! transcript lays a message out once and wraps it at any width.
//!
//! The text is untrusted: what the parser hands back (entities decoded) is sanitised again,
//! so no escape sequence written as `&#27;` reaches the terminal.

pub mod code;

use super::cells::{width, wrap, wrap_words, wrap_words_narrow};
use crate::sanitize;
use pulldown_cmark::{Alignment, CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use ratatui::style::{Modifier, Style};
use std::ops::Range;

use super::theme::Theme;

/// How a run of laid-out text looks, whatever the theme: a set of flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mark(u16);

impl Mark {
    pub const PLAIN: Mark = Mark(0);
    pub const STRONG: Mark = Mark(1);
    pub const EMPH: Mark = Mark(1 << 1);
    pub const STRIKE: Mark = Mark(1 << 2);
    /// Inline code.
    pub const CODE: Mark = Mark(1 << 3);
    pub const LINK: Mark = Mark(1 << 4);
    /// Markers, gutters, rules, table borders, a link's address.
    pub const MUTED: Mark = Mark(1 << 5);
    pub const HEADING: Mark = Mark(1 << 6);
    /// A first-level heading (underlined too).
    pub const TITLE: Mark = Mark(1 << 7);
    pub const KEYWORD: Mark = Mark(1 << 8);
    pub const STRING: Mark = Mark(1 << 9);
    pub const COMMENT: Mark = Mark(1 << 10);
    pub const NUMBER: Mark = Mark(1 << 11);
    pub const QUOTE: Mark = Mark(1 << 12);
    /// A line a diff removes.
    pub const REMOVED: Mark = Mark(1 << 13);

    pub const fn with(self, other: Mark) -> Mark {
        Mark(self.0 | other.0)
    }

    pub const fn has(self, other: Mark) -> bool {
        self.0 & other.0 == other.0
    }

    /// `base` (the style of the text it is in) as this mark changes it with `theme`'s colours.
    /// The modifiers carry the meaning where there is no colour (NO_COLOR): headings bold, a
    /// title underlined, links underlined, emphasis italic, comments italic.
    pub fn style(self, base: Style, theme: &Theme) -> Style {
        if self == Mark::PLAIN {
            return base;
        }
        let fg = |s: Style| s.fg.map_or(base, |c| base.fg(c));
        let mut style = base;
        if self.has(Mark::CODE) {
            style = fg(theme.tool);
        }
        if self.has(Mark::MUTED) {
            style = fg(theme.muted);
        }
        if self.has(Mark::KEYWORD) {
            style = fg(theme.accent);
        }
        if self.has(Mark::STRING) {
            style = fg(theme.ok);
        }
        if self.has(Mark::NUMBER) {
            style = fg(theme.warning);
        }
        if self.has(Mark::REMOVED) {
            style = fg(theme.error);
        }
        if self.has(Mark::COMMENT) {
            style = fg(theme.muted).add_modifier(Modifier::ITALIC);
        }
        if self.has(Mark::LINK) {
            style = fg(theme.accent).add_modifier(Modifier::UNDERLINED);
        }
        if self.has(Mark::HEADING) {
            style = fg(theme.accent).add_modifier(Modifier::BOLD);
        }
        if self.has(Mark::TITLE) {
            style = style.add_modifier(Modifier::UNDERLINED);
        }
        if self.has(Mark::STRONG) {
            style = style.add_modifier(Modifier::BOLD);
        }
        if self.has(Mark::EMPH) || self.has(Mark::QUOTE) {
            style = style.add_modifier(Modifier::ITALIC);
        }
        if self.has(Mark::STRIKE) {
            style = style.add_modifier(Modifier::CROSSED_OUT);
        }
        style
    }
}

/// How a laid-out line breaks when it is wider than the room: prose between words, code and
/// tables anywhere (a word break would misalign them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    Words,
    Cells,
}

/// One line of a layout: where its text ends in [`Laid::text`] and its marks in
/// [`Laid::marks`], its width in cells (head included), what goes before it (its head: a
/// bullet, a quote's `> `, a code gutter) and before the rows it wraps onto (its hang, as wide
/// as the head), and how it wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaidLine {
    pub end: u32,
    pub marks: u32,
    pub width: u32,
    pub head: u16,
    pub hang: u16,
    pub wrap: Wrap,
    /// Every char of its text takes one cell: its rows can be counted from cells alone.
    pub narrow: bool,
    /// Where its break points end in [`Laid::breaks`] (see there).
    pub breaks: u32,
}

/// A text laid out: its lines' text end to end, each line's place and look, the runs of marks
/// (each `(end, mark)`, ends counted in the text, in order), and the heads lines start with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Laid {
    pub text: String,
    pub lines: Vec<LaidLine>,
    pub marks: Vec<(u32, Mark)>,
    pub heads: Vec<String>,
    /// The widest line (cells, head included).
    pub widest: u32,
    /// Where the narrow prose lines wider than [`BREAKS_FROM`] may break between words: for
    /// each, the cell after each of its spaces, as the distance from the one before (so a
    /// byte a word). Counting such a line's rows at any width then reads neither its text nor
    /// its chars (a resize recounts every long line of the transcript). A line with a word
    /// too long for a byte has none (it is counted from its text).
    pub breaks: Vec<u8>,
    /// The lines wider than [`BREAKS_FROM`], widest first, with what counting their rows
    /// needs: a count looks only at the lines wider than the room, and reads only these and
    /// their break points (a resize counts every long line of the transcript: each line
    /// looked up elsewhere would be a cache miss).
    pub long: Vec<Long>,
}

/// A line wider than [`BREAKS_FROM`], as [`Laid::count`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Long {
    pub width: u32,
    /// Its place in [`Laid::lines`].
    pub k: u32,
    /// Its break points: `breaks[from..to]`.
    pub from: u32,
    pub to: u32,
    /// The width of its head.
    pub head: u16,
    /// Counted from cells (code, tables: one cell a char), from its break points, or from
    /// its text.
    pub by: CountBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountBy {
    Cells,
    Breaks,
    Text,
}

/// Lines up to this wide (cells, head included) keep no break points: they wrap only in a
/// room narrower than this, and are then counted from their text.
pub const BREAKS_FROM: u32 = 40;

/// A row of a laid-out line as drawn: its head (or hang), then runs of its text.
pub struct Row<'a> {
    pub head: &'a str,
    /// Byte range of the line's text (see [`Laid::line_text`]).
    pub range: Range<usize>,
}

impl Laid {
    /// Line `k`'s text (its head not included).
    pub fn line_text(&self, k: usize) -> &str {
        let start = if k == 0 {
            0
        } else {
            self.lines[k - 1].end as usize
        };
        self.text
            .get(start..self.lines[k].end as usize)
            .unwrap_or("")
    }

    /// Line `k`'s runs of marks, as byte ranges of its text.
    pub fn line_marks(&self, k: usize) -> impl Iterator<Item = (Range<usize>, Mark)> + '_ {
        let (start, from) = if k == 0 {
            (0, 0)
        } else {
            let l = self.lines[k - 1];
            (l.end as usize, l.marks as usize)
        };
        let to = self.lines[k].marks as usize;
        let mut at = start;
        self.marks
            .get(from..to)
            .unwrap_or(&[])
            .iter()
            .map(move |&(end, mark)| {
                let r = at - start..end as usize - start;
                at = end as usize;
                (r, mark)
            })
    }

    pub fn head(&self, i: u16) -> &str {
        self.heads.get(usize::from(i)).map_or("", String::as_str)
    }

    /// The rows line `k` takes `room` cells wide (its head included in the room), wrapping or
    /// not; each as its head and the range of its text.
    pub fn rows(&self, k: usize, room: Option<usize>, mut visit: impl FnMut(Row<'_>)) {
        let line = self.lines[k];
        let text = self.line_text(k);
        let (head, hang) = (self.head(line.head), self.head(line.hang));
        let room = match room {
            Some(room) if line.width as usize > room && !text.is_empty() => {
                room.saturating_sub(width(head)).max(1)
            }
            _ => {
                visit(Row {
                    head,
                    range: 0..text.len(),
                });
                return;
            }
        };
        let mut first = true;
        let mut row = |range: Range<usize>| {
            visit(Row {
                head: if first { head } else { hang },
                range,
            });
            first = false;
        };
        match line.wrap {
            Wrap::Words if line.narrow => wrap_words_narrow(text, room, &mut row),
            Wrap::Words => wrap_words(text, room, &mut row),
            // one cell a char: a row every `room` chars, no char's width looked up
            Wrap::Cells if line.narrow => {
                let mut start = 0;
                let mut chars = 0;
                for (at, _) in text.char_indices() {
                    if chars == room {
                        row(start..at);
                        start = at;
                        chars = 0;
                    }
                    chars += 1;
                }
                row(start..text.len());
            }
            Wrap::Cells => wrap(text, room, &mut row),
        }
    }

    /// How many rows line `k` takes `room` cells wide (`None`: not wrapping).
    pub fn count_rows(&self, k: usize, room: Option<usize>) -> usize {
        let line = self.lines[k];
        let Some(room) = room.filter(|&r| line.width as usize > r) else {
            return 1;
        };
        let head = if line.head == 0 {
            0
        } else {
            width(self.head(line.head))
        };
        let inner = room.saturating_sub(head).max(1);
        let cells = (line.width as usize).saturating_sub(head);
        let from = if k == 0 {
            0
        } else {
            self.lines[k - 1].breaks as usize
        };
        let breaks = self.breaks.get(from..line.breaks as usize).unwrap_or(&[]);
        match line.wrap {
            Wrap::Cells if line.narrow => cells.div_ceil(inner).max(1),
            Wrap::Words if line.narrow && !breaks.is_empty() => word_rows(cells, breaks, inner),
            _ => {
                let mut n = 0;
                self.rows(k, Some(room), |_| n += 1);
                n.max(1)
            }
        }
    }

    /// How many rows the whole layout takes `room` cells wide (`None`: not wrapping).
    pub fn count(&self, room: Option<usize>) -> usize {
        let n = self.lines.len();
        match room {
            Some(r) if self.widest as usize > r => {
                let mut more = 0;
                if r < BREAKS_FROM as usize {
                    // lines not in `long` may wrap too: every line
                    return (0..n).map(|k| self.count_rows(k, room)).sum();
                }
                for long in &self.long {
                    if long.width as usize <= r {
                        break;
                    }
                    let inner = r.saturating_sub(usize::from(long.head)).max(1);
                    let cells = (long.width as usize).saturating_sub(usize::from(long.head));
                    more += match long.by {
                        CountBy::Cells => cells.div_ceil(inner).max(1),
                        CountBy::Breaks => {
                            let breaks = self
                                .breaks
                                .get(long.from as usize..long.to as usize)
                                .unwrap_or(&[]);
                            word_rows(cells, breaks, inner)
                        }
                        CountBy::Text => self.count_rows(long.k as usize, room),
                    } - 1;
                }
                n + more
            }
            _ => n,
        }
    }
}

impl Laid {
    /// Takes in `delta`, streamed onto the end of the text laid out (`before`, as it was),
    /// without laying the text out again: only when that is sure to come out the same. The
    /// text must end in a line of a paragraph at the top level, starting with a letter, its
    /// last run plain and written as is at the end of `before`, in a letter, a digit or plain
    /// punctuation (not a delimiter or an escape); `delta` only letters, digits,
    /// spaces and `,.?!'"-:` (nothing that could open, close or escape anything, or end the
    /// line). Spaces at the end are held back as the parser does (they show once text follows
    /// them). `false` (nothing changed) otherwise: the caller lays the text out again.
    pub fn append_plain(&mut self, before: &str, delta: &str) -> bool {
        let plain = |c: char| {
            c.is_alphanumeric() && !c.is_control()
                || matches!(c, ' ' | ',' | '.' | '?' | '!' | '\'' | '"' | '-' | ':')
        };
        if !delta.chars().all(plain) {
            return false;
        }
        let Some(k) = self.lines.len().checked_sub(1) else {
            return false;
        };
        let line = self.lines[k];
        let first_mark = if k == 0 {
            0
        } else {
            self.lines[k - 1].marks as usize
        };
        let last_run = match self.line_marks(k).last() {
            Some((range, Mark::PLAIN)) if line.marks as usize > first_mark => range,
            _ => return false,
        };
        let text = self.line_text(k);
        let written = before.trim_end_matches(' ');
        // the line laid out last is the source's last line
        let source = written.rsplit('\n').next().unwrap_or("");
        if source.trim_start().chars().next() != text.chars().next()
            || source.len() - source.trim_start().len() > 3
        {
            return false;
        }
        if line.head != 0
            || line.hang != 0
            || line.wrap != Wrap::Words
            || !text.starts_with(char::is_alphabetic)
            || !written.ends_with(&text[last_run])
            // (what ends the text may still be taken with what comes: an escape, a delimiter
            // run whose flanking turns on the char after it)
            || !written.ends_with(|c: char| c.is_alphanumeric() || ",.?!'\":-)".contains(c))
        {
            return false;
        }
        let added = delta.trim_end_matches(' ');
        if added.is_empty() {
            return true;
        }
        let held = before.len() - written.len();
        let piece = format!("{}{added}", " ".repeat(held));
        let old_cells = line.width as usize;
        let narrow = line.narrow && piece.chars().all(|c| super::cells::char_width(c) == 1);
        let cells = if narrow {
            old_cells + piece.chars().count()
        } else {
            old_cells + width(&piece)
        };
        let w = u32::try_from(cells).unwrap_or(u32::MAX);
        self.text.push_str(&piece);
        let end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        if let Some(run) = self.marks.last_mut() {
            run.0 = end;
        }
        // the line's place among the long ones, and its break points (it is the last line:
        // its break points are the last ones)
        let at = self.long.iter().position(|l| l.k as usize == k);
        let mut long = match at {
            Some(at) => self.long.remove(at),
            None => Long {
                width: 0,
                k: u32::try_from(k).unwrap_or(u32::MAX),
                from: u32::try_from(self.breaks.len()).unwrap_or(u32::MAX),
                to: u32::try_from(self.breaks.len()).unwrap_or(u32::MAX),
                head: 0,
                by: CountBy::Text,
            },
        };
        let from = long.from as usize;
        if w > BREAKS_FROM {
            if at.is_none() {
                // newly long: its break points from its start
                self.breaks.truncate(from);
                long.by = CountBy::Breaks;
                let line_at = if k == 0 {
                    0
                } else {
                    self.lines[k - 1].end as usize
                };
                self.push_breaks(from, line_at, 0, 0);
            } else if narrow && long.by != CountBy::Text {
                let last: usize = self.breaks[from..].iter().map(|&b| usize::from(b)).sum();
                long.by = CountBy::Breaks;
                let piece_at = self.text.len() - piece.len();
                self.push_breaks(from, piece_at, old_cells, last);
            } else {
                long.by = CountBy::Text;
            }
            if !narrow {
                // counted from its text: no break points kept
                self.breaks.truncate(from);
                long.by = CountBy::Text;
            }
            let has_space = self.line_text_to(k, end).contains(' ');
            if long.by == CountBy::Breaks && self.breaks.len() == from && !has_space {
                long.by = CountBy::Cells;
            } else if long.by == CountBy::Breaks && self.breaks.len() == from {
                long.by = CountBy::Text;
            }
            long.width = w;
            long.to = u32::try_from(self.breaks.len()).unwrap_or(u32::MAX);
            let place = self.long.partition_point(|l| l.width >= w);
            self.long.insert(place, long);
        }
        let line = &mut self.lines[k];
        line.end = end;
        line.width = w;
        line.narrow = narrow;
        line.breaks = u32::try_from(self.breaks.len()).unwrap_or(u32::MAX);
        self.widest = self.widest.max(w);
        true
    }

    /// Line `k`'s text, its end at `end`.
    fn line_text_to(&self, k: usize, end: u32) -> &str {
        let start = if k == 0 {
            0
        } else {
            self.lines[k - 1].end as usize
        };
        self.text.get(start..end as usize).unwrap_or("")
    }

    /// The break points of the last line (whose break points start at `start`) in its text
    /// from byte `at` (cell `cell`) on, the last one before it at cell `last`; none at all
    /// (the line is then counted from its text) when a word is too long for a byte.
    fn push_breaks(&mut self, start: usize, at: usize, cell: usize, mut last: usize) {
        let text = self.text.get(at..).unwrap_or("");
        for (i, c) in text.chars().enumerate() {
            if c == ' ' {
                match u8::try_from(cell + i + 1 - last) {
                    Ok(d) => self.breaks.push(d),
                    Err(_) => {
                        self.breaks.truncate(start);
                        return;
                    }
                }
                last = cell + i + 1;
            }
        }
    }
}

/// The rows [`wrap_words`] makes of a line of `cells` one-cell chars, `room` wide, from its
/// break points (`breaks`: the cell after each space, as distances): the same walk, a word
/// at a time. A row ends after its last space when that keeps at least half of it, else
/// where the room ends.
fn word_rows(cells: usize, breaks: &[u8], room: usize) -> usize {
    let (mut start, mut rows) = (0usize, 1usize);
    let (mut next, mut at) = (0usize, 0usize);
    // the last break point seen up to the room's end
    let mut last = 0usize;
    while cells - start > room {
        let limit = start + room;
        while next < breaks.len() {
            let e = at + usize::from(breaks[next]);
            if e > limit {
                break;
            }
            at = e;
            last = e;
            next += 1;
        }
        start = if last > start && (last - start) * 2 >= room {
            last
        } else {
            limit
        };
        rows += 1;
    }
    rows
}

/// `text` (untrusted markdown) laid out.
pub fn layout(text: &str) -> Laid {
    let drawn = sanitize::text(text);
    let mut b = Builder::default();
    b.laid.heads.push(String::new());
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_GFM;
    for event in Parser::new_ext(&drawn, options) {
        b.event(event);
    }
    b.finish()
}

/// Plain text laid out as it is: a line per line, each in `mark`, wrapping between words.
pub fn plain(text: &str, mark: Mark) -> Laid {
    let drawn = sanitize::text(text);
    let mut b = Builder::default();
    b.laid.heads.push(String::new());
    for line in drawn.lines() {
        b.push_text(&line.replace('\t', "    "), mark);
        b.end_line(Wrap::Words);
    }
    b.finish()
}

enum Container {
    Quote,
    List { next: Option<u64> },
    Item { marker: String, first: bool },
}

#[derive(Default)]
struct Table {
    aligns: Vec<Alignment>,
    rows: Vec<Vec<Cell>>,
    head_rows: usize,
    in_head: bool,
}

#[derive(Default)]
struct Cell {
    text: String,
    marks: Vec<(u32, Mark)>,
}

impl Cell {
    fn push(&mut self, text: &str, mark: Mark) {
        self.text.push_str(text);
        push_mark(&mut self.marks, self.text.len(), mark);
    }
}

fn push_mark(marks: &mut Vec<(u32, Mark)>, end: usize, mark: Mark) {
    let end = u32::try_from(end).unwrap_or(u32::MAX);
    match marks.last_mut() {
        Some((e, m)) if *m == mark => *e = end,
        _ => marks.push((end, mark)),
    }
}

#[derive(Default)]
struct Builder {
    laid: Laid,
    /// Whether a line is being written (its head already chosen).
    open: bool,
    line_start: usize,
    /// Where the open line's runs of marks start (a run never spans two lines).
    marks_start: usize,
    head: u16,
    hang: u16,
    containers: Vec<Container>,
    strong: u32,
    emph: u32,
    strike: u32,
    heading: Option<HeadingLevel>,
    links: Vec<String>,
    link_start: usize,
    image: u32,
    code: Option<String>,
    table: Option<Table>,
}

impl Builder {
    fn mark(&self) -> Mark {
        let mut m = Mark::PLAIN;
        if self.strong > 0 {
            m = m.with(Mark::STRONG);
        }
        if self.emph > 0 {
            m = m.with(Mark::EMPH);
        }
        if self.strike > 0 {
            m = m.with(Mark::STRIKE);
        }
        if !self.links.is_empty() {
            m = m.with(Mark::LINK);
        }
        if self.image > 0 {
            m = m.with(Mark::MUTED);
        }
        if self
            .containers
            .iter()
            .any(|c| matches!(c, Container::Quote))
        {
            m = m.with(Mark::QUOTE);
        }
        match self.heading {
            Some(HeadingLevel::H1) => m = m.with(Mark::HEADING).with(Mark::TITLE),
            Some(_) => m = m.with(Mark::HEADING),
            None => {}
        }
        m
    }

    fn intern(&mut self, head: String) -> u16 {
        match self.laid.heads.iter().position(|h| *h == head) {
            Some(i) => u16::try_from(i).unwrap_or(0),
            None => {
                if self.laid.heads.len() >= usize::from(u16::MAX) {
                    return 0;
                }
                self.laid.heads.push(head);
                u16::try_from(self.laid.heads.len() - 1).unwrap_or(0)
            }
        }
    }

    /// Starts a line if none is open: its head from the containers it is in (a list item's
    /// marker on its first line only), and its hang.
    fn open_line(&mut self) {
        if self.open {
            return;
        }
        let (mut head, mut hang) = (String::new(), String::new());
        for c in &mut self.containers {
            match c {
                Container::Quote => {
                    head.push_str("> ");
                    hang.push_str("> ");
                }
                Container::List { .. } => {}
                Container::Item { marker, first } => {
                    let pad = " ".repeat(width(marker));
                    if *first {
                        head.push_str(marker);
                        *first = false;
                    } else {
                        head.push_str(&pad);
                    }
                    hang.push_str(&pad);
                }
            }
        }
        if self.code.is_some() {
            head.push_str("│ ");
            hang.push_str("│ ");
        }
        self.head = self.intern(head);
        self.hang = self.intern(hang);
        self.line_start = self.laid.text.len();
        self.marks_start = self.laid.marks.len();
        self.open = true;
    }

    fn push_text(&mut self, text: &str, mark: Mark) {
        self.open_line();
        self.laid.text.push_str(text);
        let end = u32::try_from(self.laid.text.len()).unwrap_or(u32::MAX);
        let joins = self.laid.marks.len() > self.marks_start;
        match self.laid.marks.last_mut() {
            Some((e, m)) if *m == mark && joins => *e = end,
            _ => self.laid.marks.push((end, mark)),
        }
    }

    fn end_line(&mut self, wrap: Wrap) {
        self.open_line();
        let text = &self.laid.text[self.line_start..];
        let narrow = text.is_ascii()
            || text
                .chars()
                .all(|c| super::cells::char_width(c) == 1 && !c.is_ascii_control());
        let cells = if narrow && !text.is_ascii() {
            text.chars().count()
        } else {
            width(text)
        };
        let head = width(self.laid.head(self.head));
        let w = u32::try_from(head + cells).unwrap_or(u32::MAX);
        self.laid.widest = self.laid.widest.max(w);
        let k = u32::try_from(self.laid.lines.len()).unwrap_or(u32::MAX);
        if w > BREAKS_FROM {
            let from = self.laid.breaks.len();
            if narrow && wrap == Wrap::Words {
                let from = self.laid.breaks.len();
                let mut last = 0;
                for (cell, c) in text.chars().enumerate() {
                    if c == ' ' {
                        match u8::try_from(cell + 1 - last) {
                            Ok(d) => self.laid.breaks.push(d),
                            Err(_) => {
                                // a word too long for a byte: counted from the text
                                self.laid.breaks.truncate(from);
                                break;
                            }
                        }
                        last = cell + 1;
                    }
                }
            }
            let to = self.laid.breaks.len();
            self.laid.long.push(Long {
                width: w,
                k,
                from: u32::try_from(from).unwrap_or(u32::MAX),
                to: u32::try_from(to).unwrap_or(u32::MAX),
                head: u16::try_from(head).unwrap_or(u16::MAX),
                by: match (narrow, wrap) {
                    // (prose with no space breaks where the room ends, as code does)
                    (true, Wrap::Cells) => CountBy::Cells,
                    (true, Wrap::Words) if !text.contains(' ') => CountBy::Cells,
                    (true, Wrap::Words) if to > from => CountBy::Breaks,
                    _ => CountBy::Text,
                },
            });
        }
        self.laid.lines.push(LaidLine {
            end: u32::try_from(self.laid.text.len()).unwrap_or(u32::MAX),
            marks: u32::try_from(self.laid.marks.len()).unwrap_or(u32::MAX),
            width: w,
            head: self.head,
            hang: self.hang,
            wrap,
            narrow,
            breaks: u32::try_from(self.laid.breaks.len()).unwrap_or(u32::MAX),
        });
        self.open = false;
    }

    /// A blank line before a block, unless it starts the text or a list item, or follows one.
    fn space(&mut self) {
        if self.open {
            self.end_line(Wrap::Words);
        }
        let in_item = self
            .containers
            .iter()
            .any(|c| matches!(c, Container::Item { .. }));
        let after_blank = match self.laid.lines.len() {
            0 => true,
            n => self.line_len(n - 1) == 0,
        };
        if in_item || after_blank {
            return;
        }
        self.end_line(Wrap::Words);
    }

    fn line_len(&self, k: usize) -> usize {
        self.laid.line_text(k).len()
    }

    fn text(&mut self, text: &str) {
        let clean = sanitize::text(text);
        let text = clean.replace('\t', "    ");
        let mark = self.mark();
        if let Some(table) = &mut self.table {
            let mark = if table.in_head {
                mark.with(Mark::STRONG)
            } else {
                mark
            };
            if let Some(cell) = table.rows.last_mut().and_then(|r| r.last_mut()) {
                cell.push(&text.replace('\n', " "), mark);
            }
            return;
        }
        if let Some(lang) = self.code.clone() {
            let mut lines = text.split('\n').peekable();
            while let Some(line) = lines.next() {
                if !line.is_empty() {
                    self.open_line();
                    let mut runs = Vec::new();
                    code::highlight(&lang, line, |piece, mark| runs.push((piece, mark)));
                    for (piece, mark) in runs {
                        self.push_text(piece, mark);
                    }
                }
                if lines.peek().is_some() {
                    self.end_line(Wrap::Cells);
                }
            }
            return;
        }
        let mark = self.mark();
        let mut lines = text.split('\n').peekable();
        while let Some(line) = lines.next() {
            if !line.is_empty() {
                self.push_text(line, mark);
            }
            if lines.peek().is_some() {
                self.end_line(Wrap::Words);
            }
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => self.text(&t),
            Event::Code(t) => {
                let mark = self.mark().with(Mark::CODE);
                match &mut self.table {
                    Some(table) => {
                        if let Some(cell) = table.rows.last_mut().and_then(|r| r.last_mut()) {
                            cell.push(&sanitize::line(&t), mark);
                        }
                    }
                    None => self.push_text(&sanitize::line(&t), mark),
                }
            }
            Event::InlineMath(t) | Event::DisplayMath(t) => self.text(&t),
            // shown as written: an agent's HTML is text to an operator
            Event::Html(t) => {
                for line in t.lines() {
                    self.text(line);
                    self.end_line(Wrap::Words);
                }
            }
            Event::InlineHtml(t) => self.text(&t),
            Event::FootnoteReference(t) => {
                let mark = self.mark().with(Mark::MUTED);
                self.push_text(&format!("[^{}]", sanitize::line(&t)), mark);
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(table) = &mut self.table {
                    if let Some(cell) = table.rows.last_mut().and_then(|r| r.last_mut()) {
                        cell.push(" ", Mark::PLAIN);
                    }
                } else {
                    self.end_line(Wrap::Words);
                }
            }
            Event::Rule => {
                self.space();
                self.push_text(&"─".repeat(24), Mark::MUTED);
                self.end_line(Wrap::Cells);
            }
            Event::TaskListMarker(done) => {
                let mark = Mark::MUTED;
                self.push_text(if done { "[x] " } else { "[ ] " }, mark);
            }
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph => self.space(),
            Tag::Heading { level, .. } => {
                self.space();
                self.heading = Some(level);
            }
            Tag::BlockQuote(_) => {
                self.space();
                self.containers.push(Container::Quote);
            }
            Tag::CodeBlock(kind) => {
                self.space();
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split(|c: char| c.is_whitespace() || c == ',' || c == '{')
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase(),
                    CodeBlockKind::Indented => String::new(),
                };
                self.code = Some(lang);
            }
            Tag::HtmlBlock => self.space(),
            Tag::List(start) => {
                if !self
                    .containers
                    .iter()
                    .any(|c| matches!(c, Container::Item { .. }))
                {
                    self.space();
                } else if self.open {
                    self.end_line(Wrap::Words);
                }
                self.containers.push(Container::List { next: start });
            }
            Tag::Item => {
                if self.open {
                    self.end_line(Wrap::Words);
                }
                let depth = self
                    .containers
                    .iter()
                    .filter(|c| matches!(c, Container::List { .. }))
                    .count();
                let marker = match self.containers.last_mut() {
                    Some(Container::List { next: Some(n) }) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => match depth {
                        0 | 1 => "• ".to_string(),
                        2 => "◦ ".to_string(),
                        _ => "▪ ".to_string(),
                    },
                };
                self.containers.push(Container::Item {
                    marker,
                    first: true,
                });
            }
            Tag::FootnoteDefinition(label) => {
                self.space();
                let mark = Mark::MUTED;
                self.push_text(&format!("[^{}]: ", sanitize::line(&label)), mark);
            }
            Tag::DefinitionList | Tag::DefinitionListTitle | Tag::DefinitionListDefinition => {
                self.space()
            }
            Tag::Table(aligns) => {
                self.space();
                self.table = Some(Table {
                    aligns,
                    ..Table::default()
                });
            }
            Tag::TableHead => {
                if let Some(t) = &mut self.table {
                    t.in_head = true;
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableRow => {
                if let Some(t) = &mut self.table {
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableCell => {
                if let Some(row) = self.table.as_mut().and_then(|t| t.rows.last_mut()) {
                    row.push(Cell::default());
                }
            }
            Tag::Emphasis => self.emph += 1,
            Tag::Strong => self.strong += 1,
            Tag::Strikethrough => self.strike += 1,
            Tag::Superscript | Tag::Subscript => {}
            Tag::Link { dest_url, .. } => {
                self.links.push(sanitize::line(&dest_url));
                self.link_start = self.laid.text.len();
            }
            Tag::Image { dest_url, .. } => {
                self.image += 1;
                let mark = self.mark();
                self.push_text("[image: ", mark);
                self.links.push(sanitize::line(&dest_url));
                self.link_start = self.laid.text.len();
            }
            Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::HtmlBlock => {
                if self.open {
                    self.end_line(Wrap::Words);
                }
            }
            TagEnd::Heading(_) => {
                self.heading = None;
                self.end_line(Wrap::Words);
            }
            TagEnd::BlockQuote(_) => {
                if self.open {
                    self.end_line(Wrap::Words);
                }
                self.containers.pop();
            }
            TagEnd::CodeBlock => {
                if self.open {
                    self.end_line(Wrap::Cells);
                }
                self.code = None;
            }
            TagEnd::List(_) => {
                if self.open {
                    self.end_line(Wrap::Words);
                }
                self.containers.pop();
            }
            TagEnd::Item => {
                // an empty item still shows its bullet
                if matches!(
                    self.containers.last(),
                    Some(Container::Item { first: true, .. })
                ) {
                    self.open_line();
                }
                if self.open {
                    self.end_line(Wrap::Words);
                }
                self.containers.pop();
            }
            TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition => {
                if self.open {
                    self.end_line(Wrap::Words);
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    self.table(table);
                }
            }
            TagEnd::TableHead => {
                if let Some(t) = &mut self.table {
                    t.in_head = false;
                    t.head_rows = t.rows.len();
                }
            }
            TagEnd::TableRow | TagEnd::TableCell => {}
            TagEnd::Emphasis => self.emph = self.emph.saturating_sub(1),
            TagEnd::Strong => self.strong = self.strong.saturating_sub(1),
            TagEnd::Strikethrough => self.strike = self.strike.saturating_sub(1),
            TagEnd::Superscript | TagEnd::Subscript => {}
            TagEnd::Link => {
                if let Some(url) = self.links.pop() {
                    let shown = self.laid.text.get(self.link_start..).unwrap_or("");
                    let bare = url.strip_prefix("mailto:").unwrap_or(&url);
                    if !url.is_empty() && shown != url && shown != bare {
                        let mark = self.mark().with(Mark::MUTED);
                        self.push_text(&format!(" ({url})"), mark);
                    }
                }
            }
            TagEnd::Image => {
                self.links.pop();
                let mark = self.mark();
                self.push_text("]", mark);
                self.image = self.image.saturating_sub(1);
            }
            TagEnd::MetadataBlock(_) => {}
        }
    }

    /// A table: each column as wide as its widest cell, aligned as the table says, `│`
    /// between columns, a rule under its head.
    fn table(&mut self, table: Table) {
        let columns = table.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &table.rows {
            for (c, cell) in row.iter().enumerate() {
                widths[c] = widths[c].max(width(&cell.text));
            }
        }
        for (r, row) in table.rows.iter().enumerate() {
            for (c, w) in widths.iter().enumerate() {
                if c > 0 {
                    self.push_text(" │ ", Mark::MUTED);
                }
                let (text, marks) = row
                    .get(c)
                    .map_or(("", &[][..]), |cell| (cell.text.as_str(), &cell.marks[..]));
                let pad = w.saturating_sub(width(text));
                let (before, after) = match table.aligns.get(c) {
                    Some(Alignment::Right) => (pad, 0),
                    Some(Alignment::Center) => (pad / 2, pad - pad / 2),
                    _ => (0, pad),
                };
                if before > 0 {
                    self.push_text(&" ".repeat(before), Mark::PLAIN);
                }
                let mut at = 0;
                for &(end, mark) in marks {
                    let end = end as usize;
                    if let Some(piece) = text.get(at..end) {
                        self.push_text(piece, mark);
                    }
                    at = end;
                }
                // the last column's padding would only be trailing spaces
                if after > 0 && c + 1 < columns {
                    self.push_text(&" ".repeat(after), Mark::PLAIN);
                }
            }
            self.end_line(Wrap::Cells);
            if r + 1 == table.head_rows {
                let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
                self.push_text(&rule.join("─┼─"), Mark::MUTED);
                self.end_line(Wrap::Cells);
            }
        }
    }

    fn finish(mut self) -> Laid {
        if let Some(table) = self.table.take() {
            self.table(table);
        }
        if self.open {
            self.end_line(if self.code.is_some() {
                Wrap::Cells
            } else {
                Wrap::Words
            });
        }
        // no blank line at the end
        while self.laid.lines.len() > 1 && {
            let k = self.laid.lines.len() - 1;
            self.line_len(k) == 0 && self.laid.lines[k].head == 0
        } {
            self.laid.lines.pop();
        }
        let kept = self.laid.lines.len();
        self.laid.long.retain(|l| (l.k as usize) < kept);
        self.laid
            .long
            .sort_unstable_by_key(|l| (std::cmp::Reverse(l.width), l.k));
        self.laid
    }
}

#[cfg(test)]
mod tests;
