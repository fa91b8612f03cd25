//! The cockpit's other screens: sandbox health across sessions, one sandbox's logs, and the
//! diagnose page for one session. State and a pure `render` each.

use super::app::App;
use super::cells;
use crate::core::Diagnosis;
use crate::model::{HealthPhase, SandboxHealth};
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use std::collections::VecDeque;
use uuid::Uuid;

/// Lines a log view keeps; older ones are dropped (and counted).
pub const LOG_KEEP: usize = 10_000;

pub enum Panel {
    Health(HealthView),
    Logs(LogView),
    Diagnose(DiagnoseView),
}

/// Where a scrolling screen stood in its last frame (rows, or log lines when wrapping): its
/// first, the first of the last screenful, and how many fit. Kept by `render`, read by
/// scrolling, so a page is what is on screen and the end is where the screen ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rows {
    pub top: usize,
    pub max_top: usize,
    pub height: usize,
}

impl Rows {
    /// `height` rows of `len` shown from `scroll`, kept within the list.
    pub fn place(scroll: usize, len: usize, height: usize) -> Rows {
        let max_top = len.saturating_sub(height);
        Rows {
            top: scroll.min(max_top),
            max_top,
            height,
        }
    }
}

/// Lines as the rows they take `room` cells wide ([`cells::wrap_line`]), every span sanitised
/// on the way, whatever it came from.
pub fn wrap_clean(lines: &[Line<'_>], room: usize) -> Vec<Line<'static>> {
    lines
        .iter()
        .flat_map(|line| {
            let clean = Line::from(
                line.spans
                    .iter()
                    .map(|s| Span::styled(sanitize::line(&s.content), s.style))
                    .collect::<Vec<_>>(),
            );
            cells::wrap_line(&clean, room)
        })
        .collect()
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

#[derive(Default)]
pub struct HealthView {
    /// (session id, title, health or why it is unknown)
    pub rows: Vec<(Uuid, String, Result<SandboxHealth, String>)>,
    pub selected: usize,
    pub loaded: bool,
    /// The first row on screen in the last frame.
    pub top: std::cell::Cell<usize>,
}

impl HealthView {
    /// Trouble first, then the rest by title.
    pub fn sort(&mut self) {
        let rank = |r: &Result<SandboxHealth, String>| match r {
            Ok(h) if h.phase.is_trouble() => 0,
            Err(_) => 1,
            Ok(h) if h.phase != HealthPhase::Ready => 2,
            Ok(_) => 3,
        };
        self.rows
            .sort_by(|a, b| rank(&a.2).cmp(&rank(&b.2)).then_with(|| a.1.cmp(&b.1)));
    }

    pub fn upsert(&mut self, id: Uuid, title: String, health: Result<SandboxHealth, String>) {
        match self.rows.iter_mut().find(|r| r.0 == id) {
            Some(row) => row.2 = health,
            None => self.rows.push((id, title, health)),
        }
        self.sort();
    }
}

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

/// The diagnose page: what was found, and where the page is scrolled to.
pub struct DiagnoseView {
    pub diagnosis: Box<Diagnosis>,
    pub scroll: usize,
    pub shown: std::cell::Cell<Rows>,
}

impl DiagnoseView {
    pub fn new(diagnosis: Box<Diagnosis>) -> Self {
        DiagnoseView {
            diagnosis,
            scroll: 0,
            shown: Default::default(),
        }
    }
}

fn block<'a>(app: &App, title: String) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border)
        .title(title)
}

pub fn render(
    f: &mut Frame,
    app: &App,
    panel: &Panel,
    area: Rect,
    now: chrono::DateTime<chrono::Utc>,
) {
    match panel {
        Panel::Health(v) => render_health(f, app, v, area, now),
        Panel::Logs(v) => render_logs(f, app, v, area),
        Panel::Diagnose(d) => render_diagnose(f, app, d, area, now),
    }
}

fn since(t: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

fn render_health(
    f: &mut Frame,
    app: &App,
    v: &HealthView,
    area: Rect,
    now: chrono::DateTime<chrono::Utc>,
) {
    let b = block(
        app,
        format!(" Sandboxes ({}) — trouble first ", v.rows.len()),
    );
    let inner = b.inner(area);
    f.render_widget(b, area);
    if v.rows.is_empty() {
        let text = if v.loaded {
            "No live sandboxes."
        } else {
            "reading sandbox health…"
        };
        f.render_widget(Paragraph::new(Span::styled(text, app.theme.muted)), inner);
        return;
    }
    // The selected sandbox's conditions and events below the table, when there is room.
    let inner = if inner.height >= 16 {
        let [table, details] =
            ratatui::layout::Layout::vertical([Constraint::Min(5), Constraint::Length(8)])
                .areas(inner);
        if let Some(row) = v.rows.get(v.selected) {
            render_health_details(f, app, row, details, now);
        }
        table
    } else {
        inner
    };
    let height = inner.height.saturating_sub(1) as usize;
    app.list_rows.set(height);
    app.list_y.set(inner.y + 1);
    let offset = super::views::scrolled_to(v.top.get(), v.selected, height, v.rows.len());
    v.top.set(offset);
    let all = [
        ("SESSION", Constraint::Fill(2)),
        ("PHASE", Constraint::Length(13)),
        ("READY", Constraint::Length(5)),
        ("REASON", Constraint::Fill(2)),
        ("RESTARTS", Constraint::Length(8)),
        ("LAST EXIT", Constraint::Length(14)),
        ("NODE", Constraint::Length(10)),
        ("SINCE", Constraint::Length(5)),
        ("LAST EVENT", Constraint::Fill(2)),
    ];
    // Narrow terminals keep what says what is wrong.
    let cols: &[usize] = if inner.width >= 110 {
        &[0, 1, 2, 3, 4, 5, 6, 7, 8]
    } else {
        &[0, 1, 3, 4, 7]
    };
    let widths: Vec<Constraint> = cols.iter().map(|&c| all[c].1).collect();
    let room = super::views::column_widths(&widths, inner.width);
    let fit = |column: usize, text: &str| {
        let text = sanitize::line(text);
        let at = cols.iter().position(|&c| c == column);
        let cells = at.and_then(|i| room.get(i)).copied().unwrap_or(0);
        Cell::from(cells::ellipsize(&text, cells).into_owned())
    };
    let rows: Vec<Row> = v
        .rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, (_, title, h))| {
            let cells = match h {
                Ok(h) => {
                    let style = if h.phase.is_trouble() {
                        app.theme.error
                    } else if h.phase == HealthPhase::Ready {
                        app.theme.ok
                    } else {
                        app.theme.warning
                    };
                    let last_event = h
                        .recent_events
                        .last()
                        .map(|e| format!("{}: {}", e.reason, e.message))
                        .unwrap_or_default();
                    vec![
                        fit(0, title),
                        Cell::from(h.phase.as_str()).style(style),
                        Cell::from(if ready(h) { "yes" } else { "no" }),
                        fit(3, h.reason.as_deref().unwrap_or("")),
                        Cell::from(h.restarts.to_string()),
                        fit(5, h.last_termination.as_deref().unwrap_or("")),
                        fit(6, h.node.as_deref().unwrap_or("")),
                        Cell::from(since(h.since, now)),
                        fit(8, &last_event),
                    ]
                }
                Err(e) => vec![
                    fit(0, title),
                    Cell::from("unknown").style(app.theme.warning),
                    Cell::from("?"),
                    fit(3, e),
                ],
            };
            let mut cells: Vec<Option<Cell>> = cells.into_iter().map(Some).collect();
            let row = Row::new(
                cols.iter()
                    .map(|&c| cells.get_mut(c).and_then(Option::take).unwrap_or_default()),
            );
            if i == v.selected {
                row.style(app.theme.selected)
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(cols.iter().map(|&c| all[c].0))
        .style(app.theme.muted.add_modifier(Modifier::BOLD));
    f.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

/// Whether the sandbox is ready: its `Ready` condition when it has one, else its phase.
fn ready(h: &SandboxHealth) -> bool {
    match h.conditions.iter().find(|c| c.kind == "Ready") {
        Some(c) => c.status == "True",
        None => h.phase == HealthPhase::Ready,
    }
}

/// Under the sandboxes table: the selected one's conditions and latest events.
fn render_health_details(
    f: &mut Frame,
    app: &App,
    row: &(Uuid, String, Result<SandboxHealth, String>),
    area: Rect,
    now: chrono::DateTime<chrono::Utc>,
) {
    let t = &app.theme;
    let mut lines = Vec::new();
    match &row.2 {
        Err(e) => lines.push(Line::from(Span::styled(
            format!("health unknown: {e}"),
            t.warning,
        ))),
        Ok(h) => {
            let conditions: Vec<String> = h
                .conditions
                .iter()
                .map(|c| match &c.reason {
                    Some(r) => format!("{}={} ({r})", c.kind, c.status),
                    None => format!("{}={}", c.kind, c.status),
                })
                .collect();
            lines.push(Line::from(vec![
                Span::styled("conditions ", t.muted),
                Span::raw(if conditions.is_empty() {
                    "none reported".to_string()
                } else {
                    conditions.join("  ")
                }),
            ]));
            if h.recent_events.is_empty() {
                lines.push(Line::from(Span::styled("no recent events", t.muted)));
            }
            for e in h.recent_events.iter().rev().take(5).rev() {
                let style = if e.kind == "Warning" {
                    t.warning
                } else {
                    t.text
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{:>4} ago ", since(e.at, now)), t.muted),
                    Span::styled(format!("{} {}: {}", e.kind, e.reason, e.message), style),
                ]));
            }
        }
    }
    let room = usize::from(area.width.saturating_sub(2)).max(1);
    // at most two rows a line: the newest events stay in view
    let rows: Vec<Line> = lines
        .iter()
        .flat_map(|l| {
            wrap_clean(std::slice::from_ref(l), room)
                .into_iter()
                .take(2)
        })
        .collect();
    let title = format!(" {} ", sanitize::line(&row.1));
    f.render_widget(
        Paragraph::new(rows).block(
            Block::default()
                .borders(Borders::TOP)
                .border_style(t.border)
                .title(title),
        ),
        area,
    );
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

fn render_diagnose(
    f: &mut Frame,
    app: &App,
    view: &DiagnoseView,
    area: Rect,
    now: chrono::DateTime<chrono::Utc>,
) {
    let d = &view.diagnosis;
    let s = &d.session;
    let t = &app.theme;
    let mut lines = vec![Line::from(Span::styled("What to do", t.accent))];
    for a in d.advice() {
        lines.push(Line::from(format!("  - {a}")));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Session", t.accent)));
    for (k, v) in [
        ("id", s.id.to_string()),
        ("status", format!("{} ({})", s.status, s.phase)),
        ("detail", s.phase_detail.clone().unwrap_or_default()),
        ("failure", s.failure_reason.clone().unwrap_or_default()),
        ("agent / team", format!("{} / {}", s.agent_id, s.team)),
        (
            "sandbox",
            format!(
                "{} {}",
                s.runtime.clone().unwrap_or_default(),
                s.sandbox_ref.clone().unwrap_or_default()
            ),
        ),
        (
            "harness session",
            s.harness_session_id.clone().unwrap_or_default(),
        ),
        (
            "created / active",
            format!(
                "{} ago / {} ago",
                since(s.created_at, now),
                since(s.last_activity_at, now)
            ),
        ),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<17}"), t.muted),
            Span::raw(sanitize::line(&v)),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Phase history (latest last)",
        t.accent,
    )));
    for e in d.phases.iter().rev().take(12).rev() {
        let phase = e.payload["phase"].as_str().unwrap_or("?");
        let detail = e.payload["detail"]
            .as_str()
            .or(e.payload["failure_reason"].as_str())
            .unwrap_or("");
        lines.push(Line::from(format!(
            "  {}  {phase:<17} {}",
            e.at.format("%H:%M:%S"),
            sanitize::line(detail)
        )));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Sandbox", t.accent)));
    match &d.health {
        None => lines.push(Line::from("  no sandbox")),
        Some(Err(e)) => lines.push(Line::from(Span::styled(
            format!("  unknown: {}", sanitize::line(e)),
            t.warning,
        ))),
        Some(Ok(h)) => {
            lines.push(Line::from(format!(
                "  {}{}  restarts {}  last exit {}  node {}",
                h.phase.as_str(),
                h.reason
                    .as_deref()
                    .map(|r| format!(" ({})", sanitize::line(r)))
                    .unwrap_or_default(),
                h.restarts,
                h.last_termination.as_deref().unwrap_or("-"),
                h.node.as_deref().unwrap_or("-")
            )));
            for c in &h.conditions {
                lines.push(Line::from(format!(
                    "  condition {}={} {}",
                    c.kind,
                    c.status,
                    sanitize::line(c.reason.as_deref().unwrap_or(""))
                )));
            }
            for e in h.recent_events.iter().rev().take(6).rev() {
                lines.push(Line::from(format!(
                    "  event {} {}: {}",
                    e.kind,
                    sanitize::line(&e.reason),
                    sanitize::line(&e.message)
                )));
            }
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Gateway", t.accent)));
    lines.push(Line::from(match &d.gateway {
        Ok(()) => "  answering".to_string(),
        Err(e) => format!("  not answering: {}", sanitize::line(e)),
    }));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Last log lines", t.accent)));
    match &d.log_tail {
        Ok(tail) if tail.is_empty() => lines.push(Line::from("  (empty)")),
        Ok(tail) => lines.extend(
            tail.iter()
                .map(|l| Line::from(format!("  {}", sanitize::line(l)))),
        ),
        Err(e) => lines.push(Line::from(format!("  {}", sanitize::line(e)))),
    }
    // Wrapped here (not by the widget) to know how long the page is.
    let rows = wrap_clean(&lines, usize::from(area.width.saturating_sub(2)).max(1));
    let height = usize::from(area.height.saturating_sub(2));
    let shown = Rows::place(view.scroll, rows.len(), height);
    view.shown.set(shown);
    let Rows { top, max_top, .. } = shown;
    let mut title = format!(" Diagnose · {} ", sanitize::line(&s.title));
    if max_top > 0 {
        title.push_str(&format!(
            "· lines {}-{} of {} (j/k, pgup/pgdn) ",
            top + 1,
            (top + height).min(rows.len()),
            rows.len()
        ));
    }
    let shown: Vec<Line> = rows.into_iter().skip(top).take(height).collect();
    f.render_widget(Paragraph::new(shown).block(block(app, title)), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;
    use crate::model::{Condition, SandboxEvent};
    use crate::tui::actions::Keymap;
    use crate::tui::sessions::tests::session;
    use crate::tui::theme::Theme;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_790_000_600, 0).unwrap_or_default()
    }

    fn health(phase: HealthPhase, reason: Option<&str>) -> SandboxHealth {
        let mut h = SandboxHealth::new(phase);
        h.since = now() - chrono::Duration::seconds(90);
        h.reason = reason.map(str::to_string);
        h.node = Some("node-a".into());
        h
    }

    fn key(c: char) -> crate::tui::app::Msg {
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        crate::tui::app::Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    fn app_with(panel: Panel) -> App {
        let mut app = App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "sqlite:///x.db".into(),
            "local".into(),
        );
        app.panel = Some(panel);
        app
    }

    fn frame(app: &App) -> String {
        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap_or_else(|e| panic!("{e}"));
        term.draw(|f| crate::tui::views::render(f, app, now()))
            .unwrap_or_else(|e| panic!("{e}"));
        term.backend().to_string()
    }

    fn log_lines(from: usize, n: usize) -> Vec<String> {
        (from..from + n)
            .map(|i| format!("line {i} {} END{i}", "x".repeat(150)))
            .collect()
    }

    #[test]
    fn logs_follow_the_end_wrapped_or_not_and_hold_still_when_paused() {
        let mut app = app_with(Panel::Logs(LogView::new(Uuid::from_u128(1), "t".into(), 1)));
        app.update(crate::tui::app::Msg::LogLines {
            stream: 1,
            lines: log_lines(0, 100),
            ended: None,
        });
        let screen = frame(&app);
        assert!(screen.contains("line 99 "), "{screen}");
        assert!(!screen.contains("END99"), "cut, not wrapped: {screen}");
        app.update(key('w'));
        let screen = frame(&app);
        assert!(
            screen.contains("END99"),
            "the end is on screen when wrapped: {screen}"
        );
        // a line from another stream (an earlier `since`) is not this view's
        app.update(crate::tui::app::Msg::LogLines {
            stream: 7,
            lines: vec!["stale".into()],
            ended: None,
        });
        assert!(!frame(&app).contains("stale"));
        // up: paused; down again: following
        app.update(key('k'));
        assert!(frame(&app).contains("paused"));
        app.update(key('j'));
        assert!(!frame(&app).contains("paused"));
        // paused where it was, new lines do not move it
        app.update(key('k'));
        let paused = frame(&app);
        assert!(paused.contains("paused"), "{paused}");
        app.update(crate::tui::app::Msg::LogLines {
            stream: 1,
            lines: log_lines(100, 5),
            ended: None,
        });
        let still = frame(&app);
        assert!(!still.contains("line 104"), "{still}");
        assert!(still.contains("END98"), "{still}");
        // to the end: follows again
        app.update(key('G'));
        let following = frame(&app);
        assert!(following.contains("END104"), "{following}");
        assert!(!following.contains("paused"), "{following}");
    }

    #[test]
    fn logs_filter_shows_matching_lines_and_since_starts_a_new_stream() {
        let mut app = app_with(Panel::Health(HealthView::default()));
        app.panel = None;
        app.update(crate::tui::app::Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        let fx = app.update(key('l'));
        let Some(crate::tui::app::Effect::FollowLogs { stream, since, .. }) = fx.first() else {
            panic!("l follows the log: {fx:?}")
        };
        let first = *stream;
        assert_eq!(*since, 0);
        app.update(crate::tui::app::Msg::LogLines {
            stream: first,
            lines: vec![
                "GET /health 200".into(),
                "ERROR disk full".into(),
                "GET / 200".into(),
            ],
            ended: None,
        });
        app.update(key('/'));
        for c in "error".chars() {
            app.update(key(c));
        }
        let screen = frame(&app);
        assert!(screen.contains("ERROR disk full"), "{screen}");
        assert!(!screen.contains("GET /health"), "{screen}");
        assert!(screen.contains("matching \"error\""), "{screen}");
        app.update(crate::tui::app::Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Enter,
            crossterm::event::KeyModifiers::NONE,
        )));
        assert!(frame(&app).contains("ERROR disk full"));
        let fx = app.update(key('s'));
        let Some(Panel::Logs(v)) = &app.panel else {
            panic!("the log view is open")
        };
        assert_eq!(
            fx,
            vec![crate::tui::app::Effect::FollowLogs {
                session: Uuid::from_u128(1),
                stream: v.stream,
                since: 1
            }]
        );
        assert_ne!(v.stream, first);
        assert!(v.lines.is_empty());
        assert!(frame(&app).contains("last 5 minutes"));
    }

    #[test]
    fn a_log_filter_keeps_up_as_lines_come_and_go() {
        let line = |i: usize| {
            if i.is_multiple_of(10) {
                format!("{i} ERROR disk full")
            } else {
                format!("{i} GET /health 200 (error budget ok)")
            }
        };
        let mut v = LogView::new(Uuid::from_u128(1), "t".into(), 1);
        v.push((0..50).map(line).collect());
        v.set_filter("ERROR");
        for start in (50..LOG_KEEP + 3000).step_by(700) {
            v.push((start..start + 700).map(line).collect());
        }
        let kept: Vec<String> = v.visible().iter().map(|l| l.to_string()).collect();
        assert!(kept.iter().all(|l| l.contains("ERROR")));
        assert_eq!(kept.len(), LOG_KEEP / 10, "one in ten of the lines kept");
        // the same as filtering what is kept afresh
        let mut fresh = LogView::new(Uuid::from_u128(1), "t".into(), 1);
        fresh.push(v.lines.iter().cloned().collect());
        fresh.set_filter("ERROR");
        assert_eq!(fresh.visible(), v.visible());
        // smart case: lowercase matches any case
        v.set_filter("error");
        assert_eq!(v.visible().len(), v.lines.len());
        v.set_filter("");
        assert_eq!(v.filter_text(), None);
        assert_eq!(v.visible().len(), LOG_KEEP);
    }

    #[test]
    fn diagnose_scrolls_a_page_longer_than_the_screen() {
        let d = Diagnosis {
            session: session(7, "coder", SessionStatus::Idle),
            phases: vec![],
            health: None,
            log_tail: Ok((0..60).map(|i| format!("log line {i}")).collect()),
            gateway: Ok(()),
        };
        let mut app = app_with(Panel::Diagnose(DiagnoseView::new(Box::new(d))));
        let first = frame(&app);
        assert!(first.contains("What to do"), "{first}");
        assert!(first.contains("lines 1-"), "{first}");
        assert!(!first.contains("log line 59"), "{first}");
        app.update(key('G'));
        let last = frame(&app);
        assert!(last.contains("log line 59"), "{last}");
        assert!(!last.contains("What to do"), "{last}");
        app.update(key('k'));
        assert!(!frame(&app).contains("log line 59"));
        app.update(key('g'));
        assert!(frame(&app).contains("What to do"));
    }

    /// Snapshots of the panel `build` makes at 80x24 and 160x48, in the default and the mono
    /// theme; the mono 160x48 screen is returned to look at.
    fn snap(name: &str, build: impl Fn() -> Panel) -> String {
        let mut last = String::new();
        for (theme, suffix) in [(Theme::default_theme(), ""), (Theme::mono(), "_mono")] {
            for (w, h) in [(80u16, 24u16), (160, 48)] {
                let mut app = App::new(
                    Keymap::new(false),
                    theme.clone(),
                    vec![],
                    "sqlite:///x.db".into(),
                    "kubernetes:prod-eu".into(),
                );
                app.panel = Some(build());
                // The session the panel is about is in the list, as it is in the cockpit (the
                // hint bar offers what can be done to it).
                let session = match app.panel.as_ref() {
                    Some(Panel::Diagnose(d)) => Some(d.diagnosis.session.clone()),
                    Some(Panel::Health(v)) => v.rows.get(v.selected).map(|r| {
                        let mut s =
                            crate::tui::sessions::tests::session(1, "coder", SessionStatus::Idle);
                        s.id = r.0;
                        s
                    }),
                    Some(Panel::Logs(v)) => {
                        let mut s =
                            crate::tui::sessions::tests::session(1, "coder", SessionStatus::Idle);
                        s.id = v.session;
                        Some(s)
                    }
                    None => None,
                };
                app.update(crate::tui::app::Msg::Sessions(
                    session.into_iter().collect(),
                ));
                let mut term =
                    Terminal::new(TestBackend::new(w, h)).unwrap_or_else(|e| panic!("{e}"));
                term.draw(|f| crate::tui::views::render(f, &app, now()))
                    .unwrap_or_else(|e| panic!("{e}"));
                insta::assert_snapshot!(format!("{name}{suffix}_{w}x{h}"), term.backend());
                last = term.backend().to_string();
            }
        }
        last
    }

    fn health_view() -> HealthView {
        let mut v = HealthView {
            loaded: true,
            ..Default::default()
        };
        let mut oom = health(HealthPhase::CrashLooping, Some("CrashLoopBackOff"));
        oom.restarts = 4;
        oom.last_termination = Some("OOMKilled (exit code 137)".into());
        oom.recent_events.push(SandboxEvent {
            at: now(),
            kind: "Warning".into(),
            reason: "BackOff".into(),
            message: "restarting failed container".into(),
        });
        v.upsert(
            Uuid::from_u128(1),
            "all good".into(),
            Ok(health(HealthPhase::Ready, None)),
        );
        v.upsert(Uuid::from_u128(2), "memory hog".into(), Ok(oom));
        v.upsert(
            Uuid::from_u128(3),
            "pulling".into(),
            Ok(health(
                HealthPhase::Pulling,
                Some("ImagePullBackOff: Back-off pulling image \"registry.example/agents/opencode:1.4\""),
            )),
        );
        v
    }

    #[test]
    fn health_puts_trouble_first() {
        assert_eq!(health_view().rows[0].1, "memory hog");
        let screen = snap("panel_health", || Panel::Health(health_view()));
        assert!(screen.contains("memory hog"), "{screen}");
    }

    #[test]
    fn logs_say_when_lines_were_dropped() {
        let logs = || {
            let mut v = LogView::new(Uuid::from_u128(1), "task 1".into(), 1);
            v.push(
                (0..LOG_KEEP + 5)
                    .map(|i| format!("line {i} \u{1b}[31mred\u{1b}[0m"))
                    .collect(),
            );
            v
        };
        assert_eq!(logs().dropped, 5);
        assert_eq!(logs().lines.len(), LOG_KEEP);
        let screen = snap("panel_logs", || Panel::Logs(logs()));
        assert!(screen.contains("5 older lines dropped"), "{screen}");
        assert!(!screen.contains('\u{1b}'));
    }

    #[test]
    fn diagnose_gives_advice() {
        let diagnosis = || {
            let mut s = session(7, "coder", SessionStatus::Failed);
            s.failure_reason = Some("cannot create the sandbox: opencode not found on PATH".into());
            let mut h = health(HealthPhase::Failed, Some("exit code 127"));
            h.conditions.push(Condition {
                kind: "Ready".into(),
                status: "False".into(),
                reason: Some("ContainersNotReady".into()),
                message: None,
            });
            Diagnosis {
                session: s,
                phases: vec![],
                health: Some(Ok(h)),
                log_tail: Ok(vec!["sh: 1: opencode: not found".into()]),
                gateway: Err("nothing listens at http://127.0.0.1:4000".into()),
            }
        };
        let advice = diagnosis().advice();
        assert!(
            advice.iter().any(|a| a.contains("offline-stack.sh")),
            "{advice:?}"
        );
        assert!(advice.iter().any(|a| a.contains("gateway")), "{advice:?}");
        snap("panel_diagnose", || {
            Panel::Diagnose(DiagnoseView::new(Box::new(diagnosis())))
        });
    }
}
