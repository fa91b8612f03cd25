//! The cockpit's other screens: sandbox health across sessions, one sandbox's logs, and the
//! diagnose page for one session. State and a pure `render` each.

use super::app::App;
use crate::model::{Event, Session};
use crate::runtime::{HealthPhase, SandboxHealth};
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};
use std::collections::VecDeque;
use uuid::Uuid;

/// Lines a log view keeps; older ones are dropped (and counted).
pub const LOG_KEEP: usize = 10_000;

pub enum Panel {
    Health(HealthView),
    Logs(LogView),
    Diagnose(Box<Diagnosis>),
}

#[derive(Default)]
pub struct HealthView {
    /// (session id, title, health or why it is unknown)
    pub rows: Vec<(Uuid, String, Result<SandboxHealth, String>)>,
    pub selected: usize,
    pub loaded: bool,
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
    pub lines: VecDeque<String>,
    pub dropped: u64,
    pub follow: bool,
    pub scroll: usize,
    pub wrap: bool,
    pub ended: Option<String>,
}

impl LogView {
    pub fn new(session: Uuid, title: String) -> Self {
        LogView {
            session,
            title,
            lines: VecDeque::new(),
            dropped: 0,
            follow: true,
            scroll: 0,
            wrap: false,
            ended: None,
        }
    }

    pub fn push(&mut self, lines: Vec<String>) {
        for line in lines {
            if self.lines.len() == LOG_KEEP {
                self.lines.pop_front();
                self.dropped += 1;
            }
            self.lines.push_back(line);
        }
    }
}

/// Everything about one session on one page, with what to do about what is wrong.
#[derive(Debug)]
pub struct Diagnosis {
    pub session: Session,
    pub phases: Vec<Event>,
    pub health: Option<Result<SandboxHealth, String>>,
    pub log_tail: Result<Vec<String>, String>,
    pub gateway: Result<(), String>,
}

impl Diagnosis {
    /// Plain advice for what the page shows.
    pub fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        let s = &self.session;
        if let Some(reason) = &s.failure_reason {
            if reason.contains("not found on PATH") {
                out.push("Install the agent's command, or run `eval \"$(scripts/offline-stack.sh up)\"`, then restart (R).".into());
            } else if reason.contains("ImagePullBackOff") || reason.contains("ErrImagePull") {
                out.push("The image cannot be pulled: check the agent's image name and the registry credentials.".into());
            } else if reason.contains("not ready within") {
                out.push("The sandbox did not come up in time: look at its log (l) and events below, then restart (R).".into());
            } else {
                out.push(
                    "The session failed: fix the cause above, then restart it (R) or end it (X)."
                        .into(),
                );
            }
        }
        match &self.health {
            Some(Ok(h))
                if h.last_termination
                    .as_deref()
                    .is_some_and(|t| t.contains("OOMKilled")) =>
            {
                out.push(
                    "The agent ran out of memory: raise memory_limit under [agents.ID].".into(),
                )
            }
            Some(Ok(h)) if h.phase == HealthPhase::CrashLooping => {
                out.push("The agent keeps crashing: its log (l) says why.".into())
            }
            Some(Ok(h)) if h.phase == HealthPhase::Scheduling => out.push(
                "No node can take the sandbox: check resource requests and cluster capacity."
                    .into(),
            ),
            Some(Err(e)) => out.push(format!("The runtime cannot tell the sandbox's health: {e}")),
            _ => {}
        }
        if let Err(e) = &self.gateway {
            out.push(format!(
                "The gateway is not answering ({e}): agents cannot reach their model."
            ));
        }
        if out.is_empty() {
            out.push("Nothing looks wrong.".into());
        }
        out
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
    let height = inner.height.saturating_sub(1) as usize;
    let offset = v.selected.saturating_sub(height.saturating_sub(1));
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
                        Cell::from(sanitize::line(title)),
                        Cell::from(h.phase.as_str()).style(style),
                        Cell::from(sanitize::line(h.reason.as_deref().unwrap_or(""))),
                        Cell::from(h.restarts.to_string()),
                        Cell::from(sanitize::line(h.last_termination.as_deref().unwrap_or(""))),
                        Cell::from(sanitize::line(h.node.as_deref().unwrap_or(""))),
                        Cell::from(since(h.since, now)),
                        Cell::from(sanitize::line(&last_event)),
                    ]
                }
                Err(e) => vec![
                    Cell::from(sanitize::line(title)),
                    Cell::from("unknown").style(app.theme.warning),
                    Cell::from(sanitize::line(e)),
                ],
            };
            let row = Row::new(cells);
            if i == v.selected {
                row.style(app.theme.selected)
            } else {
                row
            }
        })
        .collect();
    let header = Row::new([
        "SESSION",
        "PHASE",
        "REASON",
        "RESTARTS",
        "LAST EXIT",
        "NODE",
        "SINCE",
        "LAST EVENT",
    ])
    .style(app.theme.muted.add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(13),
        Constraint::Fill(2),
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Fill(2),
    ];
    f.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

fn render_logs(f: &mut Frame, app: &App, v: &LogView, area: Rect) {
    let mut title = format!(" Log · {} ", sanitize::line(&v.title));
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
    let height = inner.height as usize;
    let max_top = v.lines.len().saturating_sub(height);
    let top = if v.follow {
        max_top
    } else {
        v.scroll.min(max_top)
    };
    let mut lines: Vec<Line> = v
        .lines
        .iter()
        .skip(top)
        .take(height)
        .map(|l| Line::from(sanitize::line(l)))
        .collect();
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            v.ended
                .clone()
                .unwrap_or_else(|| "waiting for log lines…".into()),
            app.theme.muted,
        )));
    } else if let Some(end) = &v.ended {
        lines.push(Line::from(Span::styled(
            format!("-- {end} --"),
            app.theme.muted,
        )));
    }
    let mut p = Paragraph::new(lines);
    if v.wrap {
        p = p.wrap(Wrap { trim: false });
    }
    f.render_widget(p, inner);
}

fn render_diagnose(
    f: &mut Frame,
    app: &App,
    d: &Diagnosis,
    area: Rect,
    now: chrono::DateTime<chrono::Utc>,
) {
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
    let b = block(app, format!(" Diagnose · {} ", sanitize::line(&s.title)));
    f.render_widget(
        Paragraph::new(lines).block(b).wrap(Wrap { trim: false }),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;
    use crate::runtime::{Condition, SandboxEvent};
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

    fn draw(panel: Panel) -> String {
        let mut app = App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "sqlite:///x.db".into(),
            "kubernetes".into(),
        );
        app.panel = Some(panel);
        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap_or_else(|e| panic!("{e}"));
        term.draw(|f| crate::tui::views::render(f, &app, now()))
            .unwrap_or_else(|e| panic!("{e}"));
        term.backend().to_string()
    }

    #[test]
    fn health_puts_trouble_first() {
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
                Some("ImagePullBackOff: no such image"),
            )),
        );
        assert_eq!(v.rows[0].1, "memory hog");
        insta::assert_snapshot!("panel_health", draw(Panel::Health(v)));
    }

    #[test]
    fn logs_say_when_lines_were_dropped() {
        let mut v = LogView::new(Uuid::from_u128(1), "task 1".into());
        v.push(
            (0..LOG_KEEP + 5)
                .map(|i| format!("line {i} \u{1b}[31mred\u{1b}[0m"))
                .collect(),
        );
        assert_eq!(v.dropped, 5);
        assert_eq!(v.lines.len(), LOG_KEEP);
        let screen = draw(Panel::Logs(v));
        assert!(screen.contains("5 older lines dropped"), "{screen}");
        assert!(!screen.contains('\u{1b}'));
        insta::assert_snapshot!("panel_logs", screen);
    }

    #[test]
    fn diagnose_gives_advice() {
        let mut s = session(7, "coder", SessionStatus::Failed);
        s.failure_reason = Some("cannot create the sandbox: opencode not found on PATH".into());
        let mut h = health(HealthPhase::Failed, Some("exit code 127"));
        h.conditions.push(Condition {
            kind: "Ready".into(),
            status: "False".into(),
            reason: Some("ContainersNotReady".into()),
            message: None,
        });
        let d = Diagnosis {
            session: s,
            phases: vec![],
            health: Some(Ok(h)),
            log_tail: Ok(vec!["sh: 1: opencode: not found".into()]),
            gateway: Err("nothing listens at http://127.0.0.1:4000".into()),
        };
        let advice = d.advice();
        assert!(
            advice.iter().any(|a| a.contains("offline-stack.sh")),
            "{advice:?}"
        );
        assert!(advice.iter().any(|a| a.contains("gateway")), "{advice:?}");
        insta::assert_snapshot!("panel_diagnose", draw(Panel::Diagnose(Box::new(d))));
    }
}
