//! Drawing: a pure function of the app's state. Every piece of text from agents, pods or users
//! goes through `sanitize` first; status is told by glyph and word, never by colour alone.

use super::actions::{ActionDef, Scope};
use super::app::{App, Dialog, HelpView};
use super::cells;
use super::panels::Rows;
use super::transcript;
use crate::model::{Message, Session, SessionStatus};
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

pub fn glyph(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Creating => "~",
        SessionStatus::Ready | SessionStatus::Idle => "o",
        SessionStatus::Busy => "*",
        SessionStatus::Suspended => "=",
        SessionStatus::Dead => "-",
        SessionStatus::Failed => "!",
    }
}

/// What an agent asks, as lines (sanitised: every word of it comes from the agent), with the
/// keys that answer it when `keys`.
pub fn ask_lines(app: &App, ask: &crate::model::Ask, keys: bool) -> Vec<Line<'static>> {
    use crate::model::AskKind;
    let t = &app.theme;
    let mut lines = Vec::new();
    match ask.kind {
        AskKind::Permission => {
            let what: Vec<String> = ask.detail["patterns"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_str())
                        .map(sanitize::line)
                        .collect()
                })
                .unwrap_or_default();
            lines.push(Line::from(vec![
                Span::styled("? ", t.warning),
                Span::styled(
                    format!(
                        "{}: ",
                        sanitize::line(&crate::model::permission_wants(&ask.title))
                    ),
                    t.warning,
                ),
                Span::raw(what.join(", ")),
            ]));
            if keys {
                lines.push(Line::from(Span::styled(
                    "  a allow once · A allow always · r reject (with a reason)",
                    t.muted,
                )));
            }
        }
        AskKind::Question => {
            for q in ask.detail["questions"].as_array().into_iter().flatten() {
                lines.push(Line::from(vec![
                    Span::styled("? ", t.warning),
                    Span::styled(
                        sanitize::line(q["question"].as_str().unwrap_or("")),
                        t.warning,
                    ),
                ]));
                let options: Vec<String> = q["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, o)| {
                        format!(
                            "{} {}",
                            i + 1,
                            sanitize::line(o["label"].as_str().unwrap_or(""))
                        )
                    })
                    .collect();
                lines.push(Line::from(format!("  {}", options.join(" · "))));
            }
            if keys {
                lines.push(Line::from(Span::styled("  a answer · r decline", t.muted)));
            }
        }
    }
    lines
}

pub(super) fn age(t: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// When an idle session will be suspended for being idle (the SUSPENDS column): `in 29:57`.
pub(super) fn countdown(s: &Session, now: chrono::DateTime<chrono::Utc>) -> String {
    match s.idle_deadline {
        Some(d) if SessionStatus::AT_REST.contains(&s.status) => {
            let left = (d - now).num_seconds().max(0);
            format!("in {}:{:02}", left / 60, left % 60)
        }
        _ => String::new(),
    }
}

pub fn render(f: &mut Frame, app: &App, now: chrono::DateTime<chrono::Utc>) {
    let [top, main, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    render_top(f, app, top);
    app.screen().draw(f, app, main, now);
    render_status(f, app, status);
    render_hints(f, app, hints);
    match &app.dialog {
        Some(Dialog::Help(help)) => render_help(f, app, help),
        Some(Dialog::Confirm { action, title, .. }) => {
            let verb = format!("{action:?}").to_lowercase();
            let question = format!("{verb} \"{}\"?", sanitize::line(title));
            let width = 56.min(f.area().width);
            let mut text =
                cells::wrap_line(&Line::from(question), usize::from(width.saturating_sub(2)));
            text.push(Line::from(""));
            text.push(Line::from(vec![
                Span::styled("y", app.theme.accent),
                Span::raw(" yes    "),
                Span::styled("any other key", app.theme.accent),
                Span::raw(" no"),
            ]));
            let height = text.len() as u16 + 2;
            popup(f, app, "Confirm", text, width, height);
        }
        Some(Dialog::Filter(area)) => {
            let r = centered(f.area(), 60, 3);
            f.render_widget(Clear, r);
            let block = Block::default()
                .borders(Borders::ALL)
                .border_style(app.theme.border)
                .title(" Filter (enter keeps it, esc closes) ");
            let inner = block.inner(r);
            f.render_widget(block, r);
            f.render_widget(&**area, inner);
        }
        Some(Dialog::NewSession(form)) => {
            let r = centered(f.area(), 64, 14);
            f.render_widget(Clear, r);
            let block = Block::default()
                .borders(Borders::ALL)
                .border_style(app.theme.border)
                .title(" New session (tab next field, ctrl-s start, esc cancel) ");
            let inner = block.inner(r);
            f.render_widget(block, r);
            let [agent, title, prompt] = Layout::vertical([
                Constraint::Length(3),
                Constraint::Length(3),
                Constraint::Min(3),
            ])
            .areas(inner);
            let mark = |i: usize| {
                if form.field == i {
                    app.theme.accent
                } else {
                    app.theme.muted
                }
            };
            let chosen = form
                .agents
                .get(form.agent)
                .map(|a| sanitize::line(&a.label()))
                .unwrap_or_default();
            f.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::raw(format!("< {chosen} >")),
                    Span::styled("  up/down to choose", app.theme.muted),
                ]))
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .border_style(mark(0))
                        .title(" agent "),
                ),
                agent,
            );
            let boxed = |t: &'static str, i: usize| {
                Block::default()
                    .borders(Borders::ALL)
                    .border_style(mark(i))
                    .title(t)
            };
            f.render_widget(Paragraph::new(""), title);
            let tb = boxed(" title ", 1);
            let ti = tb.inner(title);
            f.render_widget(tb, title);
            f.render_widget(&form.title, ti);
            let pb = boxed(" first message ", 2);
            let pi = pb.inner(prompt);
            f.render_widget(pb, prompt);
            f.render_widget(&form.prompt, pi);
        }
        Some(Dialog::Reply {
            ask,
            input,
            answers,
            ..
        }) => {
            let width = 70.min(f.area().width);
            let room = usize::from(width.saturating_sub(2));
            let mut text = Vec::new();
            for line in ask_lines(app, ask, false) {
                text.extend(cells::wrap_line(&line, room));
            }
            text.push(Line::from(""));
            let parts = ask.detail["questions"].as_array().map_or(0, Vec::len);
            let title = match ask.kind {
                crate::model::AskKind::Permission => "Reject (why?)".to_string(),
                crate::model::AskKind::Question if parts > 1 => {
                    let part = answers.len().min(parts - 1);
                    let question = sanitize::line(
                        ask.detail["questions"][part]["header"]
                            .as_str()
                            .or(ask.detail["questions"][part]["question"].as_str())
                            .unwrap_or(""),
                    );
                    format!("Answer {} of {parts}: {question}", part + 1)
                }
                crate::model::AskKind::Question => "Answer".to_string(),
            };
            input_dialog(f, app, &title, text, width, input);
        }
        Some(Dialog::Fork { input, .. }) => {
            let text = vec![Line::from(Span::styled(
                "a new session in a sandbox of its own; this one goes on",
                app.theme.muted,
            ))];
            let title = "Fork at message # (its conversation up to there)";
            input_dialog(f, app, title, text, 60, input);
        }
        Some(Dialog::Search(_)) | None => {}
    }
}

fn render_top(f: &mut Frame, app: &App, area: Rect) {
    let total = app.sessions.total();
    let failed = app.sessions.count(SessionStatus::Failed);
    let busy = app.sessions.count(SessionStatus::Busy);
    let mut spans = vec![
        Span::styled(" agentdeck ", app.theme.accent),
        Span::raw(format!("{total} sessions  {busy} busy  ")),
    ];
    if failed > 0 {
        spans.push(Span::styled(format!("{failed} failed!  "), app.theme.error));
    }
    let waiting = app.sessions.waiting();
    if waiting > 0 {
        spans.push(Span::styled(
            format!("{waiting} waiting for you?  "),
            app.theme.warning,
        ));
    }
    if app.keymap.read_only() {
        spans.push(Span::styled("[read-only]  ", app.theme.warning));
    }
    // a team at 80% of its monthly budget and on
    for b in &app.budgets {
        match b.spent() {
            Some(spent) if spent >= crate::model::BUDGET_WARN => spans.push(Span::styled(
                format!(
                    "team {} {} of {} {:.0}%{}  ",
                    sanitize::line(&b.team),
                    crate::model::usd(b.spent_usd),
                    crate::model::usd(b.budget_usd.unwrap_or_default()),
                    (spent * 100.0).min(999.0),
                    if spent >= 1.0 { "!" } else { "" }
                ),
                if spent >= 1.0 {
                    app.theme.error
                } else {
                    app.theme.warning
                },
            )),
            _ => {}
        }
    }
    match &app.connectivity {
        Some(c) => {
            use crate::deck::ServerLink;
            // A client of `serve`: each server's link first (by name when there are several);
            // what the servers say only while one is up.
            let mut linked = c.servers.is_empty();
            for server in &c.servers {
                let name = server.name.as_deref().unwrap_or("server");
                let name = sanitize::line(name);
                match &server.link {
                    ServerLink::Connected => {
                        spans.push(Span::styled(format!("{name} ok "), app.theme.muted));
                        linked = true;
                    }
                    ServerLink::Reconnecting(_) => spans.push(Span::styled(
                        format!("{name} reconnecting… "),
                        app.theme.warning,
                    )),
                    ServerLink::Refused(_) => {
                        spans.push(Span::styled(format!("{name} REFUSED "), app.theme.error))
                    }
                }
            }
            let mut item = |name: &str, ok: &Result<(), String>| {
                if !linked {
                    return;
                }
                let (mark, style) = match ok {
                    Ok(()) => ("ok", app.theme.muted),
                    Err(_) => ("DOWN", app.theme.error),
                };
                spans.push(Span::styled(format!("{name} {mark} "), style));
            };
            item("store", &c.store);
            // a local runtime always answers: only a cluster is worth a word
            if app.runtime.starts_with("kubernetes") || c.runtime.is_err() {
                item("cluster", &c.runtime);
            }
            item("gateway", &c.gateway);
            if let Some(fleet) = &c.fleet {
                let style = if fleet.ends_with("none") {
                    app.theme.warning
                } else {
                    app.theme.muted
                };
                spans.push(Span::styled(format!(" {fleet} "), style));
            }
            spans.push(Span::styled(
                format!(" {}  {}", app.runtime, app.store),
                app.theme.muted,
            ));
        }
        None => spans.push(Span::styled(
            format!("runtime {}  store {}", app.runtime, app.store),
            app.theme.muted,
        )),
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub(super) fn status_style(app: &App, s: SessionStatus) -> Style {
    match s {
        SessionStatus::Failed => app.theme.error,
        SessionStatus::Busy => app.theme.ok,
        SessionStatus::Creating => app.theme.warning,
        SessionStatus::Dead | SessionStatus::Suspended => app.theme.muted,
        SessionStatus::Ready | SessionStatus::Idle => app.theme.text,
    }
}

/// The first row to show of a list of `len` so that row `selected` is on screen, moving as
/// little as can be from `top` (the list stays put while the selection moves within it).
pub fn scrolled_to(top: usize, selected: usize, height: usize, len: usize) -> usize {
    let height = height.max(1);
    let top = if selected < top {
        selected
    } else if selected >= top + height {
        selected + 1 - height
    } else {
        top
    };
    top.min(len.saturating_sub(height))
}

/// The width of each column of a table `width` cells wide with one cell between columns, as
/// the table lays them out: to cut text to fit with a visible `…` rather than mid-word.
pub fn column_widths(widths: &[Constraint], width: u16) -> Vec<usize> {
    Layout::horizontal(widths.iter().copied())
        .flex(ratatui::layout::Flex::Start)
        .spacing(1)
        .split(Rect::new(0, 0, width, 1))
        .iter()
        .map(|r| usize::from(r.width))
        .collect()
}

/// The whole transcript as lines (sanitised), for `width` columns. The cockpit draws only the
/// lines on screen ([`Transcript::window`](super::transcript::Transcript::window)); this draws
/// them all, the same way.
pub fn transcript_lines(app: &App, messages: &[Message], width: u16) -> Vec<Line<'static>> {
    let Some(t) = &app.transcript else {
        return vec![];
    };
    let look = t.look(width, &app.theme);
    let mut out = Vec::new();
    for m in messages {
        transcript::message_lines(m, &look, &mut out);
    }
    out
}

fn render_status(f: &mut Frame, app: &App, area: Rect) {
    let prompt = match (&app.command, &app.dialog) {
        (Some(text), _) => Some((":", text)),
        (None, Some(Dialog::Search(text))) => Some(("/", &**text)),
        _ => None,
    };
    if let Some((mark, text)) = prompt {
        let [label, input] =
            Layout::horizontal([Constraint::Length(1), Constraint::Min(1)]).areas(area);
        f.render_widget(Paragraph::new(Span::styled(mark, app.theme.accent)), label);
        f.render_widget(text, input);
        return;
    }
    let line = match &app.status {
        Some((text, true)) => Line::from(Span::styled(
            format!(" ! {}", sanitize::line(text)),
            app.theme.error,
        )),
        Some((text, false)) => Line::from(Span::styled(
            format!(" {}", sanitize::line(text)),
            app.theme.muted,
        )),
        None => Line::from(""),
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The keys of what has the keyboard when it is not a screen (a dialog, a prompt, the
/// composer): there, keys type text or answer, and the screen's keys do not apply.
fn modal_keys(app: &App) -> Option<&'static [(&'static str, &'static str)]> {
    if app.command.is_some() {
        return Some(&[
            ("enter", "run"),
            ("up", "earlier command"),
            ("esc", "cancel"),
        ]);
    }
    match &app.dialog {
        Some(Dialog::Help(_)) => {
            return Some(&[("up/down pgup/pgdn", "scroll"), ("any other key", "close")]);
        }
        Some(Dialog::Filter(_)) => {
            return Some(&[
                ("enter", "keep"),
                ("esc", "close"),
                ("words", "match anywhere"),
                ("agent: team: status: phase: title: id:", "match one field"),
            ]);
        }
        Some(Dialog::Confirm { .. }) => return Some(&[("y", "yes"), ("any other key", "no")]),
        Some(Dialog::NewSession(_)) => {
            return Some(&[
                ("tab", "next field"),
                ("up/down", "agent"),
                ("ctrl-s", "start"),
                ("esc", "cancel"),
            ]);
        }
        Some(Dialog::Search(_)) => {
            return Some(&[("enter", "search"), ("esc", "cancel")]);
        }
        Some(Dialog::Reply { .. }) => {
            return Some(&[("enter", "send"), ("esc", "cancel")]);
        }
        Some(Dialog::Fork { .. }) => {
            return Some(&[("enter", "fork"), ("esc", "cancel")]);
        }
        None => {}
    }
    if app
        .transcript
        .as_ref()
        .is_some_and(|t| t.composer.is_some())
        && app.panel.is_none()
    {
        return Some(&[
            ("ctrl-s", "send"),
            ("enter", "new line"),
            ("esc", "keep as draft"),
        ]);
    }
    None
}

/// The keys of the screen shown, in the registry's order of importance, as many as fit (a
/// long one that does not fit makes room for shorter ones after it), then `…` if some did not,
/// and always the key for `?` help (where the rest are).
fn render_hints(f: &mut Frame, app: &App, area: Rect) {
    if let Some(keys) = modal_keys(app) {
        // the most needed first; only whole ones that fit
        let mut spans = Vec::new();
        let mut used = 0;
        for (key, hint) in keys {
            used += key.chars().count() + hint.chars().count() + 3;
            if used > usize::from(area.width) {
                break;
            }
            spans.push(Span::styled(format!(" {key}"), app.theme.accent));
            spans.push(Span::raw(format!(" {hint} ")));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
        return;
    }
    let hints = app.keymap.hints(app.scope(), |a| app.offers(a));
    let (help, rest): (Vec<_>, Vec<_>) = hints.into_iter().partition(|(_, h)| *h == "help");
    let cells = |(key, hint): &(String, &str)| key.chars().count() + hint.chars().count() + 3;
    let room = usize::from(area.width);
    let reserve = help.iter().map(cells).sum::<usize>() + 2;
    let mut spans = Vec::new();
    let mut used = 0;
    let mut cut = false;
    for item in &rest {
        let w = cells(item);
        if used + w + reserve > room {
            cut = true;
            continue;
        }
        used += w;
        spans.push(Span::styled(format!(" {}", item.0), app.theme.accent));
        spans.push(Span::raw(format!(" {} ", item.1)));
    }
    if cut {
        spans.push(Span::styled(" …", app.theme.muted));
    }
    for (key, hint) in &help {
        spans.push(Span::styled(format!(" {key}"), app.theme.accent));
        spans.push(Span::raw(format!(" {hint} ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_help(f: &mut Frame, app: &App, help: &HelpView) {
    let r = centered(f.area(), 90, u16::MAX);
    let room = usize::from(r.width.saturating_sub(2)).max(1);
    let scope = app.scope();
    // 0: this screen's own, 1: everywhere, 2: other screens'
    let group = |d: &ActionDef| match (d.applies_in(Scope::Global), d.applies_in(scope)) {
        (true, _) => 1,
        (false, true) => 0,
        (false, false) => 2,
    };
    let mut lines = Vec::new();
    for (g, heading) in ["On this screen", "Everywhere", "On other screens"]
        .into_iter()
        .enumerate()
    {
        let defs: Vec<&ActionDef> = app.keymap.defs().filter(|d| group(d) == g).collect();
        if defs.is_empty() {
            continue;
        }
        if !lines.is_empty() {
            lines.push(Line::from(""));
        }
        lines.push(Line::from(Span::styled(heading, app.theme.accent)));
        for d in defs {
            let elsewhere = if g == 2 {
                let names: Vec<&str> = d.scopes.iter().map(|s| s.name()).collect();
                format!(" ({})", names.join(", "))
            } else {
                String::new()
            };
            let line = Line::from(vec![
                Span::styled(
                    format!("  {:<14}", app.keymap.keys_of(d.action).join(" ")),
                    app.theme.accent,
                ),
                Span::raw(format!("{}{elsewhere}", d.help)),
            ]);
            lines.extend(cells::wrap_line(&line, room));
        }
    }
    let height = usize::from(r.height.saturating_sub(2));
    let shown = Rows::place(help.scroll, lines.len(), height);
    help.shown.set(shown);
    let Rows { top, max_top, .. } = shown;
    let title = if max_top > 0 {
        format!(
            "Keys {}-{} of {} (j/k, pgup/pgdn scroll; any other key closes)",
            top + 1,
            (top + height).min(lines.len()),
            lines.len()
        )
    } else {
        "Keys (any key closes)".to_string()
    };
    let lines: Vec<Line> = lines.into_iter().skip(top).take(height).collect();
    let fit = (lines.len() + 2) as u16;
    popup(f, app, &title, lines, 90, fit);
}

/// A dialog that asks for a line of text: `text` above a framed input field.
fn input_dialog(
    f: &mut Frame,
    app: &App,
    title: &str,
    text: Vec<Line<'_>>,
    width: u16,
    input: &ratatui_textarea::TextArea<'_>,
) {
    let height = (text.len() as u16 + 5).min(f.area().height);
    let r = centered(f.area(), width.min(f.area().width), height);
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.accent)
        .title(format!(" {title} "));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [above, field] = Layout::vertical([Constraint::Min(1), Constraint::Length(3)]).areas(inner);
    f.render_widget(Paragraph::new(text), above);
    let field_block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border);
    let field_inner = field_block.inner(field);
    f.render_widget(field_block, field);
    f.render_widget(input, field_inner);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn popup(f: &mut Frame, app: &App, title: &str, lines: Vec<Line>, width: u16, height: u16) {
    let r = centered(f.area(), width, height);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(app.theme.border)
                .title(format!(" {title} ")),
        ),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, MessageRole, MessageStatus, Part, Phase};
    use crate::tui::actions::Keymap;
    use crate::tui::app::{Msg, NewSession};
    use crate::tui::sessions::tests::session;
    use crate::tui::theme::Theme;
    use crate::tui::transcript::Transcript;
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::style::{Color, Modifier};
    use uuid::Uuid;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_790_000_600, 0).unwrap_or_default()
    }

    /// An app with sessions and the preview off (`previewed` turns it on).
    fn app(theme: Theme) -> App {
        let mut app = App::new(
            Keymap::new(false),
            theme,
            vec![],
            "sqlite:///home/op/.local/share/agentdeck/agentdeck.db".into(),
            "local".into(),
        );
        app.preview_on = false;
        let mut sessions = vec![
            session(1, "coder", SessionStatus::Idle),
            session(2, "reviewer", SessionStatus::Busy),
            session(3, "coder", SessionStatus::Failed),
            session(4, "coder", SessionStatus::Creating),
            session(5, "coder", SessionStatus::Suspended),
        ];
        sessions[2].failure_reason =
            Some("sandbox failed: ImagePullBackOff: Back-off pulling image".into());
        sessions[2].phase = Phase::Failed;
        sessions[0].idle_deadline = Some(now() + chrono::Duration::seconds(754));
        sessions[3].title = "evil \u{1b}]0;owned\u{7}title\u{1b}[2J".into();
        app.update(Msg::Sessions(sessions));
        app.dirty = false;
        app
    }

    fn message(seq: i64, role: MessageRole, parts: Vec<Part>) -> Message {
        Message {
            id: Uuid::from_u128(seq as u128),
            session_id: Uuid::from_u128(2),
            seq,
            role,
            status: MessageStatus::Complete,
            parts,
            error: None,
            harness_message_id: None,
            usage: None,
            diffs: Vec::new(),
            created_at: now(),
            updated_at: now(),
        }
    }

    fn attached(mut app: App, tools_open: bool) -> App {
        let mut t = Transcript::new(Uuid::from_u128(2));
        t.loaded = true;
        t.tools_open = tools_open;
        t.merge(vec![
            message(
                1,
                MessageRole::User,
                vec![Part::text("run the tests and fix what fails")],
            ),
            message(
                2,
                MessageRole::Assistant,
                vec![Part::Tool {
                    call_id: "c1".into(),
                    tool: "bash".into(),
                    status: crate::model::ToolStatus::Completed,
                    input: serde_json::json!({"command": "cargo test"}),
                    output: Some(
                        "test result: ok. 12 passed\n\u{1b}[31mwarning\u{1b}[0m: unused".into(),
                    ),
                    error: None,
                    started_at: Some(now() - chrono::Duration::milliseconds(3400)),
                    ended_at: Some(now()),
                }],
            ),
            {
                let mut m = message(
                    3,
                    MessageRole::Assistant,
                    vec![
                        Part::Reasoning {
                            text: "The warning is the import.\nRemove it.".into(),
                        },
                        Part::text(
                            "All **12 tests** pass. One warning remains:\n\n\
                             - an unused import in `src/lib.rs`\n\
                             - fixed by removing it\n\n\
                             ```rust\nuse std::fmt; // unused\n```\n\n\
                             | suite | passed |\n|---|--:|\n| unit | 10 |\n| e2e | 2 |",
                        ),
                    ],
                );
                m.updated_at = now() + chrono::Duration::seconds(42);
                m
            },
        ]);
        app.transcript = Some(t);
        app
    }

    fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap_or_else(|e| panic!("{e}"));
        term.draw(|f| render(f, app, now()))
            .unwrap_or_else(|e| panic!("{e}"));
        term
    }

    /// The first load shows the newest sessions as soon as they come, says it is still
    /// loading, and never says "no sessions" before it knows; a change that arrives before its
    /// session's page is kept.
    #[test]
    fn sessions_show_page_by_page_while_loading() {
        let mut a = App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "sqlite:///x.db".into(),
            "local".into(),
        );
        let text = |a: &App| draw(a, 100, 12).backend().to_string();
        assert!(text(&a).contains("Loading sessions…"), "{}", text(&a));
        assert!(!text(&a).contains("No sessions yet"));
        a.update(Msg::SessionPage {
            sessions: vec![
                session(5, "coder", SessionStatus::Idle),
                session(4, "coder", SessionStatus::Idle),
            ],
            first: true,
            last: false,
        });
        assert!(
            text(&a).contains("Sessions (2 so far, loading…)"),
            "{}",
            text(&a)
        );
        a.update(Msg::Session(Box::new(session(
            1,
            "coder",
            SessionStatus::Failed,
        ))));
        a.update(Msg::SessionPage {
            sessions: vec![
                session(2, "coder", SessionStatus::Idle),
                session(1, "coder", SessionStatus::Idle),
            ],
            first: false,
            last: true,
        });
        assert!(!a.loading);
        assert!(text(&a).contains("Sessions (4)"), "{}", text(&a));
        assert_eq!(
            a.sessions.get(Uuid::from_u128(1)).map(|s| s.status),
            Some(SessionStatus::Failed),
            "the change that came first is kept"
        );
        let order: Vec<u128> = (0..a.sessions.len())
            .filter_map(|i| a.sessions.at(i).map(|s| s.id.as_u128()))
            .collect();
        assert_eq!(order, vec![5, 4, 2, 1]);
    }

    /// Snapshots of `build`'s app at 80x24 and 160x48, in the default and the mono theme.
    /// Snapshots of the app `build` makes, in colour and mono, at 80x24 and 160x48; gives
    /// the last screen's text.
    fn snap(name: &str, build: impl Fn(Theme) -> App) -> String {
        let mut last = String::new();
        for (theme, suffix) in [(Theme::default_theme(), ""), (Theme::mono(), "_mono")] {
            let app = build(theme);
            for (w, h) in [(80, 24), (160, 48)] {
                let term = draw(&app, w, h);
                insta::assert_snapshot!(format!("{name}{suffix}_{w}x{h}"), term.backend());
                last = term.backend().to_string();
            }
        }
        last
    }

    /// What the agent changed: the files by turn with their counts, the selected file's diff
    /// with its `+` and `-` kept (they read without colour too), `]` to the next file.
    #[test]
    fn changes_view() {
        use crate::model::{FileDiff, TurnDiff};
        use crate::tui::panels::{ChangesView, Panel};
        let build = |theme| {
            let mut a = app(theme);
            let mut v = ChangesView::loading(Uuid::from_u128(1), "fix the build".into());
            v.set(vec![
                TurnDiff {
                    seq: 1,
                    asked: "make the build pass".into(),
                    files: vec![
                        FileDiff {
                            file: "src/main.rs".into(),
                            patch: "Index: src/main.rs\n--- src/main.rs\n+++ src/main.rs\n@@ -1,3 +1,3 @@\n fn main() {\n-    println!(\"helo\");\n+    println!(\"hello\");\n }\n".into(),
                            additions: 1,
                            deletions: 1,
                            status: Some("modified".into()),
                        },
                        FileDiff {
                            file: "NOTES.md".into(),
                            patch: "--- NOTES.md\n+++ NOTES.md\n@@ -0,0 +1,1 @@\n+fixed \u{1b}[31mthe typo\n".into(),
                            additions: 1,
                            deletions: 0,
                            status: Some("added".into()),
                        },
                    ],
                },
                TurnDiff {
                    seq: 3,
                    asked: "and the docs".into(),
                    files: vec![FileDiff {
                        file: "README.md".into(),
                        patch: "--- README.md\n+++ README.md\n@@ -1 +1 @@\n-old\n+new\n".into(),
                        additions: 1,
                        deletions: 1,
                        status: None,
                    }],
                },
            ]);
            a.panel = Some(Panel::Changes(v));
            a
        };
        let screen = snap("changes", build);
        assert!(screen.contains("src/main.rs +1 -1"), "{screen}");
        assert!(screen.contains("+    println!(\"hello\");"), "{screen}");
        assert!(screen.contains("#3 and the docs"), "{screen}");
        // ] goes to the next file; an escape sequence in a patch never reaches the screen.
        let mut a = build(Theme::mono());
        a.update(Msg::Key(KeyEvent::from(KeyCode::Char(']'))));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(
            screen.contains("+fixed the typo") || screen.contains("+fixed [31mthe typo"),
            "{screen}"
        );
        assert!(!screen.contains('\u{1b}'), "{screen}");
        a.update(Msg::Key(KeyEvent::from(KeyCode::Char(']'))));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(screen.contains("+new"), "{screen}");
        // The added line is green and the removed one red, in colour.
        let a = build(Theme::default_theme());
        let term = draw(&a, 160, 48);
        let text = term.backend().to_string();
        let buffer = term.backend().buffer();
        let at = |needle: &str| {
            let y = text.lines().position(|l| l.contains(needle)).unwrap_or(0);
            let line = text.lines().nth(y).unwrap_or_default();
            let x = line
                .find(needle)
                .map(|b| line[..b].chars().count())
                .unwrap_or(0);
            buffer[(x as u16, y as u16)].fg
        };
        assert_eq!(
            at("+    println!(\"hello"),
            a.theme.ok.fg.unwrap_or_default()
        );
        assert_eq!(
            at("-    println!(\"helo"),
            a.theme.error.fg.unwrap_or_default()
        );
    }

    #[test]
    fn sessions_view() {
        snap("sessions", app);
        snap("sessions_filtered", |theme| {
            let mut filtered = app(theme);
            filtered.sessions.set_filter("status:failed");
            filtered
        });
    }

    /// The selected session's preview: beside the list on a wide screen, under it on a
    /// narrower one, none under 100 columns; its last lines, and what is wrong with it first.
    #[test]
    fn the_preview_beside_under_or_not_at_all() {
        let previewed = |theme| {
            let mut app = app(theme);
            app.preview_on = true;
            // the failed session (3), selected, with the last of its transcript read
            app.sessions.select(Uuid::from_u128(3));
            app.update(crate::tui::app::Msg::Tick);
            app.update(crate::tui::app::Msg::Messages {
                session: Uuid::from_u128(3),
                messages: vec![crate::model::Message {
                    id: Uuid::from_u128(300),
                    session_id: Uuid::from_u128(3),
                    seq: 1,
                    role: crate::model::MessageRole::Assistant,
                    status: crate::model::MessageStatus::Complete,
                    parts: vec![crate::model::Part::text(
                        "pulled the repository\nran the migrations\nthe image would not pull",
                    )],
                    error: None,
                    harness_message_id: None,
                    usage: None,
                    diffs: Vec::new(),
                    created_at: chrono::DateTime::from_timestamp(1_790_000_000, 0)
                        .unwrap_or_default(),
                    updated_at: chrono::DateTime::from_timestamp(1_790_000_000, 0)
                        .unwrap_or_default(),
                }],
                complete: true,
            });
            app
        };
        let a = previewed(Theme::mono());
        let beside = draw(&a, 170, 30).backend().to_string();
        let row = beside
            .lines()
            .find(|l| l.contains("the image would not pull"))
            .unwrap_or_default();
        assert!(
            row.contains("││"),
            "beside the list, on its lines:\n{beside}"
        );
        assert!(beside.contains("ImagePullBackOff"), "why, first:\n{beside}");
        let under = draw(&a, 120, 34).backend().to_string();
        let at = |what: &str| under.lines().position(|l| l.contains(what));
        assert!(
            at("the image would not pull") > at("task 5"),
            "under the list:\n{under}"
        );
        let narrow = draw(&a, 90, 30).backend().to_string();
        assert!(!narrow.contains("the image would not pull"), "{narrow}");
        for (w, h) in [(170, 30), (120, 34)] {
            insta::assert_snapshot!(format!("preview_{w}x{h}"), draw(&a, w, h).backend());
        }
    }

    /// A failed session's transcript says why and what to do at its top (it said only "No
    /// messages yet. Press i to write one."); the list says it in full under the table.
    #[test]
    fn a_failed_session_says_why_where_people_look() {
        let failed = |theme| {
            let mut app = app(theme);
            let mut t = Transcript::new(Uuid::from_u128(3));
            t.loaded = true;
            app.transcript = Some(t);
            app
        };
        let screen = snap("transcript_failed", failed);
        assert!(screen.contains("this session failed"), "{screen}");
        assert!(screen.contains("ImagePullBackOff"), "{screen}");
        assert!(screen.contains("registry credentials"), "{screen}");
        assert!(screen.contains("R restart"), "{screen}");
        assert!(!screen.contains("Press i"), "{screen}");
        let mut list = app(Theme::mono());
        list.sessions.set_filter("status:failed");
        let screen = draw(&list, 80, 24).backend().to_string();
        assert!(screen.contains("check the agent's image name"), "{screen}");
        // At 120 columns the reason has the room PHASE had (it was cut to "sandbox failed:
        // Image…").
        let screen = draw(&app(Theme::mono()), 120, 24).backend().to_string();
        let row = screen
            .lines()
            .find(|l| l.contains("task 3"))
            .unwrap_or_default();
        assert!(row.contains("ImagePullBackOff: Back-off pulling"), "{row}");
        // A read-only cockpit offers no key it does not have.
        let mut ro = failed(Theme::mono());
        ro.keymap = Keymap::new(true);
        let screen = draw(&ro, 100, 30).backend().to_string();
        assert!(screen.contains("d diagnose"), "{screen}");
        assert!(!screen.contains("R restart"), "{screen}");
    }

    /// One state, one word: ready and idle both read `o idle`, a session ended on purpose
    /// reads `- ended` (it read `x dead`), and the countdown says what it counts down to (it
    /// read `IDLE 12:34`, like idle time); the filter finds them by either word.
    #[test]
    fn the_list_says_what_is_true() {
        let mut a = app(Theme::mono());
        a.sessions.show_ended(true);
        let mut ready = session(6, "coder", SessionStatus::Ready);
        ready.idle_deadline = Some(now() + chrono::Duration::seconds(60));
        a.update(Msg::Sessions(vec![
            ready,
            session(7, "coder", SessionStatus::Idle),
            session(8, "coder", SessionStatus::Dead),
        ]));
        let mut ended = session(8, "coder", SessionStatus::Dead);
        ended.phase = crate::model::Phase::Dead;
        a.update(Msg::Session(Box::new(ended)));
        let screen = draw(&a, 120, 12).backend().to_string();
        assert_eq!(screen.matches("o idle").count(), 2, "{screen}");
        assert!(!screen.contains("dead"), "{screen}");
        assert!(screen.contains("- ended"), "{screen}");
        for untrue in ["+ ready", "x dead", "IDLE"] {
            assert!(!screen.contains(untrue), "{untrue}: {screen}");
        }
        assert!(
            screen.contains("SUSPENDS") && screen.contains("in 1:00"),
            "{screen}"
        );
        for (filter, shown) in [
            ("status:idle", 2),
            ("status:ready", 2),
            ("status:ended", 1),
            ("status:dead", 1),
        ] {
            a.sessions.set_filter(filter);
            assert_eq!(a.sessions.len(), shown, "{filter}");
        }
    }

    /// COST says what each session cost, that a price is unknown rather than $0, and how much of
    /// its budget a session spent once that is 80% or more (a warning; an error once spent).
    #[test]
    fn the_list_says_what_each_session_cost() {
        let mut a = app(Theme::default_theme());
        let with = |i, cost: f64, unpriced: i64, budget: Option<f64>| {
            let mut s = session(i, "coder", SessionStatus::Idle);
            s.title = format!("cost {i}");
            s.usage.input = 1000;
            s.usage.cost = cost;
            s.usage.unpriced = unpriced;
            s.budget_usd = budget;
            s
        };
        let mut fresh = session(10, "coder", SessionStatus::Idle);
        fresh.title = "cost 10".into();
        a.update(Msg::Sessions(vec![
            with(11, 0.42, 0, None),
            with(12, 0.0, 3, None),
            with(13, 1.5, 1, None),
            with(14, 4.2, 0, Some(5.0)),
            with(15, 5.1, 0, Some(5.0)),
            fresh,
        ]));
        let terminal = draw(&a, 150, 12);
        let screen = terminal.backend().to_string();
        let line = |title: &str| {
            screen
                .lines()
                .find(|l| l.contains(title))
                .unwrap_or_default()
                .to_string()
        };
        assert!(screen.contains("COST"), "{screen}");
        assert!(line("cost 11").contains("$0.42 "), "{screen}");
        assert!(line("cost 12").contains("unknown"), "{screen}");
        assert!(!line("cost 12").contains("$0.00"), "{screen}");
        assert!(line("cost 13").contains("$1.50+?"), "{screen}");
        assert!(line("cost 14").contains("$4.20 84%"), "{screen}");
        assert!(line("cost 15").contains("$5.10 102%"), "{screen}");
        assert!(line("cost 10").contains(" - "), "{screen}");
        // The spent budget reads as an error, the nearly spent one as a warning.
        let buffer = terminal.backend().buffer();
        let style_of = |text: &str| {
            let y = screen.lines().position(|l| l.contains(text)).unwrap_or(0) as u16;
            let row: String = (0..150)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect();
            let x = row.find('$').unwrap_or(0) as u16;
            buffer[(x, y)].fg
        };
        assert_eq!(style_of("cost 15"), a.theme.error.fg.unwrap_or_default());
        assert_eq!(style_of("cost 14"), a.theme.warning.fg.unwrap_or_default());
        // a team at 80% of its month's budget is flagged on the top bar; at 100% as an error
        a.update(Msg::Budgets(vec![
            crate::model::TeamSpend {
                team: "red".into(),
                spent_usd: 170.0,
                budget_usd: Some(200.0),
            },
            crate::model::TeamSpend {
                team: "blue".into(),
                spent_usd: 10.0,
                budget_usd: Some(200.0),
            },
        ]));
        let top = draw(&a, 150, 12).backend().to_string();
        let top = top.lines().next().unwrap_or_default().to_string();
        assert!(top.contains("team red $170.00 of $200.00 85%"), "{top}");
        assert!(!top.contains("team blue"), "{top}");
        a.update(Msg::Budgets(vec![crate::model::TeamSpend {
            team: "red".into(),
            spent_usd: 201.0,
            budget_usd: Some(200.0),
        }]));
        let top = draw(&a, 150, 12).backend().to_string();
        assert!(top.contains("team red $201.00 of $200.00 100%!"), "{top}");
        // the preview's title says it too
        a.preview_on = true;
        a.sessions.select(Uuid::from_u128(14));
        a.update(Msg::Tick);
        let screen = draw(&a, 170, 14).backend().to_string();
        assert!(screen.contains("cost 14 · 0000000e $4.20 84% "), "{screen}");
    }

    #[test]
    fn transcript_view() {
        snap("transcript", |theme| attached(app(theme), false));
        snap("transcript_tools_open", |theme| attached(app(theme), true));
        snap("transcript_composing", |theme| {
            let mut composing = attached(app(theme), false);
            if let Some(t) = composing.transcript.as_mut() {
                t.open_composer();
            }
            composing
        });
        snap("transcript_search", |theme| {
            let mut searching = attached(app(theme), true);
            if let Some(t) = searching.transcript.as_mut() {
                t.search("test");
            }
            searching
        });
    }

    #[test]
    fn dialogs() {
        snap("help", |theme| {
            let mut help = app(theme);
            help.dialog = Some(Dialog::Help(Default::default()));
            help
        });
        snap("confirm_end", |theme| {
            let mut confirm = app(theme);
            confirm.dialog = Some(Dialog::Confirm {
                action: crate::tui::actions::Action::End,
                session: Uuid::from_u128(3),
                title: "task 3".into(),
            });
            confirm
        });
        snap("new_session", |theme| {
            let mut new = app(theme);
            let mut form = NewSession::new(
                ["coder", "reviewer"]
                    .map(|agent| crate::deck::AgentChoice {
                        server: None,
                        agent: agent.into(),
                    })
                    .into(),
            );
            form.agent = 1;
            form.focus(1);
            form.title.insert_str("fix the flaky test");
            new.dialog = Some(Dialog::NewSession(Box::new(form)));
            new
        });
        snap("command", |theme| {
            let mut command = app(theme);
            for c in ":sort activity".chars() {
                command.update(crate::tui::app::Msg::Key(crossterm::event::KeyEvent::new(
                    crossterm::event::KeyCode::Char(c),
                    crossterm::event::KeyModifiers::NONE,
                )));
            }
            command
        });
        snap("filter", |theme| {
            let mut filter = app(theme);
            filter.update(crate::tui::app::Msg::Key(crossterm::event::KeyEvent::new(
                crossterm::event::KeyCode::Char('/'),
                crossterm::event::KeyModifiers::NONE,
            )));
            for c in "agent:coder".chars() {
                filter.update(crate::tui::app::Msg::Key(crossterm::event::KeyEvent::new(
                    crossterm::event::KeyCode::Char(c),
                    crossterm::event::KeyModifiers::NONE,
                )));
            }
            filter
        });
    }

    #[test]
    fn the_top_bar_says_what_does_not_answer_and_the_status_line_why() {
        let mut a = App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "postgres://db/agentdeck".into(),
            "kubernetes:prod-eu".into(),
        );
        let ok = crate::tui::app::Connectivity {
            store: Ok(()),
            runtime: Ok(()),
            gateway: Ok(()),
            fleet: Some("fleet: 2 cores".into()),
            servers: Vec::new(),
        };
        a.update(crate::tui::app::Msg::Connectivity(ok.clone()));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(
            screen.contains("store ok cluster ok gateway ok  fleet: 2 cores"),
            "{screen}"
        );
        a.update(crate::tui::app::Msg::Connectivity(
            crate::tui::app::Connectivity {
                runtime: Err("connection refused".into()),
                ..ok.clone()
            },
        ));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(screen.contains("cluster DOWN"), "{screen}");
        assert!(
            screen.contains("the cluster does not answer: connection refused"),
            "{screen}"
        );
        // A client of `serve` that lost it says so, and nothing of what it cannot know.
        use crate::deck::{ServerLink, ServerState};
        a.update(crate::tui::app::Msg::Connectivity(
            crate::tui::app::Connectivity {
                servers: vec![ServerState {
                    name: None,
                    link: ServerLink::Connected,
                }],
                ..ok.clone()
            },
        ));
        a.update(crate::tui::app::Msg::Connectivity(
            crate::tui::app::Connectivity {
                servers: vec![ServerState {
                    name: None,
                    link: ServerLink::Reconnecting("nothing answers there".into()),
                }],
                ..ok.clone()
            },
        ));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(screen.contains("server reconnecting…"), "{screen}");
        assert!(!screen.contains("store ok"), "{screen}");
        assert!(
            screen.contains("lost the server (nothing answers there); reconnecting by itself"),
            "{screen}"
        );
        a.update(crate::tui::app::Msg::Connectivity(
            crate::tui::app::Connectivity {
                servers: vec![ServerState {
                    name: None,
                    link: ServerLink::Connected,
                }],
                ..ok.clone()
            },
        ));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(screen.contains("server ok store ok"), "{screen}");
        assert!(screen.contains("the server answers again"), "{screen}");
        // Several servers: each by its name; one lost is said by its name, while the others'
        // state still shows.
        let two = |us: ServerLink| crate::tui::app::Connectivity {
            servers: vec![
                ServerState {
                    name: Some("eu".into()),
                    link: ServerLink::Connected,
                },
                ServerState {
                    name: Some("us".into()),
                    link: us,
                },
            ],
            ..ok.clone()
        };
        a.update(crate::tui::app::Msg::Connectivity(two(
            ServerLink::Connected,
        )));
        a.update(crate::tui::app::Msg::Connectivity(two(
            ServerLink::Reconnecting("nothing answers there".into()),
        )));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(
            screen.contains("eu ok us reconnecting… store ok"),
            "{screen}"
        );
        assert!(
            screen.contains("lost server us (nothing answers there); reconnecting by itself"),
            "{screen}"
        );
        a.update(crate::tui::app::Msg::Connectivity(two(
            ServerLink::Refused("https://us.example refused: unknown token".into()),
        )));
        let screen = draw(&a, 160, 48).backend().to_string();
        assert!(screen.contains("eu ok us REFUSED"), "{screen}");
        assert!(screen.contains("unknown token"), "{screen}");
    }

    #[test]
    fn the_hint_bar_says_when_keys_did_not_fit_and_always_shows_help() {
        let a = attached(app(Theme::mono()), false);
        let narrow = draw(&a, 80, 24).backend().to_string();
        let hints = narrow.lines().nth(23).unwrap_or_default().to_string();
        assert!(hints.contains('…'), "{hints}");
        assert!(
            hints.trim_end_matches(['"', ' ']).ends_with("? help"),
            "{hints}"
        );
        let wide = draw(&a, 240, 24).backend().to_string();
        let hints = wide.lines().nth(23).unwrap_or_default().to_string();
        assert!(!hints.contains('…'), "{hints}");
        assert!(hints.contains("search"), "{hints}");
    }

    #[test]
    fn long_cells_are_cut_with_a_mark_between_words() {
        let mut a = app(Theme::mono());
        let mut s = session(9, "coder", SessionStatus::Failed);
        s.failure_reason = Some(
            "sandbox failed: ImagePullBackOff: Back-off pulling image registry.example/agent"
                .into(),
        );
        a.update(crate::tui::app::Msg::Session(Box::new(s)));
        for width in [80, 120, 160] {
            let screen = draw(&a, width, 48).backend().to_string();
            let row = screen
                .lines()
                .find(|l| l.contains("task 9"))
                .unwrap_or_default();
            let (kept, _) = row.split_once('…').unwrap_or_else(|| panic!("cut: {row}"));
            let last = kept.split_whitespace().last().unwrap_or_default();
            // (a cut that drops only a word's trailing colon is still between words)
            let words: Vec<&str> = "sandbox failed: ImagePullBackOff: Back-off pulling image"
                .split_whitespace()
                .flat_map(|w| [w, w.trim_end_matches(':')])
                .collect();
            assert!(
                words.contains(&last),
                "cut mid-word ({last:?}) at {width}: {row}"
            );
        }
    }

    #[test]
    fn mono_theme_draws_the_same_text_and_no_colour() {
        for build in [|a: App| a, |a: App| attached(a, true)] {
            let colour = draw(&build(app(Theme::default_theme())), 80, 24);
            let mono = draw(&build(app(Theme::mono())), 80, 24);
            assert_eq!(colour.backend().to_string(), mono.backend().to_string());
            for cell in mono.backend().buffer().content() {
                assert!(
                    matches!(cell.fg, Color::Reset),
                    "a coloured cell in mono: {cell:?}"
                );
                assert!(
                    matches!(cell.bg, Color::Reset),
                    "a coloured cell in mono: {cell:?}"
                );
            }
        }
        // the selection is visible without colour
        let mono = draw(&app(Theme::mono()), 80, 24);
        let selected = mono
            .backend()
            .buffer()
            .content()
            .iter()
            .filter(|c| c.modifier.contains(Modifier::REVERSED))
            .count();
        assert!(selected > 20, "the selected row is in reverse video");
    }

    #[test]
    fn untrusted_text_cannot_reach_the_terminal() {
        for build in [|a: App| a, |a: App| attached(a, true)] {
            let term = draw(&build(app(Theme::default_theme())), 160, 48);
            for cell in term.backend().buffer().content() {
                assert!(
                    !cell.symbol().chars().any(|c| c.is_control()),
                    "control character on screen: {:?}",
                    cell.symbol()
                );
            }
        }
    }
}
