//! The sandboxes screen: every live session's sandbox health, trouble first, with the
//! selected one's conditions and latest events below.

use super::actions::{Action, Scope};
use super::app::{App, Effect};
use super::cells;
use super::panels::{block, since, wrap_clean};
use super::screen::{Cx, ListShown, Screen};
use crate::model::{HealthPhase, SandboxHealth};
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use uuid::Uuid;

#[derive(Default)]
pub struct HealthView {
    /// (session id, title, health or why it is unknown)
    pub rows: Vec<(Uuid, String, Result<SandboxHealth, String>)>,
    pub selected: usize,
    pub loaded: bool,
    /// Where the table stood in the last frame.
    pub shown: ListShown,
    /// The agents' warm pools, a line above the table.
    pub pools: Vec<crate::model::PoolHealth>,
}

/// The warm pools in one line: `coder 2/2 ready · last claim 12 ms · 5 claimed, 1 found it
/// empty`, pool after pool.
pub fn pools_line(pools: &[crate::model::PoolHealth]) -> String {
    pools
        .iter()
        .map(|p| {
            let mut s = format!("{} {}/{} ready", p.agent, p.ready, p.want.max(p.ready));
            if p.starting > 0 {
                s.push_str(&format!(" ({} starting)", p.starting));
            }
            if let Some(ms) = p.last_claim_ms {
                s.push_str(&format!(", last claim {ms} ms"));
            }
            if p.claims + p.misses > 0 {
                s.push_str(&format!(
                    ", {} claimed, {} found it empty",
                    p.claims, p.misses
                ));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("  ·  ")
}

impl HealthView {
    /// Trouble first, then the rest by title; the cursor stays on its sandbox (a row that
    /// moves under it must not make the next key act on another session).
    pub fn sort(&mut self) {
        let selected = self.rows.get(self.selected).map(|r| r.0);
        let rank = |r: &Result<SandboxHealth, String>| match r {
            Ok(h) if h.phase.is_trouble() => 0,
            Err(_) => 1,
            Ok(h) if h.phase != HealthPhase::Ready => 2,
            Ok(_) => 3,
        };
        self.rows
            .sort_by(|a, b| rank(&a.2).cmp(&rank(&b.2)).then_with(|| a.1.cmp(&b.1)));
        if let Some(at) = selected.and_then(|id| self.rows.iter().position(|r| r.0 == id)) {
            self.selected = at;
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
    }

    /// A fresh read of the whole fleet; the cursor stays on its sandbox while it is listed.
    pub fn replace(&mut self, rows: Vec<(Uuid, String, Result<SandboxHealth, String>)>) {
        let selected = self.rows.get(self.selected).map(|r| r.0);
        self.rows = rows;
        self.loaded = true;
        self.sort();
        if let Some(at) = selected.and_then(|id| self.rows.iter().position(|r| r.0 == id)) {
            self.selected = at;
        }
    }

    pub fn upsert(&mut self, id: Uuid, title: String, health: Result<SandboxHealth, String>) {
        match self.rows.iter_mut().find(|r| r.0 == id) {
            Some(row) => row.2 = health,
            None => self.rows.push((id, title, health)),
        }
        self.sort();
    }
}

impl Screen for HealthView {
    fn scope(&self) -> Scope {
        Scope::Sandboxes
    }

    fn session(&self) -> Option<Uuid> {
        self.rows.get(self.selected).map(|r| r.0)
    }

    fn on_action(&mut self, action: Action, _: &mut Cx<'_>) -> Option<Vec<Effect>> {
        match action {
            Action::Bottom | Action::Follow => self.scroll(isize::MAX),
            _ => return None,
        }
        Some(vec![])
    }

    fn scroll(&mut self, delta: isize) {
        let last = self.rows.len().saturating_sub(1);
        self.selected = self.selected.saturating_add_signed(delta).min(last);
    }

    fn page(&self) -> usize {
        self.shown.page()
    }

    fn click(&mut self, y: u16) -> bool {
        match self.shown.row_at(y).filter(|i| *i < self.rows.len()) {
            Some(i) => {
                self.selected = i;
                true
            }
            None => false,
        }
    }

    fn draw(&self, f: &mut Frame, app: &App, area: Rect, now: chrono::DateTime<chrono::Utc>) {
        render_health(f, app, self, area, now);
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
    // The warm pools first, when there are any: what a new session will start from.
    let inner = if v.pools.is_empty() || inner.height < 3 {
        inner
    } else {
        let [line, rest] =
            ratatui::layout::Layout::vertical([Constraint::Length(1), Constraint::Min(1)])
                .areas(inner);
        let text = sanitize::line(&pools_line(&v.pools));
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("warm pools  ", app.theme.muted),
                Span::raw(
                    cells::ellipsize(&text, usize::from(line.width).saturating_sub(12))
                        .into_owned(),
                ),
            ])),
            line,
        );
        rest
    };
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
    v.shown.rows.set(height);
    v.shown.y.set(inner.y + 1);
    let offset = super::views::scrolled_to(v.shown.top.get(), v.selected, height, v.rows.len());
    v.shown.top.set(offset);
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
            let mut head = vec![
                Span::styled("conditions ", t.muted),
                Span::raw(if conditions.is_empty() {
                    "none reported".to_string()
                } else {
                    conditions.join("  ")
                }),
            ];
            if let Some(launch) = &h.launch {
                head.push(Span::styled("   launch ", t.muted));
                head.push(Span::raw(format!(
                    "{} (from its agent's pool)",
                    sanitize::line(launch)
                )));
            }
            lines.push(Line::from(head));
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
