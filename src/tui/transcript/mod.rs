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
//!   O(log messages) to account for. A new width (a resize, wrap toggled) recounts
//!   from the shapes (no text is touched), lazily: a frame counts the messages it shows, and
//!   the rest are counted between frames ([`Transcript::settle`]);
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
//!
//! The parts: this module holds the state and its API; `draw` makes a message's lines, `shape`
//! its line count at any look, `index` the Fenwick tree and the memo, `search` the search.

mod draw;
mod index;
mod screen;
mod search;
mod shape;
#[cfg(test)]
mod tests;

use draw::{
    Fit, KINDS, Kind, LookKey, Piece, TextLook, as_drawn, draw_message, draw_piece,
    drawn_and_clean, pieces,
};
pub use draw::{Look, message_lines};
use index::{Drawn, Memo};
use search::{Anchor, Emphasis, Matcher, Search};
use shape::{Shape, to_u32};

use super::cells::{clusters, truncate, wrap};
use super::markdown::{self, Laid};
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
    /// The agent's reasoning shown, not folded to a line.
    pub reasoning_open: bool,
    /// Text laid out as markdown; else as it was written (see [`Transcript::set_markdown`]).
    markdown: bool,
    pub composer: Option<TextArea<'static>>,
    /// What the agent waits for a person to answer (permissions, questions), oldest first.
    pub asks: Vec<crate::model::Ask>,
    /// The call ids of the tool calls `asks` are about.
    waiting_calls: Vec<String>,
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
            reasoning_open: false,
            markdown: true,
            composer: None,
            asks: Vec::new(),
            waiting_calls: Vec::new(),
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
        Shape::of(&self.messages[i], self.next_rev, self.markdown)
    }

    /// Whether a tool call of the last turn is running (its elapsed time is drawn).
    fn running_tools(&self) -> bool {
        for m in self.messages.iter().rev() {
            if m.role == MessageRole::User {
                break;
            }
            if m.parts.iter().any(|p| {
                matches!(
                    p,
                    Part::Tool {
                        status: ToolStatus::Running,
                        ..
                    }
                )
            }) {
                return true;
            }
        }
        false
    }

    /// Whether text is laid out as markdown.
    pub fn markdown(&self) -> bool {
        self.markdown
    }

    /// Lays text out as markdown, or shows it as written: every message is measured again.
    pub fn set_markdown(&mut self, on: bool) {
        if self.markdown == on {
            return;
        }
        self.markdown = on;
        for i in 0..self.messages.len() {
            self.shapes[i] = self.shape(i);
        }
        self.memo.get_mut().fit = None;
    }

    /// Adds or replaces messages (by seq).
    pub fn merge(&mut self, messages: Vec<Message>) {
        for m in messages {
            match self.messages.binary_search_by_key(&m.seq, |x| x.seq) {
                Ok(i) => {
                    self.messages[i] = m;
                    self.shapes[i] = self.shape(i);
                    self.memo.get_mut().changed(i);
                    self.turn_changed(i);
                }
                Err(i) => {
                    self.messages.insert(i, m);
                    let shape = self.shape(i);
                    self.shapes.insert(i, shape);
                    self.memo.get_mut().inserted(i, self.messages.len());
                    self.turn_changed(i);
                }
            }
        }
    }

    /// Message `i` of a turn changed: the person's message that started the turn is drawn
    /// again (its header says how long the turn took).
    fn turn_changed(&mut self, i: usize) {
        if self.messages[i].role == MessageRole::User {
            return;
        }
        if let Some(j) = self.messages[..i]
            .iter()
            .rposition(|m| m.role == MessageRole::User)
        {
            self.next_rev += 1;
            self.shapes[j].rev = self.next_rev;
            self.memo.get_mut().changed(j);
        }
    }

    /// How long the turn message `i` (a person's) started took: to the last answer's end,
    /// once every answer in it has ended.
    fn turn_took(&self, i: usize) -> Option<chrono::Duration> {
        let asked = self
            .messages
            .get(i)
            .filter(|m| m.role == MessageRole::User)?;
        let mut end = None;
        for m in &self.messages[i + 1..] {
            if m.role == MessageRole::User {
                break;
            }
            if m.status == MessageStatus::Pending {
                return None;
            }
            end = Some(m.updated_at);
        }
        Some(end? - asked.created_at)
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
            let before = match &self.messages[i].parts[delta.part] {
                Part::Text { text } | Part::Reasoning { text } => {
                    text.get(..text.len() - delta.text.len())
                }
                _ => None,
            };
            let taken = !grew
                && match before {
                    Some(before) => {
                        self.shapes[i].append_laid(id, before, &delta.text, self.next_rev)
                            || self.shapes[i].append(id, &delta.text, self.next_rev)
                    }
                    None => false,
                };
            if !taken {
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
    pub fn look<'a>(&'a self, width: u16, theme: &'a Theme) -> Look<'a> {
        Look {
            width: usize::from(width.max(10)),
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
            reasoning_open: self.reasoning_open,
            markdown: self.markdown,
            clock: if self.running_tools() {
                chrono::Utc::now().timestamp()
            } else {
                0
            },
            theme,
            waiting: &self.waiting_calls,
        }
    }

    /// What the agent waits for a person to answer. The tool calls these asks are about are
    /// drawn as waiting (their messages are drawn again when that changes).
    pub fn set_asks(&mut self, asks: Vec<crate::model::Ask>) {
        let calls: Vec<String> = asks
            .iter()
            .filter_map(|a| a.detail["tool"]["callID"].as_str().map(str::to_string))
            .collect();
        let changed: Vec<&String> = calls
            .iter()
            .filter(|c| !self.waiting_calls.contains(c))
            .chain(self.waiting_calls.iter().filter(|c| !calls.contains(c)))
            .collect();
        self.asks = asks;
        if changed.is_empty() {
            return;
        }
        let touched: Vec<usize> = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.parts.iter().any(|p| {
                    matches!(p, crate::model::Part::Tool { call_id, .. } if changed.contains(&call_id))
                })
            })
            .map(|(i, _)| i)
            .collect();
        self.waiting_calls = calls;
        for i in touched {
            self.shapes[i] = self.shape(i);
            self.memo.get_mut().changed(i);
        }
    }

    /// The lines a `height`-line frame `width` columns wide shows: the last ones when
    /// following, else from `scroll` (kept within the transcript). The same lines as drawing
    /// every message with [`message_lines`] and taking that window, at a cost that depends on
    /// the window, not on the transcript's length.
    pub fn window(&self, width: u16, theme: &Theme, height: usize) -> Window {
        let look = self.look(width, theme);
        let mut memo = self.memo.take();
        let fit = look.fit();
        memo.count(fit, &self.shapes);
        memo.sure_window(
            fit,
            &self.shapes,
            height,
            (!self.follow).then_some(self.scroll),
        );
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
                        let turn = self.turn_took(i);
                        draw_message(&self.messages[i], &self.shapes[i], turn, &look, &mut out);
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

    /// Counts exactly, for at most `budget`, the messages whose line counts are estimates
    /// since the width or a fold changed (a frame counts only those it shows); `true` once
    /// every count is exact. For the time between frames: until then, the length a frame says
    /// is an estimate, and so is where a view scrolled up is.
    pub fn settle(&self, budget: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now().checked_add(budget);
        let mut memo = self.memo.take();
        let settled = memo.settle(&self.shapes, deadline);
        self.memo.set(memo);
        settled
    }

    /// Whether some line counts are estimates (see [`Transcript::settle`]).
    pub fn settling(&self) -> bool {
        let memo = self.memo.take();
        let settling = memo.unsure_left > 0;
        self.memo.set(memo);
        settling
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
        // hits are numbered by line: every count exact
        memo.settle(&self.shapes, None);
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
