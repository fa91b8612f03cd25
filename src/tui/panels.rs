//! The screens over the session list (sandbox health, a sandbox's log, a session's
//! diagnosis; each in its own module) and what their drawing shares.

use super::app::App;
use super::cells;
use super::screen::Screen;
use crate::sanitize;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};

pub use super::changes::ChangesView;
pub use super::diagnose::DiagnoseView;
pub use super::health::HealthView;
pub use super::logs::{LOG_KEEP, LogView, SINCE, Since};
pub use super::screen::Rows;

pub enum Panel {
    Health(HealthView),
    Logs(LogView),
    Diagnose(DiagnoseView),
    Changes(ChangesView),
}

impl Panel {
    pub fn screen(&self) -> &dyn Screen {
        match self {
            Panel::Health(v) => v,
            Panel::Logs(v) => v,
            Panel::Diagnose(v) => v,
            Panel::Changes(v) => v,
        }
    }

    pub fn screen_mut(&mut self) -> &mut dyn Screen {
        match self {
            Panel::Health(v) => v,
            Panel::Logs(v) => v,
            Panel::Diagnose(v) => v,
            Panel::Changes(v) => v,
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

pub(super) fn block<'a>(app: &App, title: String) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border)
        .title(title)
}

pub(super) fn since(
    t: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let s = (now - t).num_seconds().max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Diagnosis;
    use crate::model::{Condition, SandboxEvent};
    use crate::model::{HealthPhase, SandboxHealth, SessionStatus};
    use crate::tui::actions::Keymap;
    use crate::tui::sessions::tests::session;
    use crate::tui::theme::Theme;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use uuid::Uuid;

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
            ..Diagnosis::of(session(7, "coder", SessionStatus::Idle))
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
                    Some(Panel::Changes(v)) => {
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
        // The operator moved to the top row (the first one in trouble).
        v.selected = 0;
        v
    }

    #[test]
    fn health_puts_trouble_first() {
        assert_eq!(health_view().rows[0].1, "memory hog");
        let screen = snap("panel_health", || Panel::Health(health_view()));
        assert!(screen.contains("memory hog"), "{screen}");
    }

    #[test]
    fn health_shows_the_warm_pools_and_how_a_sandbox_was_launched() {
        let build = || {
            let mut v = health_view();
            let mut warm = health(HealthPhase::Ready, None);
            warm.launch = Some("warm".into());
            v.upsert(Uuid::from_u128(4), "from the pool".into(), Ok(warm));
            v.selected = v.rows.iter().position(|r| r.1 == "from the pool").unwrap();
            v.pools = vec![
                crate::model::PoolHealth {
                    agent: "coder".into(),
                    want: 2,
                    ready: 1,
                    starting: 1,
                    claims: 5,
                    misses: 1,
                    last_claim_ms: Some(12),
                },
                crate::model::PoolHealth {
                    agent: "reviewer".into(),
                    want: 1,
                    ready: 1,
                    ..Default::default()
                },
            ];
            Panel::Health(v)
        };
        let screen = snap("panel_health_pools", build);
        assert!(
            screen.contains("warm pools  coder 1/2 ready (1 starting), last claim 12 ms, 5 claimed, 1 found it empty  ·  reviewer 1/1 ready"),
            "{screen}"
        );
        assert!(
            screen.contains("launch warm (from its agent's pool)"),
            "{screen}"
        );
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
                ..Diagnosis::of(session(7, "coder", SessionStatus::Failed))
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
