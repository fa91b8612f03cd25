//! An attached session's transcript: every stored message (paged in from the store, no cap),
//! live deltas applied as they come, follow mode, wrap, timestamps, folded tool calls, and the
//! composer; and how it becomes lines on screen, fast at any length.
//!
//! **Drawing a million lines in a few hundred microseconds.** A frame needs only the lines on
//! screen, but finding them means knowing how many lines every message before them takes. So:
//!
//! - each message has a [`Shape`]: the widths in cells of its text lines once sanitised (and,
//!   for a line with chars two cells wide, where they fall), which is all its line count
//!   depends on at any width, wrap or fold. Shapes are computed in the update path, when a
//!   message is merged or a delta applied (never per frame), so they are always current: the
//!   messages are private and change only through [`Transcript::merge`] and
//!   [`Transcript::apply_delta`];
//! - the line counts for the current width, wrap and fold sit in a Fenwick tree, so the
//!   message holding line N is found in O(log messages), and a changed message costs
//!   O(log messages) to account for. A new width (a resize, wrap toggled) recounts every
//!   message from its shape, looking only at the lines too long for it; no text is touched;
//! - only the messages on screen are drawn, and their lines are kept for the next frame.
//!
//! A search ([`Transcript::search`], [`Transcript::next_match`]) finds its hits the same way:
//! in each message's text, wrapped but never drawn, kept per message until it changes; the
//! window marks the matches on the lines it returns.
//!
//! The width is known only when drawing, so the counts and the drawn lines are memoised by
//! [`Transcript::window`] from `&self`, behind a `Cell` (taken and put back: no borrow can
//! fail). The memo is keyed by everything it depends on (the width, the flags, the theme, and
//! a revision per message that changes whenever the message does), so what is drawn is still a
//! pure function of the state; the memo only makes it cheap.

use super::cells::{clusters, truncate, wrap};
use super::theme::Theme;
use crate::core::ingest::LiveDelta;
use crate::model::{Message, MessageRole, MessageStatus, Part, ToolStatus};
use crate::sanitize;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui_textarea::TextArea;
use std::borrow::Cow;
use std::cell::Cell;
use std::ops::Range;
use uuid::Uuid;

pub struct Transcript {
    pub session: Uuid,
    /// In seq order.
    messages: Vec<Message>,
    /// One per message, in the same order.
    shapes: Vec<Shape>,
    /// The next message revision (see [`Shape::rev`]).
    next_rev: u64,
    /// Whether the whole history has been read from the store yet.
    pub loaded: bool,
    /// Stick to the bottom as new text arrives; stops when the operator scrolls up.
    pub follow: bool,
    /// First line shown (when not following).
    pub scroll: usize,
    pub wrap: bool,
    pub timestamps: bool,
    pub tools_open: bool,
    pub composer: Option<TextArea<'static>>,
    /// What [`Transcript::search`] looks for, and the hit last moved to.
    search: Option<Search>,
    /// The memo behind [`Transcript::window`].
    memo: Cell<Memo>,
}

/// The lines a frame shows: `lines` are the lines `top..` (at most the height asked for) of
/// `total`.
pub struct Window {
    pub total: usize,
    pub top: usize,
    pub lines: Vec<Line<'static>>,
}

impl Transcript {
    pub fn new(session: Uuid) -> Self {
        Transcript {
            session,
            messages: Vec::new(),
            shapes: Vec::new(),
            next_rev: 0,
            loaded: false,
            follow: true,
            scroll: 0,
            wrap: true,
            timestamps: false,
            tools_open: false,
            composer: None,
            search: None,
            memo: Cell::new(Memo::default()),
        }
    }

    /// The messages held, in seq order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    fn shape(&mut self, i: usize) -> Shape {
        self.next_rev += 1;
        Shape::of(&self.messages[i], self.next_rev)
    }

    /// Adds or replaces messages (by seq).
    pub fn merge(&mut self, messages: Vec<Message>) {
        for m in messages {
            match self.messages.binary_search_by_key(&m.seq, |x| x.seq) {
                Ok(i) => {
                    self.messages[i] = m;
                    self.shapes[i] = self.shape(i);
                    self.memo.get_mut().changed(i);
                }
                Err(i) => {
                    self.messages.insert(i, m);
                    let shape = self.shape(i);
                    self.shapes.insert(i, shape);
                    self.memo.get_mut().inserted(i, self.messages.len());
                }
            }
        }
    }

    /// The highest seq held.
    pub fn last_seq(&self) -> i64 {
        self.messages.last().map_or(0, |m| m.seq)
    }

    /// Applies streamed text to the message it belongs to (the stored copy catches up later).
    pub fn apply_delta(&mut self, delta: &LiveDelta) -> bool {
        let Ok(i) = self.messages.binary_search_by_key(&delta.seq, |m| m.seq) else {
            return false;
        };
        let parts = &mut self.messages[i].parts;
        let mut grew = false;
        while parts.len() <= delta.part {
            parts.push(Part::text(""));
            grew = true;
        }
        let applied = match &mut parts[delta.part] {
            Part::Text { text } | Part::Reasoning { text } => {
                text.push_str(&delta.text);
                true
            }
            _ => false,
        };
        if applied || grew {
            // Streamed text only appends: re-measure the piece's last line, not the message
            // (whose text may be long), when that is sure to come out the same.
            self.next_rev += 1;
            let id = to_u32(delta.part + 1).saturating_mul(4);
            if grew || !self.shapes[i].append(id, &delta.text, self.next_rev) {
                self.shapes[i] = self.shape(i);
            }
            self.memo.get_mut().changed(i);
        }
        applied
    }

    pub fn open_composer(&mut self) {
        if self.composer.is_none() {
            let mut area = TextArea::default();
            area.set_placeholder_text("Message the agent (ctrl-s sends; esc keeps it as a draft)");
            self.composer = Some(area);
        }
    }

    /// Opens the composer holding `text` (a draft, or a message the store did not take), the
    /// cursor at its end.
    pub fn open_composer_with(&mut self, text: &str) {
        self.open_composer();
        if let Some(area) = &mut self.composer {
            area.insert_str(text);
        }
    }

    /// How the transcript is drawn `width` columns wide with `theme`.
    pub fn look<'a>(&self, width: u16, theme: &'a Theme) -> Look<'a> {
        Look {
            width: usize::from(width.max(10)),
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
            theme,
        }
    }

    /// The lines a `height`-line frame `width` columns wide shows: the last ones when
    /// following, else from `scroll` (kept within the transcript). The same lines as drawing
    /// every message with [`message_lines`] and taking that window, at a cost that depends on
    /// the window, not on the transcript's length.
    pub fn window(&self, width: u16, theme: &Theme, height: usize) -> Window {
        let look = self.look(width, theme);
        let mut memo = self.memo.take();
        memo.count(look.fit(), &self.shapes);
        let total = memo.tree.total();
        let max_top = total.saturating_sub(height);
        let top = if self.follow {
            max_top
        } else {
            self.scroll.min(max_top)
        };
        if !memo.drawn_look.as_ref().is_some_and(|k| look.drew(k)) {
            memo.drawn.clear();
            memo.drawn_look = Some(look.key());
        }
        let search = self.search.as_ref();
        memo.emphasis = search
            .and_then(|s| s.emphasis(memo.emphasis.take(), &self.messages, &self.shapes, &look));
        let mut lines = Vec::with_capacity(height.min(total - top));
        let mut drawn = Vec::new();
        if top < total {
            let (mut i, mut skip) = memo.tree.find(top);
            while lines.len() < height && i < self.messages.len() {
                let rev = self.shapes[i].rev;
                let message = match memo.drawn.iter().position(|d| d.rev == rev) {
                    Some(at) => memo.drawn.swap_remove(at),
                    None => {
                        let mut out = Vec::with_capacity(memo.counts[i]);
                        message_lines(&self.messages[i], &look, &mut out);
                        Drawn { rev, lines: out }
                    }
                };
                let want = height - lines.len();
                let shown = message.lines.iter().enumerate().skip(skip).take(want);
                match search {
                    None => lines.extend(shown.map(|(_, line)| line.clone())),
                    Some(search) => {
                        let current = memo.emphasis.as_ref().filter(|e| e.message == i);
                        lines.extend(shown.map(|(k, line)| {
                            let current = current.into_iter().flat_map(|e| e.on(k));
                            search.highlight(line, current, theme)
                        }));
                    }
                }
                drawn.push(message);
                skip = 0;
                i += 1;
            }
        }
        memo.drawn = drawn;
        memo.shown = Some(Shown {
            top,
            total,
            height,
            width,
        });
        self.memo.set(memo);
        Window { total, top, lines }
    }

    /// Where the last frame drawn was: its first line, the transcript's length and the
    /// frame's height (`None` before the first frame). For scrolling from what is on screen:
    /// leaving follow mode at the line shown, and following again at the bottom.
    pub fn shown(&self) -> Option<Shown> {
        let memo = self.memo.take();
        let shown = memo.shown;
        self.memo.set(memo);
        shown
    }

    /// Looks for `query` in the transcript, or stops looking when it is empty. It is matched
    /// in the text as drawn (sanitised, tabs expanded; tool call details only when unfolded;
    /// headers and tool, file and patch lines too, but not the indents), in smart case: exact
    /// when the query has an uppercase letter, else ignoring case. [`Transcript::window`]
    /// marks the matches, and [`Transcript::next_match`] moves from one to the next. The same
    /// query again keeps the hit moved to.
    pub fn search(&mut self, query: &str) {
        if query.is_empty() {
            self.search = None;
        } else if self.search_query() != Some(query) {
            self.search = Some(Search {
                matcher: Matcher::new(query),
                current: None,
                hits: Vec::new(),
                hits_look: None,
            });
        }
    }

    /// What is being looked for, if anything.
    pub fn search_query(&self) -> Option<&str> {
        self.search.as_ref().map(|s| s.matcher.query.as_str())
    }

    /// Moves to the next line with a match (`forward`), or the previous one, as drawn in a
    /// `height`-line frame `width` columns wide, wrapping around the ends; `None` when nothing
    /// matches (or nothing is looked for). From the hit last moved to, or else from the last
    /// frame shown: forward from its top line, backward from its bottom line (both
    /// included). Stops following, and scrolls so that the hit is a third of the way down.
    ///
    /// A hit is a line where a match starts: one with several matches is one hit, and a match
    /// that wraps onto the next line is found on the line where it starts (a match never spans
    /// two lines of the text itself). Matches are found by scanning each message's text (and
    /// drawing only its lines that never wrap: header, tool calls, files, patches); no line of
    /// text is drawn. What is found is kept, per message, for the next move, until the
    /// message, the look or the query changes.
    pub fn next_match(
        &mut self,
        width: u16,
        theme: &Theme,
        height: usize,
        forward: bool,
    ) -> Option<SearchHit> {
        let mut search = self.search.take()?;
        let look = self.look(width, theme);
        let mut memo = self.memo.take();
        memo.count(look.fit(), &self.shapes);
        search.refresh(&self.messages, &self.shapes, &look);
        let lines = memo.tree.total();
        // where to look from, and whether a hit there counts
        let here = search.current.and_then(|a| {
            let i = self.messages.binary_search_by_key(&a.seq, |m| m.seq).ok()?;
            let base = memo.tree.prefix(i);
            let hits = &search.hits.get(i)?.lines;
            Some(match hits.iter().rev().find(|(_, spot)| *spot <= a.spot) {
                Some(&(line, _)) => (base + line as usize, false),
                None => (base, true),
            })
        });
        let (at, inclusive) = here.unwrap_or(match memo.shown {
            Some(s) if forward => (s.top, true),
            Some(s) => ((s.top + s.height).min(lines).saturating_sub(1), true),
            None if forward => (0, true),
            None => (lines.saturating_sub(1), true),
        });
        // (line, message, spot, index) of the first and last hits, and of the one moved to
        let mut first = None;
        let mut last = None;
        let mut found = None;
        let mut total = 0;
        let mut base = 0;
        for (i, hits) in search.hits.iter().enumerate() {
            for &(line, spot) in &hits.lines {
                let line = base + line as usize;
                total += 1;
                let hit = (line, i, spot, total);
                first.get_or_insert(hit);
                last = Some(hit);
                if forward && (line > at || inclusive && line == at) {
                    found.get_or_insert(hit);
                }
                if !forward && (line < at || inclusive && line == at) {
                    found = Some(hit);
                }
            }
            base += memo.counts.get(i).copied().unwrap_or(0);
        }
        let hit = found.or(if forward { first } else { last });
        if let Some((line, i, spot, _)) = hit {
            search.current = self.messages.get(i).map(|m| Anchor { seq: m.seq, spot });
            self.follow = false;
            self.scroll = line
                .saturating_sub(height / 3)
                .min(lines.saturating_sub(height));
        }
        self.memo.set(memo);
        self.search = Some(search);
        hit.map(|(line, _, _, index)| SearchHit { line, index, total })
    }
}

/// Where [`Transcript::next_match`] moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchHit {
    /// The hit's line, as [`Transcript::window`] numbers them (from 0).
    pub line: usize,
    /// Which hit it is, from 1, in transcript order.
    pub index: usize,
    /// How many hits there are (lines where a match starts).
    pub total: usize,
}

/// See [`Transcript::shown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    pub top: usize,
    pub total: usize,
    pub height: usize,
    /// The width asked for (columns).
    pub width: u16,
}

/// Everything besides a message that its lines depend on.
pub struct Look<'a> {
    /// Columns (at least 10).
    pub width: usize,
    pub wrap: bool,
    pub timestamps: bool,
    pub tools_open: bool,
    pub theme: &'a Theme,
}

impl Look<'_> {
    /// What line counts depend on: the width only when wrapping; not timestamps or the theme.
    fn fit(&self) -> Fit {
        Fit {
            width: if self.wrap { self.width } else { 0 },
            wrap: self.wrap,
            tools_open: self.tools_open,
        }
    }

    /// Whether lines drawn with `key` are what this look draws.
    fn drew(&self, key: &LookKey) -> bool {
        self.width == key.width
            && self.wrap == key.wrap
            && self.timestamps == key.timestamps
            && self.tools_open == key.tools_open
            && *self.theme == key.theme
    }

    /// What the text of the lines depends on (not the theme).
    fn text_look(&self) -> TextLook {
        TextLook {
            width: self.width,
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
        }
    }

    fn key(&self) -> LookKey {
        LookKey {
            width: self.width,
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
            theme: self.theme.clone(),
        }
    }
}

/// A [`Look`] without the theme: what the text of the lines depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TextLook {
    width: usize,
    wrap: bool,
    timestamps: bool,
    tools_open: bool,
}

/// A [`Look`] kept: what the memo's drawn lines were drawn with.
struct LookKey {
    width: usize,
    wrap: bool,
    timestamps: bool,
    tools_open: bool,
    theme: Theme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fit {
    width: usize,
    wrap: bool,
    tools_open: bool,
}

/// How a piece of text is set: its indent and style, and whether it shows only with tool
/// calls unfolded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Reasoning,
    ToolIn,
    ToolOut,
    ToolErr,
}

const KINDS: [Kind; 5] = [
    Kind::Text,
    Kind::Reasoning,
    Kind::ToolIn,
    Kind::ToolOut,
    Kind::ToolErr,
];

impl Kind {
    fn indent(self) -> &'static str {
        match self {
            Kind::Text => "  ",
            Kind::Reasoning => "  ~ ",
            Kind::ToolIn => "    in  ",
            Kind::ToolOut => "    out ",
            Kind::ToolErr => "    err ",
        }
    }

    fn style(self, theme: &Theme) -> Style {
        match self {
            Kind::Text => theme.assistant,
            Kind::Reasoning => theme.muted.add_modifier(Modifier::ITALIC),
            Kind::ToolIn => theme.muted,
            Kind::ToolOut => theme.text,
            Kind::ToolErr => theme.error,
        }
    }

    fn folded(self) -> bool {
        matches!(self, Kind::ToolIn | Kind::ToolOut | Kind::ToolErr)
    }
}

/// A message, in the order it is drawn: lines that never wrap, and text that may.
enum Piece<'a> {
    Header,
    Tool {
        tool: &'a str,
        status: &'a ToolStatus,
        input: &'a serde_json::Value,
    },
    File(&'a str),
    Patch(&'a [String]),
    Text(Kind, Cow<'a, str>),
    Blank,
}

/// Walks a message's pieces; the unfolded details of tool calls only when `details`. Each
/// comes with an id that says which it is whatever is folded, in drawing order: 0 for the
/// header, `4 * (p + 1)` for part `p`, plus 1, 2 or 3 for a tool call's input, output or error.
fn pieces<'a>(m: &'a Message, details: bool, mut visit: impl FnMut(u32, Piece<'a>)) {
    visit(0, Piece::Header);
    for (p, part) in m.parts.iter().enumerate() {
        let id = to_u32(p + 1).saturating_mul(4);
        match part {
            Part::Text { text } => visit(id, Piece::Text(Kind::Text, Cow::Borrowed(text))),
            Part::Reasoning { text } => {
                visit(id, Piece::Text(Kind::Reasoning, Cow::Borrowed(text)))
            }
            Part::Tool {
                tool,
                status,
                input,
                output,
                error,
                ..
            } => {
                visit(
                    id,
                    Piece::Tool {
                        tool,
                        status,
                        input,
                    },
                );
                if details {
                    let pretty = serde_json::to_string_pretty(input).unwrap_or_default();
                    visit(id + 1, Piece::Text(Kind::ToolIn, Cow::Owned(pretty)));
                    if let Some(o) = output {
                        visit(id + 2, Piece::Text(Kind::ToolOut, Cow::Borrowed(o)));
                    }
                    if let Some(e) = error {
                        visit(id + 3, Piece::Text(Kind::ToolErr, Cow::Borrowed(e)));
                    }
                }
            }
            Part::File { path, url, .. } => visit(
                id,
                Piece::File(path.as_deref().or(url.as_deref()).unwrap_or("file")),
            ),
            Part::Patch { files } => visit(id, Piece::Patch(files)),
            Part::Other(_) => {}
        }
    }
    visit(to_u32(m.parts.len() + 1).saturating_mul(4), Piece::Blank);
}

/// One message as lines (sanitised), appended to `out`.
pub fn message_lines(m: &Message, look: &Look<'_>, out: &mut Vec<Line<'static>>) {
    pieces(m, look.tools_open, |_, piece| {
        draw_piece(m, look, piece, out)
    });
}

#[cfg(test)]
thread_local! {
    /// Text lines drawn by this thread (tests check what a search draws).
    static TEXT_LINES_DRAWN: Cell<usize> = const { Cell::new(0) };
}

/// One piece of a message as lines, appended to `out`.
fn draw_piece(m: &Message, look: &Look<'_>, piece: Piece<'_>, out: &mut Vec<Line<'static>>) {
    let theme = look.theme;
    let width = look.width;
    match piece {
        Piece::Header => {
            let (who, style) = match m.role {
                MessageRole::User => ("> you", theme.user),
                MessageRole::Assistant => ("< agent", theme.accent),
                MessageRole::System => ("# agentdeck", theme.muted),
            };
            let mut head = vec![
                Span::styled(who.to_string(), style),
                Span::styled(format!("  #{}", m.seq), theme.muted),
            ];
            if look.timestamps {
                head.push(Span::styled(
                    format!("  {}", m.created_at.format("%H:%M:%S")),
                    theme.muted,
                ));
            }
            match m.status {
                MessageStatus::Pending if m.role == MessageRole::User => {
                    head.push(Span::styled("  (sending…)", theme.warning))
                }
                MessageStatus::Pending => head.push(Span::styled("  (streaming…)", theme.muted)),
                MessageStatus::Failed => head.push(Span::styled(
                    format!(
                        "  FAILED: {}",
                        sanitize::line(m.error.as_deref().unwrap_or("no reason given"))
                    ),
                    theme.error,
                )),
                MessageStatus::Aborted => {
                    head.push(Span::styled("  stopped (aborted)", theme.warning))
                }
                MessageStatus::Complete => {}
            }
            out.push(Line::from(head));
        }
        Piece::Tool {
            tool,
            status,
            input,
        } => {
            let mark = match status {
                ToolStatus::Completed => "done",
                ToolStatus::Running => "running",
                ToolStatus::Pending => "pending",
                ToolStatus::Error => "ERROR",
            };
            let summary = input
                .get("command")
                .and_then(|c| c.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| input.to_string());
            let fold = if look.tools_open { "" } else { "  (o unfolds)" };
            out.push(Line::from(vec![
                Span::styled(format!("  [{} {mark}] ", sanitize::line(tool)), theme.tool),
                Span::raw(
                    truncate(&sanitize::line(&summary), width.saturating_sub(20)).to_string(),
                ),
                Span::styled(fold, theme.muted),
            ]));
        }
        Piece::File(name) => out.push(Line::from(Span::styled(
            format!("  [file] {}", sanitize::line(name)),
            theme.tool,
        ))),
        Piece::Patch(files) => out.push(Line::from(Span::styled(
            format!("  [patch] {}", sanitize::line(&files.join(", "))),
            theme.tool,
        ))),
        Piece::Text(kind, text) => {
            let indent = kind.indent();
            let style = kind.style(theme);
            #[cfg(test)]
            let before = out.len();
            for raw in as_drawn(&text).lines() {
                if look.wrap {
                    let room = width.saturating_sub(indent.len()).max(1);
                    if raw.is_empty() {
                        out.push(Line::from(""));
                        continue;
                    }
                    wrap(raw, room, |piece| {
                        out.push(Line::from(vec![
                            Span::raw(indent.to_string()),
                            Span::styled(raw[piece].to_string(), style),
                        ]))
                    });
                } else {
                    out.push(Line::from(vec![
                        Span::raw(indent.to_string()),
                        Span::styled(raw.to_string(), style),
                    ]));
                }
            }
            #[cfg(test)]
            TEXT_LINES_DRAWN.with(|n| n.set(n.get() + out.len() - before));
        }
        Piece::Blank => out.push(Line::from("")),
    }
}

/// Text as drawn: sanitised, tabs expanded to four spaces (borrowed when that changes
/// nothing).
fn as_drawn(text: &str) -> Cow<'_, str> {
    drawn_and_clean(text).0
}

/// [`as_drawn`], and whether the sanitiser left the text as it was.
fn drawn_and_clean(text: &str) -> (Cow<'_, str>, bool) {
    let sanitized = sanitize::text(text);
    let clean = matches!(sanitized, Cow::Borrowed(_));
    if sanitized.contains('\t') {
        (Cow::Owned(sanitized.replace('\t', "    ")), clean)
    } else {
        (sanitized, clean)
    }
}

/// What a message's line count depends on, at any width, wrap or fold: how many lines never
/// wrap, and the width in cells of every text line (once sanitised, tabs expanded), longest
/// first in each piece of text (a count needs no order). Where a line breaks depends only on
/// its width when every char in it is one cell (or none) wide; a line with wider chars also
/// keeps the widths of its clusters, run-length coded, to count its breaks by.
struct Shape {
    /// Changes whenever the message does (unique over the transcript's life): the key of its
    /// drawn lines.
    rev: u64,
    /// Lines that never wrap (header, tool calls, files, patches, the blank line after).
    fixed: usize,
    /// The text pieces, in order.
    blocks: Vec<Block>,
    /// The widths of the text lines with no wide char, longest first in each block.
    narrow: Vec<u32>,
    /// The text lines with a wide char, longest first in each block.
    wide: Vec<Wide>,
    /// The clusters of the `wide` lines.
    runs: Vec<Run>,
}

/// A piece of text in a [`Shape`]: which piece, how it is set, how many of the shape's
/// `narrow` and `wide` lines are its, and its last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    id: u32,
    kind: Kind,
    narrow: usize,
    wide: usize,
    tail: Tail,
}

/// The last line of a piece's text, as far as text appended to it needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// The text is empty or ends with a newline: what comes next starts a new line.
    Empty,
    /// A line of plain text this many cells wide (counted among the block's `narrow`), in a
    /// text with nothing the sanitiser removes (so no escape sequence is left open).
    Narrow(u32),
    /// Anything else: appending means measuring the whole text again.
    Unknown,
}

impl Tail {
    /// The last line of `drawn`, the text as drawn; `clean` when the sanitiser removed
    /// nothing from it. A narrow last line must end in an ASCII char, so that nothing
    /// appended can join its last cluster.
    fn of(drawn: &str, clean: bool) -> Tail {
        if !clean {
            return Tail::Unknown;
        }
        if drawn.is_empty() || drawn.ends_with('\n') {
            return Tail::Empty;
        }
        let last = drawn.rsplit('\n').next().unwrap_or("");
        if last.is_ascii() {
            return Tail::Narrow(to_u32(last.len()));
        }
        if !last.ends_with(|c: char| c.is_ascii()) {
            return Tail::Unknown;
        }
        let mut width = 0;
        for (_, w) in clusters(last) {
            if w > 1 {
                return Tail::Unknown;
            }
            width += w;
        }
        Tail::Narrow(to_u32(width))
    }
}

/// The width of a line's worth of appended text as drawn, when it is plain: printable ASCII
/// (a tab is drawn as four spaces), or chars one cell wide with nothing the sanitiser removes.
/// Text that goes on a line (`joins`) must start with an ASCII char, which starts a cluster of
/// its own. `None` otherwise.
fn plain_width(text: &str, joins: bool) -> Option<u32> {
    if text.is_ascii() {
        let mut width = 0u32;
        for b in text.bytes() {
            width = width.saturating_add(match b {
                b'\t' => 4,
                0x20..=0x7e => 1,
                _ => return None,
            });
        }
        return Some(width);
    }
    if (joins && !text.starts_with(|c: char| c.is_ascii()))
        || text.contains('\t')
        || !matches!(sanitize::text(text), Cow::Borrowed(_))
    {
        return None;
    }
    let mut width = 0;
    for (_, w) in clusters(text) {
        if w > 1 {
            return None;
        }
        width += w;
    }
    Some(to_u32(width))
}

/// A line with a char wider than one cell: its width, and its clusters (`runs[from..to]`).
struct Wide {
    width: u32,
    from: u32,
    to: u32,
}

/// `n` clusters in a row, each `width` cells wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    width: u32,
    n: u32,
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Shape {
    fn of(m: &Message, rev: u64) -> Shape {
        let mut shape = Shape {
            rev,
            fixed: 0,
            blocks: Vec::new(),
            narrow: Vec::new(),
            wide: Vec::new(),
            runs: Vec::new(),
        };
        pieces(m, true, |id, piece| match piece {
            Piece::Text(kind, text) => {
                let (narrow, wide) = (shape.narrow.len(), shape.wide.len());
                let (drawn, clean) = drawn_and_clean(&text);
                for raw in drawn.lines() {
                    shape.line(raw);
                }
                shape.narrow[narrow..].sort_unstable_by(|a, b| b.cmp(a));
                shape.wide[wide..].sort_unstable_by_key(|w| std::cmp::Reverse(w.width));
                shape.blocks.push(Block {
                    id,
                    kind,
                    narrow: shape.narrow.len() - narrow,
                    wide: shape.wide.len() - wide,
                    tail: Tail::of(&drawn, clean),
                });
            }
            _ => shape.fixed += 1,
        });
        shape
    }

    /// Takes in `text` appended to piece `id` without measuring the piece again: its last line
    /// grows, and the lines after it are new. Only for plain text after a known last line;
    /// `false` (nothing changed) otherwise, and the caller measures the message again.
    fn append(&mut self, id: u32, text: &str, rev: u64) -> bool {
        let Some(b) = self.blocks.iter().position(|b| b.id == id) else {
            return false;
        };
        let tail = match self.blocks[b].tail {
            Tail::Empty => None,
            Tail::Narrow(w) => Some(w),
            Tail::Unknown => return false,
        };
        let mut widths = Vec::new();
        let mut last_ascii = true;
        for (k, segment) in text.split('\n').enumerate() {
            match plain_width(segment, k == 0 && tail.is_some()) {
                Some(w) => widths.push(w),
                None => return false,
            }
            if !segment.is_empty() {
                last_ascii = segment.ends_with(|c: char| c.is_ascii());
            }
        }
        let start: usize = self.blocks[..b].iter().map(|b| b.narrow).sum();
        if let Some(w) = tail {
            let block = &self.narrow[start..start + self.blocks[b].narrow];
            let at = block.partition_point(|&x| x > w);
            if block.get(at) != Some(&w) {
                return false;
            }
            self.narrow.remove(start + at);
            self.blocks[b].narrow -= 1;
        }
        // The old last line goes on with the first segment; each newline ends a line (empty or
        // not); what follows the last newline is the new last line, if it holds anything.
        widths[0] = widths[0].saturating_add(tail.unwrap_or(0));
        let last = widths.len() - 1;
        let new_tail = widths[last];
        for (k, &w) in widths.iter().enumerate() {
            if k == last && w == 0 && (k > 0 || tail.is_none()) {
                break;
            }
            let block = &self.narrow[start..start + self.blocks[b].narrow];
            let at = block.partition_point(|&x| x > w);
            self.narrow.insert(start + at, w);
            self.blocks[b].narrow += 1;
        }
        self.blocks[b].tail = if new_tail == 0 && (last > 0 || tail.is_none()) {
            Tail::Empty
        } else if last_ascii {
            Tail::Narrow(new_tail)
        } else {
            Tail::Unknown
        };
        self.rev = rev;
        true
    }

    /// Measures one text line (as drawn).
    fn line(&mut self, raw: &str) {
        if raw.is_ascii() {
            self.narrow.push(to_u32(raw.len()));
            return;
        }
        let from = self.runs.len();
        let mut width = 0;
        let mut wide = false;
        for (_, w) in clusters(raw) {
            // a cluster of width 0 (zero-width chars starting the line) never breaks it
            if w == 0 {
                continue;
            }
            width += w;
            wide |= w > 1;
            let w = to_u32(w);
            match self.runs[from..].last_mut() {
                Some(run) if run.width == w => run.n = run.n.saturating_add(1),
                _ => self.runs.push(Run { width: w, n: 1 }),
            }
        }
        if wide {
            self.wide.push(Wide {
                width: to_u32(width),
                from: to_u32(from),
                to: to_u32(self.runs.len()),
            });
        } else {
            self.runs.truncate(from);
            self.narrow.push(to_u32(width));
        }
    }

    /// Its line count: what [`message_lines`] makes of it.
    fn count(&self, fit: Fit) -> usize {
        let mut n = self.fixed;
        let mut narrow = self.narrow.as_slice();
        let mut wide = self.wide.as_slice();
        for block in &self.blocks {
            let (lines, rest) = narrow.split_at(block.narrow.min(narrow.len()));
            narrow = rest;
            let (wides, rest) = wide.split_at(block.wide.min(wide.len()));
            wide = rest;
            if block.kind.folded() && !fit.tools_open {
                continue;
            }
            n += lines.len() + wides.len();
            if !fit.wrap {
                continue;
            }
            // One line each, plus what the lines wider than the room wrap into: those come
            // first, so a count stops at the first line that fits (a resize recounts them all).
            let room = fit.width.saturating_sub(block.kind.indent().len()).max(1);
            for &l in lines {
                let l = l as usize;
                if l <= room {
                    break;
                }
                n += l.div_ceil(room) - 1;
            }
            for w in wides {
                if w.width as usize <= room {
                    break;
                }
                let runs = self.runs.get(w.from as usize..w.to as usize).unwrap_or(&[]);
                n += wrapped(runs, room) - 1;
            }
        }
        n
    }
}

/// How many lines [`wrap`] makes of a line of clusters `runs`, `room` cells wide: the same
/// walk, a run at a time.
fn wrapped(runs: &[Run], room: usize) -> usize {
    let mut lines = 1;
    let mut used = 0;
    for run in runs {
        let (width, n) = (run.width as usize, run.n as usize);
        if width == 0 || n == 0 {
            continue;
        }
        if width > room {
            // each on a line of its own
            lines += if used > 0 { n } else { n - 1 };
            used = width;
            continue;
        }
        let fit = room.saturating_sub(used) / width;
        if n <= fit {
            used += n * width;
            continue;
        }
        let rest = n - fit;
        let per_line = room / width;
        let more = rest.div_ceil(per_line);
        lines += more;
        used = (rest - (more - 1) * per_line) * width;
    }
    lines
}

/// A search: what is looked for, the hit last moved to, and the lines with a match.
struct Search {
    matcher: Matcher,
    /// The hit last moved to.
    current: Option<Anchor>,
    /// One per message (for `hits_look`): the lines where a match starts.
    hits: Vec<Hits>,
    hits_look: Option<TextLook>,
}

/// The lines of a message (from 0) where a match starts, each with the first match on it; for
/// the message's revision `rev`.
#[derive(Default)]
struct Hits {
    rev: u64,
    lines: Vec<(u32, Spot)>,
}

/// Where a match is in a message, whatever the look: the piece (see [`pieces`]), the line of
/// its text (0 for a piece of one line) and the byte it starts at. In drawing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Spot {
    piece: u32,
    row: u32,
    at: u32,
}

/// A hit: the message (by seq) and the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    seq: i64,
    spot: Spot,
}

/// The current hit's matches as drawn (kept from a frame to the next): those starting on the
/// hit's line, for what they were found with.
struct Emphasis {
    query: String,
    anchor: Anchor,
    look: TextLook,
    /// The message they are in, and its revision.
    message: usize,
    rev: u64,
    /// Where they are drawn: (line of the message, byte range of its text), by line.
    segments: Vec<(usize, Range<usize>)>,
}

impl Emphasis {
    /// The ranges on line `k` of the message.
    fn on(&self, k: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.segments
            .iter()
            .filter(move |(line, _)| *line == k)
            .map(|(_, range)| range.clone())
    }
}

impl Search {
    /// Brings `hits` up to date for `look`: only messages changed since are searched again.
    fn refresh(&mut self, messages: &[Message], shapes: &[Shape], look: &Look<'_>) {
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
            matches_in(m, look, &self.matcher, |spot, segments| {
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
    fn emphasis(
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
        matches_in(&messages[i], look, &self.matcher, |spot, found| {
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
        });
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
    fn highlight(
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
fn mark(line: &Line<'static>, marks: &[(Range<usize>, Style)]) -> Line<'static> {
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
fn matches_in(
    m: &Message,
    look: &Look<'_>,
    matcher: &Matcher,
    mut visit: impl FnMut(Spot, &[(usize, Range<usize>)]),
) {
    let mut line = 0;
    let mut drawn = Vec::new();
    let mut wrapped = Vec::new();
    let mut segments = Vec::new();
    pieces(m, look.tools_open, |piece, p| match p {
        Piece::Text(kind, text) => {
            let room = look.width.saturating_sub(kind.indent().len()).max(1);
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
            draw_piece(m, look, fixed, &mut drawn);
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
fn lines_of(raw: &str, wrapping: bool, room: usize) -> usize {
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
struct Matcher {
    query: String,
    exact: bool,
    /// The query's chars, folded.
    folded: Vec<char>,
}

/// A char lowercased, when that makes one char (not, say, 'İ', which makes two).
fn fold(c: char) -> char {
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
    fn new(query: &str) -> Matcher {
        Matcher {
            query: query.to_string(),
            exact: query.chars().any(char::is_uppercase),
            folded: query.chars().map(fold).collect(),
        }
    }

    /// The matches in `hay`, left to right, not overlapping, as byte ranges.
    fn find_all<'h>(&'h self, hay: &'h str) -> impl Iterator<Item = Range<usize>> + 'h {
        // ASCII in ASCII: byte by byte
        let bytes = !self.exact && self.query.is_ascii() && hay.is_ascii();
        let mut from = 0;
        std::iter::from_fn(move || {
            let found = self.find(hay, from, bytes)?;
            from = found.end;
            Some(found)
        })
    }

    fn find(&self, hay: &str, from: usize, bytes: bool) -> Option<Range<usize>> {
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

    fn find_folded(&self, hay: &str) -> Option<Range<usize>> {
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

/// Line counts per message for one [`Fit`], and a message's drawn lines kept from a frame to
/// the next.
#[derive(Default)]
struct Memo {
    /// What `counts` and `tree` hold; `None` until counted, and after a message was inserted
    /// before others.
    fit: Option<Fit>,
    counts: Vec<usize>,
    tree: Fenwick,
    /// Messages changed since they were counted (may repeat).
    dirty: Vec<usize>,
    /// How `drawn` was drawn.
    drawn_look: Option<LookKey>,
    /// The messages on screen in the last frame.
    drawn: Vec<Drawn>,
    /// The last frame's window.
    shown: Option<Shown>,
    /// The current search hit's matches, as drawn in the last frame.
    emphasis: Option<Emphasis>,
}

struct Drawn {
    rev: u64,
    lines: Vec<Line<'static>>,
}

impl Memo {
    fn changed(&mut self, i: usize) {
        if self.fit.is_some() && self.dirty.last() != Some(&i) {
            self.dirty.push(i);
        }
    }

    /// A message was inserted at `i`, making `len` in all.
    fn inserted(&mut self, i: usize, len: usize) {
        if self.fit.is_some() && i + 1 == len {
            // appended: the common case, a new message at the bottom
            self.counts.push(0);
            self.tree.push(0);
            self.dirty.push(i);
        } else {
            self.fit = None;
        }
    }

    /// Brings the counts up to date for `fit`.
    fn count(&mut self, fit: Fit, shapes: &[Shape]) {
        if self.fit == Some(fit) && self.counts.len() == shapes.len() {
            for i in std::mem::take(&mut self.dirty) {
                if let Some(shape) = shapes.get(i) {
                    let new = shape.count(fit);
                    self.tree.set(i, self.counts[i], new);
                    self.counts[i] = new;
                }
            }
            return;
        }
        self.counts = shapes.iter().map(|s| s.count(fit)).collect();
        self.tree = Fenwick::new(&self.counts);
        self.dirty.clear();
        self.fit = Some(fit);
    }
}

/// Prefix sums of line counts, with point updates, appends and "which message holds line N",
/// each in O(log n).
#[derive(Default)]
struct Fenwick {
    /// 1-based: `tree[k - 1]` is the sum of the counts `k - lowbit(k) .. k`.
    tree: Vec<usize>,
    total: usize,
}

fn lowbit(k: usize) -> usize {
    k & k.wrapping_neg()
}

impl Fenwick {
    fn new(counts: &[usize]) -> Fenwick {
        let mut tree = counts.to_vec();
        for k in 1..=tree.len() {
            let parent = k + lowbit(k);
            if parent <= tree.len() {
                tree[parent - 1] += tree[k - 1];
            }
        }
        Fenwick {
            tree,
            total: counts.iter().sum(),
        }
    }

    fn total(&self) -> usize {
        self.total
    }

    /// The sum of the first `k` counts.
    fn prefix(&self, mut k: usize) -> usize {
        let mut sum = 0;
        while k > 0 {
            sum += self.tree[k - 1];
            k -= lowbit(k);
        }
        sum
    }

    fn push(&mut self, count: usize) {
        let k = self.tree.len() + 1;
        let covered = self.prefix(k - 1) - self.prefix(k - lowbit(k));
        self.tree.push(covered + count);
        self.total += count;
    }

    /// Count `i` (0-based) goes from `old` to `new`.
    fn set(&mut self, i: usize, old: usize, new: usize) {
        let mut k = i + 1;
        while k <= self.tree.len() {
            self.tree[k - 1] = self.tree[k - 1] - old + new;
            k += lowbit(k);
        }
        self.total = self.total - old + new;
    }

    /// The count holding unit `at` (0-based, below the total), and `at`'s offset in it.
    fn find(&self, at: usize) -> (usize, usize) {
        let mut k = 0;
        let mut rest = at;
        let mut step = self.tree.len().checked_next_power_of_two().unwrap_or(0);
        while step > 0 {
            if k + step <= self.tree.len() && self.tree[k + step - 1] <= rest {
                k += step;
                rest -= self.tree[k - 1];
            }
            step /= 2;
        }
        (k, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MessageStatus;
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

    /// What takes cells in `text`: each char with a width and the zero-width chars after it.
    fn cells(text: &str) -> Vec<String> {
        let mut clusters: Vec<String> = Vec::new();
        for c in text.chars() {
            match clusters.last_mut() {
                Some(last) if c.width().unwrap_or(0) == 0 => last.push(c),
                _ => clusters.push(c.to_string()),
            }
        }
        clusters
    }

    /// The transcript's lines as the cockpit drew them before the memo: every line of every
    /// message, each frame (kept as the reference: the memo's lines must be these). Text
    /// wraps by cells: a char of width 0 goes with the char before it; a line breaks before a
    /// char (with its zero-width followers) that would take it past the room, unless nothing
    /// with a width is on it yet.
    fn reference(t: &Transcript, theme: &Theme, width: u16) -> Vec<Line<'static>> {
        let mut out: Vec<Line<'static>> = Vec::new();
        let width = usize::from(width.max(10));
        let push_text = |out: &mut Vec<Line<'static>>, text: &str, style: Style, indent: &str| {
            for raw in sanitize::text(text).replace('\t', "    ").lines() {
                if t.wrap {
                    let room = width.saturating_sub(indent.len()).max(1);
                    if raw.is_empty() {
                        out.push(Line::from(""));
                    }
                    let mut line = String::new();
                    let mut used = 0;
                    for cluster in cells(raw) {
                        let w = cluster.width();
                        if used > 0 && used + w > room {
                            out.push(Line::from(vec![
                                Span::raw(indent.to_string()),
                                Span::styled(std::mem::take(&mut line), style),
                            ]));
                            used = 0;
                        }
                        line.push_str(&cluster);
                        used += w;
                    }
                    if !raw.is_empty() {
                        out.push(Line::from(vec![
                            Span::raw(indent.to_string()),
                            Span::styled(line, style),
                        ]));
                    }
                } else {
                    out.push(Line::from(vec![
                        Span::raw(indent.to_string()),
                        Span::styled(raw.to_string(), style),
                    ]));
                }
            }
        };
        for m in t.messages() {
            let (who, style) = match m.role {
                MessageRole::User => ("> you", theme.user),
                MessageRole::Assistant => ("< agent", theme.accent),
                MessageRole::System => ("# agentdeck", theme.muted),
            };
            let mut head = vec![
                Span::styled(who.to_string(), style),
                Span::styled(format!("  #{}", m.seq), theme.muted),
            ];
            if t.timestamps {
                head.push(Span::styled(
                    format!("  {}", m.created_at.format("%H:%M:%S")),
                    theme.muted,
                ));
            }
            match m.status {
                MessageStatus::Pending if m.role == MessageRole::User => {
                    head.push(Span::styled("  (sending…)", theme.warning))
                }
                MessageStatus::Pending => head.push(Span::styled("  (streaming…)", theme.muted)),
                MessageStatus::Failed => head.push(Span::styled(
                    format!(
                        "  FAILED: {}",
                        sanitize::line(m.error.as_deref().unwrap_or("no reason given"))
                    ),
                    theme.error,
                )),
                MessageStatus::Aborted => {
                    head.push(Span::styled("  stopped (aborted)", theme.warning))
                }
                MessageStatus::Complete => {}
            }
            out.push(Line::from(head));
            for part in &m.parts {
                match part {
                    Part::Text { text } => push_text(&mut out, text, theme.assistant, "  "),
                    Part::Reasoning { text } => push_text(
                        &mut out,
                        text,
                        theme.muted.add_modifier(Modifier::ITALIC),
                        "  ~ ",
                    ),
                    Part::Tool {
                        tool,
                        status,
                        input,
                        output,
                        error,
                        ..
                    } => {
                        let mark = match status {
                            ToolStatus::Completed => "done",
                            ToolStatus::Running => "running",
                            ToolStatus::Pending => "pending",
                            ToolStatus::Error => "ERROR",
                        };
                        let summary = input
                            .get("command")
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                            .unwrap_or_else(|| input.to_string());
                        let fold = if t.tools_open { "" } else { "  (o unfolds)" };
                        out.push(Line::from(vec![
                            Span::styled(
                                format!("  [{} {mark}] ", sanitize::line(tool)),
                                theme.tool,
                            ),
                            Span::raw({
                                let mut cut = String::new();
                                let mut used = 0;
                                for cluster in cells(&sanitize::line(&summary)) {
                                    used += cluster.width();
                                    if used > width.saturating_sub(20) {
                                        break;
                                    }
                                    cut.push_str(&cluster);
                                }
                                cut
                            }),
                            Span::styled(fold, theme.muted),
                        ]));
                        if t.tools_open {
                            push_text(
                                &mut out,
                                &serde_json::to_string_pretty(input).unwrap_or_default(),
                                theme.muted,
                                "    in  ",
                            );
                            if let Some(o) = output {
                                push_text(&mut out, o, theme.text, "    out ");
                            }
                            if let Some(e) = error {
                                push_text(&mut out, e, theme.error, "    err ");
                            }
                        }
                    }
                    Part::File { path, url, .. } => {
                        let name = path.as_deref().or(url.as_deref()).unwrap_or("file");
                        out.push(Line::from(Span::styled(
                            format!("  [file] {}", sanitize::line(name)),
                            theme.tool,
                        )));
                    }
                    Part::Patch { files } => {
                        out.push(Line::from(Span::styled(
                            format!("  [patch] {}", sanitize::line(&files.join(", "))),
                            theme.tool,
                        )));
                    }
                    Part::Other(_) => {}
                }
            }
            out.push(Line::from(""));
        }
        out
    }

    fn message(seq: i64, role: MessageRole, status: MessageStatus, parts: Vec<Part>) -> Message {
        let t = chrono::DateTime::from_timestamp(1_790_000_000 + seq, 0).unwrap_or_default();
        Message {
            id: Uuid::from_u128(seq as u128),
            session_id: Uuid::from_u128(1),
            seq,
            role,
            status,
            parts,
            error: (status == MessageStatus::Failed && seq % 2 == 0)
                .then(|| "harness \u{1b}[31mgone\u{1b}[0m\nat once".to_string()),
            harness_message_id: None,
            created_at: t,
            updated_at: t,
        }
    }

    /// Every kind of part and text the renderer treats specially, over `n` messages.
    fn messages(n: i64, from: i64) -> Vec<Message> {
        let texts = [
            "",
            "one line",
            "two\nlines",
            "trailing newline\n",
            "\n\nleading blank lines",
            "\ttabbed\tout\t",
            "escape \u{1b}]0;title\u{7}gone \u{1b}[2Jand \u{9b}31mthis\r\nwindows line",
            "wide 日本語のテキスト and combining e\u{301}e\u{301}e\u{301}",
            "a long line that goes on and on past any sensible terminal width, and then some more words, and then yet more words, until it has been wrapped several times over at eighty columns at least",
        ];
        (0..n)
            .map(|k| {
                let seq = from + k;
                let i = seq as usize;
                let text = |j: usize| texts[(i * 7 + j * 3) % texts.len()].repeat(1 + (i + j) % 3);
                let role = [
                    MessageRole::User,
                    MessageRole::Assistant,
                    MessageRole::System,
                ][i % 3];
                let status = [
                    MessageStatus::Complete,
                    MessageStatus::Pending,
                    MessageStatus::Failed,
                    MessageStatus::Complete,
                ][i % 4];
                let mut parts = vec![Part::text(text(0))];
                if i % 2 == 1 {
                    parts.push(Part::Reasoning { text: text(1) });
                }
                if !i.is_multiple_of(3) {
                    parts.push(Part::Tool {
                        call_id: format!("c{i}"),
                        tool: "bash\u{1b}[1m".into(),
                        status: [
                            ToolStatus::Pending,
                            ToolStatus::Running,
                            ToolStatus::Completed,
                            ToolStatus::Error,
                        ][i % 4]
                            .clone(),
                        input: if i.is_multiple_of(2) {
                            serde_json::json!({"command": text(2)})
                        } else {
                            serde_json::json!({"path": "src/lib.rs", "lines": [1, 2, 3]})
                        },
                        output: (i % 4 != 1).then(|| text(3)),
                        error: (i % 5 == 2).then(|| text(4)),
                    });
                }
                match i % 5 {
                    0 => parts.push(Part::File {
                        path: Some("a\tb.txt".into()),
                        url: None,
                        mime: None,
                    }),
                    1 => parts.push(Part::File {
                        path: None,
                        url: i.is_multiple_of(2).then(|| "https://x/y".into()),
                        mime: None,
                    }),
                    2 => parts.push(Part::Patch {
                        files: vec!["src/a.rs".into(), "src/\u{1b}b.rs".into()],
                    }),
                    3 => parts.push(Part::Other(serde_json::json!({"type": "step-start"}))),
                    _ => parts.push(Part::text("")),
                }
                message(seq, role, status, parts)
            })
            .collect()
    }

    /// The window, checked against the reference drawn whole.
    fn check(t: &Transcript, theme: &Theme, width: u16, height: usize) {
        let all = reference(t, theme, width);
        let w = t.window(width, theme, height);
        let max_top = all.len().saturating_sub(height);
        let top = if t.follow {
            max_top
        } else {
            t.scroll.min(max_top)
        };
        let want: Vec<Line> = all.iter().skip(top).take(height).cloned().collect();
        let what = format!(
            "width {width} height {height} wrap {} tools {} timestamps {} follow {} scroll {}",
            t.wrap, t.tools_open, t.timestamps, t.follow, t.scroll
        );
        assert_eq!(w.total, all.len(), "{what}");
        assert_eq!(w.top, top, "{what}");
        assert_eq!(w.lines, want, "{what}");
    }

    #[test]
    fn windows_are_the_reference_lines_in_every_look() {
        let mut t = Transcript::new(Uuid::from_u128(1));
        t.merge(messages(40, 1));
        for theme in [Theme::default_theme(), Theme::mono()] {
            for (wrap, tools_open, timestamps) in [
                (true, false, false),
                (true, true, true),
                (false, false, true),
                (false, true, false),
            ] {
                t.wrap = wrap;
                t.tools_open = tools_open;
                t.timestamps = timestamps;
                for width in [0, 9, 10, 11, 12, 23, 80, 158, 300] {
                    let total = reference(&t, &theme, width).len();
                    for height in [0, 1, 7, 46] {
                        t.follow = true;
                        check(&t, &theme, width, height);
                        t.follow = false;
                        for scroll in [0, 1, total / 3, total / 2 + 5, total - 1, total + 9] {
                            t.scroll = scroll;
                            check(&t, &theme, width, height);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn windows_stay_right_as_the_transcript_changes() {
        let theme = Theme::default_theme();
        let mut t = Transcript::new(Uuid::from_u128(1));
        check(&t, &theme, 80, 20);
        // paged in, in order, with frames between the pages
        for page in 0..4 {
            t.merge(messages(25, 1 + page * 25));
            check(&t, &theme, 80, 20);
        }
        let total = reference(&t, &theme, 80).len();
        assert_eq!(
            t.shown(),
            Some(Shown {
                top: total - 20,
                total,
                height: 20,
                width: 80
            })
        );
        t.follow = false;
        t.scroll = 150;
        check(&t, &theme, 80, 20);
        assert_eq!(t.shown().map(|s| s.top), Some(150));
        // streaming into the last message and into one on screen
        for k in 0..30 {
            let seq = if k % 3 == 0 { 100 } else { 30 };
            let changed = t.apply_delta(&LiveDelta {
                session: t.session,
                seq,
                part: 0,
                text: format!("more text {k} \u{1b}[1mbold\u{1b}[0m\n").repeat(k % 4),
            });
            assert!(changed);
            check(&t, &theme, 80, 20);
            t.follow = k % 2 == 0;
            check(&t, &theme, 80, 20);
        }
        // a delta to a part that does not exist yet, and to one that is not text
        assert!(t.apply_delta(&LiveDelta {
            session: t.session,
            seq: 40,
            part: 9,
            text: "late part".into(),
        }));
        check(&t, &theme, 80, 20);
        assert!(!t.apply_delta(&LiveDelta {
            session: t.session,
            seq: 41,
            part: 2,
            text: "not a text part".into(),
        }));
        assert!(!t.apply_delta(&LiveDelta {
            session: t.session,
            seq: 999,
            part: 0,
            text: "no such message".into(),
        }));
        check(&t, &theme, 80, 20);
        // the stored copy replaces the live one; new messages at the end; one arrives late
        let mut stored = messages(3, 29);
        stored[1].status = MessageStatus::Complete;
        t.merge(stored);
        check(&t, &theme, 80, 20);
        t.merge(messages(5, 101));
        check(&t, &theme, 80, 20);
        let late = messages(1, 500);
        t.merge(late.clone());
        t.merge(messages(4, 200));
        check(&t, &theme, 80, 20);
        // resized, wrap and folds toggled, between changes
        for (k, width) in [80u16, 79, 120, 80, 33].into_iter().enumerate() {
            t.wrap = k % 2 == 0;
            check(&t, &theme, width, 20);
            t.tools_open = !t.tools_open;
            t.merge(messages(1, 300 + k as i64));
            check(&t, &theme, width, 20);
            t.timestamps = !t.timestamps;
            check(&t, &theme, width, 37);
        }
        assert_eq!(t.last_seq(), 500);
    }

    #[test]
    fn fenwick_finds_every_unit() {
        let counts: Vec<usize> = (0..37).map(|i| (i * 7) % 5).collect();
        let mut f = Fenwick::default();
        for &c in &counts {
            f.push(c);
        }
        let mut g = Fenwick::new(&counts);
        let mut counts = counts;
        for (i, new) in [(3, 9), (0, 0), (36, 4), (17, 1)] {
            f.set(i, counts[i], new);
            g.set(i, counts[i], new);
            counts[i] = new;
        }
        let units: Vec<(usize, usize)> = counts
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| (0..c).map(move |o| (i, o)))
            .collect();
        assert_eq!(f.total(), units.len());
        assert_eq!(g.total(), units.len());
        for (at, &want) in units.iter().enumerate() {
            assert_eq!(f.find(at), want, "unit {at}");
            assert_eq!(g.find(at), want, "unit {at}");
        }
        assert_eq!(f.prefix(counts.len()), units.len());
    }

    /// A turn stopped by an abort says so, and does not read as a failure.
    #[test]
    fn an_aborted_turn_reads_as_stopped_not_failed() {
        let theme = Theme::mono();
        let mut t = Transcript::new(Uuid::from_u128(1));
        let mut m = message(
            1,
            MessageRole::Assistant,
            MessageStatus::Aborted,
            vec![Part::text("half an answer")],
        );
        m.error = Some("Aborted".into());
        t.merge(vec![m]);
        let text: Vec<String> = t
            .window(80, &theme, 10)
            .lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect();
        assert!(text[0].contains("stopped (aborted)"), "{text:?}");
        assert!(!text.join("\n").contains("FAILED"), "{text:?}");
    }

    /// Streamed text taken in a delta at a time (re-measuring only the last line where it
    /// can) leaves a message measured exactly as measuring it whole would: the same lines,
    /// the same last line, the same counts at every width.
    #[test]
    fn appending_measures_like_measuring_again() {
        let mut rng = Lcg(11);
        let plain = [
            "a", "bc ", "word ", "\t", "\n", "\n\n", "", " ", "café ", "naïve", "—dash", "é",
            "\u{301}x", "x\u{301}", "\n—",
        ];
        let awkward = ["日本", "\u{1b}[31m", "e\u{301}", "\r", "\u{9b}"];
        let mut fast = 0;
        for round in 0..60 {
            let start = if round % 3 == 0 {
                String::new()
            } else {
                let n = rng.below(30);
                rng.text(n)
            };
            let mut t = Transcript::new(Uuid::from_u128(1));
            t.merge(vec![message(
                1,
                MessageRole::Assistant,
                MessageStatus::Pending,
                vec![
                    Part::text("first part\nstays"),
                    Part::text(&start),
                    Part::Reasoning {
                        text: "thinking".into(),
                    },
                ],
            )]);
            for _ in 0..40 {
                let part = [1, 1, 1, 2, 0][rng.below(5)];
                let n = rng.below(4);
                let text: String = (0..n)
                    .map(|_| {
                        if rng.below(25) == 0 {
                            awkward[rng.below(awkward.len())]
                        } else {
                            plain[rng.below(plain.len())]
                        }
                    })
                    .collect();
                let before = t.shapes[0].rev;
                t.apply_delta(&LiveDelta {
                    session: Uuid::from_u128(1),
                    seq: 1,
                    part,
                    text,
                });
                let got = &t.shapes[0];
                let want = Shape::of(&t.messages[0], 0);
                assert!(got.rev > before, "a new rev after each delta");
                assert_eq!(got.blocks, want.blocks, "{:?}", t.messages[0].parts);
                assert_eq!(got.narrow, want.narrow);
                assert_eq!(got.fixed, want.fixed);
                let widths = |s: &Shape| s.wide.iter().map(|w| w.width).collect::<Vec<_>>();
                assert_eq!(widths(got), widths(&want));
                for width in [1, 3, 7, 20, 80] {
                    for (wrap, tools_open) in [(true, true), (true, false), (false, true)] {
                        let fit = Fit {
                            width,
                            wrap,
                            tools_open,
                        };
                        assert_eq!(got.count(fit), want.count(fit));
                    }
                }
                fast += usize::from(matches!(got.blocks[1].tail, Tail::Narrow(_) | Tail::Empty));
            }
        }
        assert!(fast > 500, "the fast path is taken for plain text ({fast})");
    }

    /// A small deterministic generator, for mixed text.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % n
        }

        /// `n` bits of text: ASCII, CJK, emoji (with a skin tone, a variation selector, a
        /// ZWJ family), combining marks (also starting a line), zero-width chars, tabs and
        /// newlines.
        fn text(&mut self, n: usize) -> String {
            let bits: Vec<&str> = concat!(
                "a|b| |word |日|本|語|テキスト|한글|😀|👍🏽|❤\u{fe0f}|⚠\u{fe0f}|e\u{301}|\u{301}|",
                "\u{200b}|\u{200d}|👨\u{200d}👩\u{200d}👧|\t|\n|ｶﾞ|Ｆｕｌｌ|x"
            )
            .split('|')
            .collect();
            (0..n).map(|_| bits[self.below(bits.len())]).collect()
        }
    }

    /// Every text line (indent and text) is at most `width` cells wide.
    fn text_lines_fit(lines: &[Line], width: u16) {
        let width = usize::from(width.max(10));
        let indents = [
            Kind::Text,
            Kind::Reasoning,
            Kind::ToolIn,
            Kind::ToolOut,
            Kind::ToolErr,
        ]
        .map(Kind::indent);
        for line in lines {
            if line.spans.len() == 2 && indents.contains(&&*line.spans[0].content) {
                assert!(line.width() <= width, "{line:?} is wider than {width}");
            }
        }
    }

    fn text_message(seq: i64, text: &str, tool_output: &str) -> Message {
        let mut parts = vec![Part::text(text), Part::Reasoning { text: text.into() }];
        if !tool_output.is_empty() {
            parts.push(Part::Tool {
                call_id: format!("c{seq}"),
                tool: "bash".into(),
                status: ToolStatus::Completed,
                input: serde_json::json!({"command": tool_output}),
                output: Some(tool_output.into()),
                error: None,
            });
        }
        message(seq, MessageRole::Assistant, MessageStatus::Complete, parts)
    }

    #[test]
    fn wide_chars_wrap_by_cells() {
        let texts = [
            "日本語のテキストを折り返す、全角の文字は二つのセルを取る",
            "mixed 日本語 and ASCII, Ｆｕｌｌｗｉｄｔｈ too",
            "emoji 😀😀😀 👍🏽 ❤\u{fe0f}❤\u{fe0f} ⚠\u{fe0f} family 👨\u{200d}👩\u{200d}👧 done",
            "combining e\u{301}e\u{301}e\u{301}e\u{301} a\u{308}o\u{308}u\u{308} 한\u{1161}글",
            "\u{301}starts with a combining mark\n\u{200b}\u{200b}\n日",
            "\t日本\t語\t",
            "aaaaaaa日本",
        ];
        let mut t = Transcript::new(Uuid::from_u128(1));
        t.merge(
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| text_message(i as i64 + 1, text, text))
                .collect(),
        );
        let theme = Theme::default_theme();
        for (wrap, tools_open) in [(true, true), (true, false), (false, true)] {
            t.wrap = wrap;
            t.tools_open = tools_open;
            // at 10 columns tool output has 2 cells: one wide char just fits
            for width in [0, 10, 11, 12, 13, 14, 17, 20, 33, 80] {
                let all = reference(&t, &theme, width);
                if wrap {
                    text_lines_fit(&all, width);
                }
                for height in [1, 9, 200] {
                    t.follow = true;
                    check(&t, &theme, width, height);
                    t.follow = false;
                    for scroll in [0, 5, all.len() / 2, all.len()] {
                        t.scroll = scroll;
                        check(&t, &theme, width, height);
                        if wrap {
                            text_lines_fit(&t.window(width, &theme, height).lines, width);
                        }
                    }
                }
            }
        }
        // two cells of room: CJK one char a line, never cut
        t.wrap = true;
        t.tools_open = true;
        t.follow = false;
        t.scroll = 0;
        let all = t.window(10, &theme, usize::MAX).lines;
        let out: Vec<&str> = all
            .iter()
            .filter(|l| l.spans.len() == 2 && l.spans[0].content == Kind::ToolOut.indent())
            .map(|l| &*l.spans[1].content)
            .take(4)
            .collect();
        assert_eq!(out, ["日", "本", "語", "の"]);
    }

    #[test]
    fn wrapping_keeps_clusters_whole_and_never_stalls() {
        let pieces = |line: &str, room: usize| {
            let mut out = Vec::new();
            wrap(line, room, |p| out.push(line[p].to_string()));
            out
        };
        // a wide char wider than the room still goes on a line, its own
        assert_eq!(pieces("日本a語", 1), ["日", "本", "a", "語"]);
        assert_eq!(pieces("a日", 2), ["a", "日"]);
        assert_eq!(pieces("ab日", 3), ["ab", "日"]);
        // zero-width chars stay with the char before them, and lead a line they start
        assert_eq!(pieces("e\u{301}x", 1), ["e\u{301}", "x"]);
        assert_eq!(pieces("\u{301}日x", 1), ["\u{301}日", "x"]);
        assert_eq!(pieces("ab\u{200b}\u{200b}", 2), ["ab\u{200b}\u{200b}"]);
        // an emoji made by a variation selector takes two cells
        assert_eq!(pieces("a❤\u{fe0f}b", 2), ["a", "❤\u{fe0f}", "b"]);
        assert_eq!(truncate("日本語", 5), "日本");
        assert_eq!(truncate("e\u{301}e\u{301}e", 2), "e\u{301}e\u{301}");
        assert_eq!(truncate("ab", 0), "");
    }

    #[test]
    fn counts_are_the_lines_wrapping_makes() {
        let mut rng = Lcg(7);
        for k in 0..400 {
            let text = rng.text(1 + k % 60).replace('\t', "    ");
            for raw in text.lines().filter(|l| !l.is_empty()) {
                let mut shape = Shape {
                    rev: 0,
                    fixed: 0,
                    blocks: Vec::new(),
                    narrow: Vec::new(),
                    wide: Vec::new(),
                    runs: Vec::new(),
                };
                shape.line(raw);
                for room in 1..=24 {
                    let mut want = 0;
                    wrap(raw, room, |_| want += 1);
                    let got = match (shape.narrow.first(), shape.wide.first()) {
                        (Some(&w), None) => (w as usize).div_ceil(room).max(1),
                        (None, Some(w)) => {
                            wrapped(&shape.runs[w.from as usize..w.to as usize], room)
                        }
                        _ => unreachable!("one line measured"),
                    };
                    assert_eq!(got, want, "{raw:?} in {room}");
                }
            }
        }
    }

    #[test]
    fn mixed_text_at_every_width() {
        let mut rng = Lcg(1);
        let mut t = Transcript::new(Uuid::from_u128(1));
        let messages: Vec<Message> = (1..=30)
            .map(|seq| {
                let n = 5 + rng.below(120);
                let text = rng.text(n);
                let m = rng.below(40);
                let output = rng.text(m);
                text_message(seq, &text, &output)
            })
            .collect();
        t.merge(messages);
        let theme = Theme::mono();
        for tools_open in [false, true] {
            t.tools_open = tools_open;
            for width in 10..=60 {
                let all = reference(&t, &theme, width);
                text_lines_fit(&all, width);
                t.follow = true;
                check(&t, &theme, width, 30);
                t.follow = false;
                for scroll in [0, all.len() / 3, all.len() - 10] {
                    t.scroll = scroll;
                    check(&t, &theme, width, 30);
                }
            }
        }
    }

    /// A line's text as searched: after the indent on a line of text, else all of it.
    fn searched(line: &Line) -> String {
        match &line.spans[..] {
            [indent, text] if KINDS.iter().any(|k| k.indent() == indent.content) => {
                text.content.to_string()
            }
            spans => spans.iter().map(|s| &*s.content).collect(),
        }
    }

    /// The lines the reference draws with `needle` in them (ASCII, ignoring case).
    fn lines_with(t: &Transcript, theme: &Theme, width: u16, needle: &str) -> Vec<usize> {
        let needle = needle.to_ascii_lowercase();
        reference(t, theme, width)
            .iter()
            .enumerate()
            .filter(|(_, l)| searched(l).to_ascii_lowercase().contains(&needle))
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether `line` has a span `text` (ignoring case) with the `modifier`.
    fn marked(line: &Line, text: &str, modifier: Modifier) -> bool {
        line.spans.iter().any(|s| {
            s.content.eq_ignore_ascii_case(text) && s.style.add_modifier.contains(modifier)
        })
    }

    fn plain_text(line: &Line) -> String {
        line.spans.iter().map(|s| &*s.content).collect()
    }

    fn needles() -> Transcript {
        let texts = [
            "a needle at the start",
            "nothing here",
            "Needle with a capital, and a needle twice on one line",
            "a line\nand a NEEDLE on the second\nand one more line",
            "日本語 needle 日本語",
            "still nothing",
            "the last needle",
        ];
        let mut t = Transcript::new(Uuid::from_u128(1));
        t.merge(
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    message(
                        i as i64 + 1,
                        MessageRole::Assistant,
                        MessageStatus::Complete,
                        vec![Part::text(*text)],
                    )
                })
                .collect(),
        );
        t
    }

    #[test]
    fn search_moves_forward_and_back_and_wraps_around() {
        let theme = Theme::default_theme();
        let mut t = needles();
        assert_eq!(t.next_match(80, &theme, 6, true), None);
        t.search("needle");
        assert_eq!(t.search_query(), Some("needle"));
        let want = lines_with(&t, &theme, 80, "needle");
        assert_eq!(want.len(), 5);
        // from the top of the frame shown
        t.follow = false;
        t.scroll = 0;
        t.window(80, &theme, 6);
        let mut got = Vec::new();
        for _ in 0..want.len() + 2 {
            let hit = t
                .next_match(80, &theme, 6, true)
                .map(|h| (h.line, h.index, h.total));
            got.push(hit);
        }
        let mut expect: Vec<_> = (0..want.len())
            .map(|k| Some((want[k], k + 1, want.len())))
            .collect();
        expect.extend([expect[0], expect[1]]);
        assert_eq!(got, expect);
        assert!(!t.follow);
        // backward from the second: the first, then around to the last
        let back: Vec<_> = (0..3)
            .map(|_| t.next_match(80, &theme, 6, false).map(|h| h.index))
            .collect();
        assert_eq!(back, [Some(1), Some(5), Some(4)]);
        // a new query starts again from the frame shown: backward, from its bottom line
        t.search("nothing");
        t.follow = true;
        t.window(80, &theme, 6);
        let hit = t.next_match(80, &theme, 6, false);
        let all = lines_with(&t, &theme, 80, "nothing");
        assert_eq!(
            hit.map(|h| (h.line, h.index, h.total)),
            Some((all[1], 2, 2))
        );
        // nothing found: nothing moves
        t.search("haystack");
        t.follow = true;
        assert_eq!(t.next_match(80, &theme, 6, true), None);
        assert!(t.follow);
        t.search("");
        assert_eq!(t.search_query(), None);
        assert_eq!(t.next_match(80, &theme, 6, true), None);
    }

    #[test]
    fn search_is_smart_case() {
        let theme = Theme::mono();
        let mut t = needles();
        let total = |t: &mut Transcript, q: &str| {
            t.search(q);
            t.next_match(80, &theme, 6, true).map_or(0, |h| h.total)
        };
        assert_eq!(total(&mut t, "needle"), 5);
        assert_eq!(total(&mut t, "NEEDLE"), 1);
        assert_eq!(total(&mut t, "Needle"), 1);
        assert_eq!(total(&mut t, "日本語 NEEDLE"), 0);
        assert_eq!(total(&mut t, "日本語 needle"), 1);
        // headers are searched too (not the indents)
        assert_eq!(total(&mut t, "< agent  #3"), 1);
        assert_eq!(total(&mut t, "  a needle"), 0);
        let m = Matcher::new("émile k");
        assert_eq!(m.find_all("X ÉMILE \u{212a} émile k").count(), 2);
        let m = Matcher::new("Émile");
        let found: Vec<_> = m.find_all("ÉMILE émile Émile").collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0], 14..20);
        let m = Matcher::new("aa");
        assert_eq!(m.find_all("AAAaa").collect::<Vec<_>>(), [0..2, 2..4]);
    }

    #[test]
    fn hits_are_shown_and_marked() {
        let mut t = needles();
        for theme in [Theme::default_theme(), Theme::mono()] {
            t.search("");
            t.search("needle");
            for (width, height) in [(80, 6), (20, 4), (12, 1), (200, 30)] {
                for _ in 0..7 {
                    let Some(hit) = t.next_match(width, &theme, height, true) else {
                        panic!("no hit at {width}");
                    };
                    let w = t.window(width, &theme, height);
                    assert!(w.top <= hit.line && hit.line < w.top + w.lines.len());
                    // the hit is a third of the way down, where the transcript allows
                    let max_top = w.total.saturating_sub(height);
                    assert_eq!(w.top, hit.line.saturating_sub(height / 3).min(max_top));
                    let line = &w.lines[hit.line - w.top];
                    // the matches starting there (or their starts, when they wrap) stand out
                    let current: Vec<String> = line
                        .spans
                        .iter()
                        .filter(|s| s.style == s.style.patch(theme.selected))
                        .map(|s| s.content.to_ascii_lowercase())
                        .collect();
                    assert!(
                        !current.is_empty() && current.iter().all(|c| "needle".starts_with(c)),
                        "{line:?} at {width}"
                    );
                    // the text is what the reference draws, only marked
                    let all = reference(&t, &theme, width);
                    for (k, l) in w.lines.iter().enumerate() {
                        assert_eq!(plain_text(l), plain_text(&all[w.top + k]));
                    }
                }
            }
        }
        // every match in the window marked; none once the search is cleared
        let theme = Theme::mono();
        t.search("needle");
        t.follow = false;
        t.scroll = 0;
        let w = t.window(80, &theme, 100);
        let with = lines_with(&t, &theme, 80, "needle");
        for (k, line) in w.lines.iter().enumerate() {
            let n = searched(line)
                .to_ascii_lowercase()
                .matches("needle")
                .count();
            // underlined, or the current hit
            let marks = line
                .spans
                .iter()
                .filter(|s| {
                    marked_span(s, "needle", Modifier::UNDERLINED)
                        || marked_span(s, "needle", Modifier::REVERSED)
                })
                .count();
            assert_eq!(n, marks, "{line:?}");
            assert_eq!(n > 0, with.contains(&k));
        }
        assert!(
            w.lines
                .iter()
                .any(|l| marked(l, "Needle", Modifier::UNDERLINED))
        );
        t.search("");
        let w = t.window(80, &theme, 100);
        assert_eq!(w.lines, reference(&t, &theme, 80));
    }

    fn marked_span(span: &Span, text: &str, modifier: Modifier) -> bool {
        span.content.eq_ignore_ascii_case(text) && span.style.add_modifier.contains(modifier)
    }

    #[test]
    fn a_match_wrapped_onto_the_next_line_is_found_where_it_starts() {
        let theme = Theme::mono();
        let mut t = Transcript::new(Uuid::from_u128(1));
        // at 20 columns, 18 cells of room: "needle" starts on the first line, ends on the next
        let text = format!("{}needle and more", "x".repeat(15));
        t.merge(vec![message(
            1,
            MessageRole::User,
            MessageStatus::Complete,
            vec![Part::text(text)],
        )]);
        t.search("needle");
        let hit = t.next_match(20, &theme, 10, true);
        assert_eq!(
            hit,
            Some(SearchHit {
                line: 1,
                index: 1,
                total: 1
            })
        );
        let w = t.window(20, &theme, 10);
        let selected = |l: &Line| -> String {
            l.spans
                .iter()
                .filter(|s| s.style.add_modifier.contains(Modifier::REVERSED))
                .map(|s| &*s.content)
                .collect()
        };
        assert_eq!(selected(&w.lines[1]), "nee");
        assert_eq!(selected(&w.lines[2]), "dle");
        // wider, the same hit is on one line, still marked
        let w = t.window(80, &theme, 10);
        assert_eq!(selected(&w.lines[1]), "needle");
        assert_eq!(t.next_match(80, &theme, 10, true).map(|h| h.line), Some(1));
    }

    #[test]
    fn search_in_a_long_transcript_draws_no_text() {
        let theme = Theme::default_theme();
        let mut t = Transcript::new(Uuid::from_u128(1));
        t.merge(messages(10_000, 1));
        let w = t.window(120, &theme, 40);
        TEXT_LINES_DRAWN.with(|n| n.set(0));
        t.search("WINDOWS LINE");
        assert_eq!(t.next_match(120, &theme, 40, true), None);
        t.search("windows line");
        let first = t.next_match(120, &theme, 40, true);
        let Some(first) = first else {
            panic!("not found");
        };
        assert!(first.total > 1000, "{first:?}");
        // forward from the top of the frame shown (the bottom one): the last hit, on it
        assert_eq!(first.index, first.total);
        assert!(first.line < w.total);
        let second = t.next_match(120, &theme, 40, true);
        assert_eq!(second.map(|h| h.index), Some(1));
        let back = t.next_match(120, &theme, 40, false);
        assert_eq!(back, Some(first));
        assert_eq!(TEXT_LINES_DRAWN.with(Cell::get), 0);
        // a frame draws only what is on screen
        let w = t.window(120, &theme, 40);
        assert!(w.lines.iter().any(|l| {
            marked(l, "windows line", Modifier::UNDERLINED)
                || l.spans
                    .iter()
                    .any(|s| s.style == s.style.patch(theme.selected))
        }));
        assert!(TEXT_LINES_DRAWN.with(Cell::get) < 1000);
        // streaming into a message is searched again, alone
        t.apply_delta(&LiveDelta {
            session: t.session,
            seq: 10_000,
            part: 0,
            text: "\nwindows line, once more".into(),
        });
        let again = t.next_match(120, &theme, 40, false);
        assert_eq!(again.map(|h| h.total), Some(first.total + 1));
    }

    #[test]
    fn search_hits_match_the_reference_in_every_look() {
        let mut t = Transcript::new(Uuid::from_u128(1));
        t.merge(messages(60, 1));
        let theme = Theme::default_theme();
        for query in ["line", "wide", "#4", "src/", "windows"] {
            t.search(query);
            for (wrap, tools_open, timestamps) in [
                (true, false, false),
                (true, true, true),
                (false, true, false),
            ] {
                t.wrap = wrap;
                t.tools_open = tools_open;
                t.timestamps = timestamps;
                for width in [10, 33, 80, 158] {
                    let want = lines_with(&t, &theme, width, query);
                    t.follow = false;
                    t.scroll = 0;
                    t.window(width, &theme, 20);
                    t.search("");
                    t.search(query);
                    let mut got = Vec::new();
                    let mut total = 0;
                    while let Some(hit) = t.next_match(width, &theme, 20, true) {
                        if got.first() == Some(&hit.line) {
                            break;
                        }
                        assert_eq!(hit.index, got.len() + 1);
                        total = hit.total;
                        got.push(hit.line);
                    }
                    assert_eq!(total, got.len());
                    let what = format!("{query:?} at {width}, wrap {wrap} tools {tools_open}");
                    for line in &want {
                        assert!(got.contains(line), "{what}: {line} not found in {got:?}");
                    }
                    if !wrap {
                        assert_eq!(got, want, "{what}");
                    }
                    // the others have a match that starts there and wraps onto the next lines
                    let all = reference(&t, &theme, width);
                    for &line in got.iter().filter(|l| !want.contains(l)) {
                        let joined: String = all[line..(line + query.len()).min(all.len())]
                            .iter()
                            .map(searched)
                            .collect::<String>()
                            .to_ascii_lowercase();
                        let first = searched(&all[line]).len();
                        assert!(
                            joined
                                .match_indices(&query.to_ascii_lowercase())
                                .any(|(at, _)| at < first),
                            "{what}: {line} ({joined:?}) has no match"
                        );
                    }
                }
            }
        }
    }
}
