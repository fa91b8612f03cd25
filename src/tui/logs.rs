//! The log screen: one sandbox's log as it streams (its pod's container log on Kubernetes,
//! the process's output on the local runtime), from a chosen point back, paused or following,
//! wrapped or not, filtered by `/`.

use super::actions::{Action, Scope};
use super::app::{App, Effect};
use super::cells;
use super::panels::block;
use super::screen::{Cx, Rows, Screen, step};
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// Lines a log view keeps; older ones are dropped (and counted).
pub const LOG_KEEP: usize = 10_000;

/// A new log stream's number: lines still arriving from an older stream are not the view's.
pub fn next_stream() -> u64 {
    static STREAMS: AtomicU64 = AtomicU64::new(1);
    STREAMS.fetch_add(1, Ordering::Relaxed)
}

/// How far back a log view starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    pub label: &'static str,
    pub tail: Option<usize>,
    pub since: Option<std::time::Duration>,
}

/// The presets `s` steps through, the first being where a log view starts.
pub const SINCE: &[Since] = &[
    Since {
        label: "last 500 lines",
        tail: Some(500),
        since: None,
    },
    Since {
        label: "last 5 minutes",
        tail: None,
        since: Some(std::time::Duration::from_secs(300)),
    },
    Since {
        label: "last hour",
        tail: None,
        since: Some(std::time::Duration::from_secs(3600)),
    },
    Since {
        label: "last day",
        tail: None,
        since: Some(std::time::Duration::from_secs(86400)),
    },
    Since {
        label: "everything",
        tail: None,
        since: None,
    },
];

pub struct LogView {
    pub session: Uuid,
    pub title: String,
    /// Which stream fills it: a new one starts when the preset changes, and lines still
    /// arriving from the old one are not this view's.
    pub stream: u64,
    /// An index in [`SINCE`].
    pub since: usize,
    /// Sanitised as they arrive (tabs and newlines made spaces).
    pub lines: VecDeque<String>,
    pub dropped: u64,
    pub follow: bool,
    /// The first line shown when not following (an index in the lines shown: all, or those
    /// that match `filter`).
    pub scroll: usize,
    pub wrap: bool,
    /// Show only the lines holding this text (smart case, as the transcript's search).
    filter: Option<LogFilter>,
    pub ended: Option<String>,
    pub shown: std::cell::Cell<Rows>,
}

impl LogView {
    pub fn new(session: Uuid, title: String, stream: u64) -> Self {
        LogView {
            session,
            title,
            stream,
            since: 0,
            lines: VecDeque::new(),
            dropped: 0,
            follow: true,
            scroll: 0,
            wrap: false,
            filter: None,
            ended: None,
            shown: Default::default(),
        }
    }

    /// Starts over for another stream (another `since` preset).
    pub fn restart(&mut self, stream: u64, since: usize) {
        self.stream = stream;
        self.since = since;
        self.lines.clear();
        self.dropped = 0;
        self.follow = true;
        self.scroll = 0;
        self.ended = None;
        if let Some(f) = &mut self.filter {
            f.hits.clear();
        }
    }

    /// How many lines are shown: all, or those that match the filter.
    pub fn shown_len(&self) -> usize {
        self.filter
            .as_ref()
            .map_or(self.lines.len(), |f| f.hits.len())
    }

    /// Shown line `i` (from 0): a frame reads only the lines it draws.
    pub fn shown_line(&self, i: usize) -> Option<&str> {
        let at = match &self.filter {
            None => i,
            Some(f) => usize::try_from(f.hits.get(i)? - self.dropped).ok()?,
        };
        self.lines.get(at).map(String::as_str)
    }

    /// The lines shown: all, or those that match the filter.
    pub fn visible(&self) -> Vec<&str> {
        (0..self.shown_len())
            .filter_map(|i| self.shown_line(i))
            .collect()
    }

    /// Shows only the lines holding `text` (all of them when it is empty).
    pub fn set_filter(&mut self, text: &str) {
        self.filter = (!text.is_empty()).then(|| {
            let mut f = LogFilter::new(text);
            f.hits = (self.dropped..)
                .zip(&self.lines)
                .filter(|(_, line)| f.matches(line))
                .map(|(n, _)| n)
                .collect();
            f
        });
        self.scroll = 0;
    }

    pub fn filter_text(&self) -> Option<&str> {
        self.filter.as_ref().map(|f| f.text.as_str())
    }

    pub fn push(&mut self, lines: Vec<String>) {
        for line in lines {
            if self.lines.len() == LOG_KEEP {
                self.lines.pop_front();
                let gone = self.dropped;
                self.dropped += 1;
                let shown = match &mut self.filter {
                    Some(f) if f.hits.front() == Some(&gone) => f.hits.pop_front().is_some(),
                    Some(_) => false,
                    None => true,
                };
                // what is on screen stays on screen while paused
                if shown {
                    self.scroll = self.scroll.saturating_sub(1);
                }
            }
            let line = sanitize::line(&line);
            let n = self.dropped + self.lines.len() as u64;
            if let Some(f) = &mut self.filter
                && f.matches(&line)
            {
                f.hits.push_back(n);
            }
            self.lines.push_back(line);
        }
    }
}

/// A log view's filter: the text, and which lines hold it (numbered from the first line the
/// stream sent), kept as lines come and go so a frame never scans the whole log.
struct LogFilter {
    text: String,
    /// Smart case: exact when the text has an uppercase letter.
    exact: bool,
    lower: String,
    hits: VecDeque<u64>,
}

impl LogFilter {
    fn new(text: &str) -> Self {
        LogFilter {
            text: text.to_string(),
            exact: text.chars().any(char::is_uppercase),
            lower: text.to_lowercase(),
            hits: VecDeque::new(),
        }
    }

    fn matches(&self, line: &str) -> bool {
        if self.exact {
            line.contains(self.text.as_str())
        } else if line.is_ascii() && self.lower.is_ascii() {
            let (hay, needle) = (line.as_bytes(), self.lower.as_bytes());
            needle.is_empty()
                || hay
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
        } else {
            line.to_lowercase().contains(&self.lower)
        }
    }
}

impl Screen for LogView {
    fn scope(&self) -> Scope {
        Scope::Logs
    }

    fn session(&self) -> Option<Uuid> {
        Some(self.session)
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx<'_>) -> Option<Vec<Effect>> {
        match action {
            Action::Bottom | Action::Follow => self.follow = true,
            Action::ToggleWrap => self.wrap = !self.wrap,
            Action::Since => {
                let since = (self.since + 1) % SINCE.len();
                let stream = next_stream();
                self.restart(stream, since);
                cx.say(format!("log: {}", SINCE[since].label));
                return Some(vec![Effect::FollowLogs {
                    session: self.session,
                    stream,
                    since,
                }]);
            }
            _ => return None,
        }
        Some(vec![])
    }

    fn scroll(&mut self, delta: isize) {
        let shown = self.shown.get();
        let from = if self.follow {
            shown.max_top
        } else {
            self.scroll
        };
        (self.scroll, self.follow) = step(from, shown.max_top, delta);
    }

    fn page(&self) -> usize {
        self.shown.get().height
    }

    fn search(&self) -> Option<Option<&str>> {
        Some(self.filter_text())
    }

    fn set_search(&mut self, text: &str, _: &mut Cx<'_>) {
        self.set_filter(text);
    }

    fn draw(&self, f: &mut Frame, app: &App, area: Rect, _: chrono::DateTime<chrono::Utc>) {
        render_logs(f, app, self, area);
    }
}

fn render_logs(f: &mut Frame, app: &App, v: &LogView, area: Rect) {
    let preset = SINCE.get(v.since).map_or("", |s| s.label);
    let mut title = format!(" Log · {} · {preset} ", sanitize::line(&v.title));
    if let Some(q) = v.filter_text() {
        title.push_str(&format!("· matching \"{}\" ", sanitize::line(q)));
    }
    if v.dropped > 0 {
        title.push_str(&format!(
            "· {} older lines dropped (kept the last {LOG_KEEP}) ",
            v.dropped
        ));
    }
    if !v.follow {
        title.push_str("· paused (G follows) ");
    }
    let b = block(app, title);
    let inner = b.inner(area);
    f.render_widget(b, area);
    let len = v.shown_len();
    let line_at = |i: usize| v.shown_line(i).unwrap_or_default();
    let room = usize::from(inner.width).max(1);
    // the end-of-stream note takes the last row
    let height = usize::from(inner.height).saturating_sub(usize::from(v.ended.is_some()));
    let rows_of = |line: &str| {
        if v.wrap && cells::width(line) > room {
            let mut n = 0;
            cells::wrap(line, room, |_| n += 1);
            n
        } else {
            1
        }
    };
    // the first line of the last screenful
    let mut max_top = len;
    let mut used = 0;
    while max_top > 0 {
        let rows = rows_of(line_at(max_top - 1));
        if used > 0 && used + rows > height {
            break;
        }
        used += rows;
        max_top -= 1;
        if used >= height {
            break;
        }
    }
    let top = if v.follow {
        max_top
    } else {
        v.scroll.min(max_top)
    };
    v.shown.set(Rows {
        top,
        max_top,
        height,
    });
    let mut shown: Vec<Line> = Vec::with_capacity(height + 1);
    for line in (top..len).map(line_at) {
        if shown.len() >= height {
            break;
        }
        if v.wrap && cells::width(line) > room {
            cells::wrap(line, room, |r| shown.push(Line::from(line[r].to_string())));
        } else {
            shown.push(Line::from(line));
        }
    }
    shown.truncate(height);
    if len == 0 {
        let text = match (v.filter_text(), &v.ended) {
            (Some(q), _) if !v.lines.is_empty() => format!(
                "No line matches \"{}\". / with nothing clears the filter.",
                sanitize::line(q)
            ),
            (_, Some(end)) => end.clone(),
            _ => "waiting for log lines…".into(),
        };
        shown = vec![Line::from(Span::styled(text, app.theme.muted))];
    } else if let Some(end) = &v.ended {
        shown.push(Line::from(Span::styled(
            format!("-- {} --", sanitize::line(end)),
            app.theme.muted,
        )));
    }
    f.render_widget(Paragraph::new(shown), inner);
}
