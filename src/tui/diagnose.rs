//! The diagnose screen: everything about one session on one page (assembled by the core,
//! see [`crate::core::Diagnosis`]), with what to do first.

use super::actions::{Action, Scope};
use super::app::{App, Effect};
use super::panels::{block, since, wrap_clean};
use super::screen::{Cx, Rows, Screen, step};
use crate::core::Diagnosis;
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use uuid::Uuid;

/// The diagnose page: what was found, and where the page is scrolled to.
pub struct DiagnoseView {
    pub diagnosis: Box<Diagnosis>,
    pub scroll: usize,
    pub shown: std::cell::Cell<Rows>,
    /// The core is still looking (the page shows the session as listed meanwhile).
    pub looking: bool,
}

impl DiagnoseView {
    pub fn new(diagnosis: Box<Diagnosis>) -> Self {
        DiagnoseView {
            diagnosis,
            scroll: 0,
            shown: Default::default(),
            looking: false,
        }
    }

    /// The page of `session` while the core looks at it.
    pub fn looking(session: crate::model::Session) -> Self {
        DiagnoseView {
            looking: true,
            ..DiagnoseView::new(Box::new(Diagnosis::of(session)))
        }
    }
}

impl Screen for DiagnoseView {
    fn scope(&self) -> Scope {
        Scope::Diagnose
    }

    fn session(&self) -> Option<Uuid> {
        Some(self.diagnosis.session.id)
    }

    fn on_action(&mut self, action: Action, _: &mut Cx<'_>) -> Option<Vec<Effect>> {
        match action {
            Action::Bottom | Action::Follow => self.scroll(isize::MAX),
            _ => return None,
        }
        Some(vec![])
    }

    fn scroll(&mut self, delta: isize) {
        self.scroll = step(self.scroll, self.shown.get().max_top, delta).0;
    }

    fn page(&self) -> usize {
        self.shown.get().height
    }

    fn draw(&self, f: &mut Frame, app: &App, area: Rect, now: chrono::DateTime<chrono::Utc>) {
        render_diagnose(f, app, self, area, now);
    }
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
    if view.looking {
        lines.push(Line::from(Span::styled(
            "  looking at the session, its sandbox, its log and the gateway…",
            t.muted,
        )));
    } else {
        for a in d.advice() {
            lines.push(Line::from(format!("  - {a}")));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Session", t.accent)));
    for (k, v) in [
        ("id", s.id.to_string()),
        ("status", format!("{} ({})", s.status.word(), s.phase)),
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
    // Its family: where it was forked from, and what was forked from it.
    let mut family = Vec::new();
    if let Some(parent) = s.parent_id {
        family.push((
            "forked from".to_string(),
            format!("{parent} at message #{}", s.fork_seq.unwrap_or_default()),
        ));
    }
    for f in &d.forks {
        family.push((
            "fork".to_string(),
            format!(
                "{} {} at #{} ({})",
                f.id,
                sanitize::line(&f.title),
                f.fork_seq.unwrap_or_default(),
                f.status
            ),
        ));
    }
    for (k, v) in family {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<17}"), t.muted),
            Span::raw(v),
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
