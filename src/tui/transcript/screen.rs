//! The transcript as a screen: its own actions (follow, wrap, timestamps, tool calls, search
//! from match to match), scrolling, and drawing the lines on screen with the composer below.

use super::Transcript;
use crate::core::failure_advice;
use crate::model::{Session, SessionStatus};
use crate::sanitize;
use crate::tui::actions::{Action, Scope};
use crate::tui::app::{App, Effect};
use crate::tui::panels::wrap_clean;
use crate::tui::screen::{Cx, Screen, step};
use crate::tui::views::{ask_lines, glyph};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use uuid::Uuid;

impl Screen for Transcript {
    fn scope(&self) -> Scope {
        Scope::Transcript
    }

    fn session(&self) -> Option<Uuid> {
        Some(self.session)
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx<'_>) -> Option<Vec<Effect>> {
        match action {
            Action::Bottom | Action::Follow => self.follow = true,
            Action::ToggleWrap => self.wrap = !self.wrap,
            Action::ToggleTimestamps => self.timestamps = !self.timestamps,
            Action::ToggleTools => self.tools_open = !self.tools_open,
            Action::ToggleReasoning => self.reasoning_open = !self.reasoning_open,
            Action::ToggleMarkdown => self.set_markdown(!self.markdown()),
            Action::SearchNext => self.go_to_match(true, cx),
            Action::SearchPrevious => self.go_to_match(false, cx),
            _ => return None,
        }
        Some(vec![])
    }

    /// A transcript leaves follow mode when moved up from the end, and follows again when
    /// moved back down to it.
    fn scroll(&mut self, delta: isize) {
        // Nothing drawn yet: nothing to move.
        let Some(shown) = self.shown() else { return };
        let max_top = shown.total.saturating_sub(shown.height);
        let from = if self.follow { max_top } else { self.scroll };
        (self.scroll, self.follow) = step(from, max_top, delta);
    }

    fn page(&self) -> usize {
        self.shown().map_or(10, |s| s.height)
    }

    fn search(&self) -> Option<Option<&str>> {
        Some(self.search_query())
    }

    /// Moves to the first match from the top of the screen as the query is typed.
    fn set_search(&mut self, text: &str, cx: &mut Cx<'_>) {
        self.search(text);
        if text.is_empty() {
            *cx.status = None;
        } else {
            self.go_to_match(true, cx);
        }
    }

    fn draw(&self, f: &mut Frame, app: &App, area: Rect, _: chrono::DateTime<chrono::Utc>) {
        render_transcript(f, app, self, area);
    }
}

impl Transcript {
    /// `n` / `N`: the next or previous line that matches the search, said on the status line.
    fn go_to_match(&mut self, forward: bool, cx: &mut Cx<'_>) {
        let Some(query) = self.search_query().map(str::to_string) else {
            cx.warn("nothing to look for: / starts a search");
            return;
        };
        let (width, height) = self.shown().map_or((80, 20), |s| (s.width, s.height));
        match self.next_match(width, cx.theme, height, forward) {
            Some(hit) => cx.say(format!(
                "\"{}\": match {} of {} (n next, N previous)",
                query, hit.index, hit.total
            )),
            None => cx.warn(format!("\"{query}\" is not in the transcript")),
        }
    }
}

/// Why a failed session failed, what to do about it, and the keys that do it (those this
/// cockpit has: a read-only one has no restart or end).
fn failure_lines(app: &App, session: Option<&Session>) -> Option<Vec<Line<'static>>> {
    let s = session.filter(|s| s.status == SessionStatus::Failed)?;
    let reason = s
        .failure_reason
        .as_deref()
        .unwrap_or("no reason was recorded");
    let keys: Vec<String> = [
        (Action::Diagnose, "diagnose"),
        (Action::Restart, "restart"),
        (Action::End, "end"),
    ]
    .into_iter()
    .filter_map(|(action, what)| {
        let key = app.keymap.key_for(action)?;
        Some(format!("{key} {what}"))
    })
    .collect();
    let mut lines = vec![
        Line::from(Span::styled(format!("! {reason}"), app.theme.error)),
        Line::from(failure_advice(reason)),
    ];
    if !keys.is_empty() {
        lines.push(Line::from(Span::styled(keys.join(" · "), app.theme.muted)));
    }
    Some(lines)
}

fn render_transcript(f: &mut Frame, app: &App, t: &Transcript, area: Rect) {
    let session = app.sessions.get(t.session);
    let title = match session {
        Some(s) => format!(
            " {} {} · {} · {} · {} · {} ",
            glyph(s.status),
            s.status.word(),
            sanitize::line(&s.title),
            sanitize::line(&s.agent_id),
            s.phase,
            s.short_id()
        ),
        None => " transcript ".to_string(),
    };
    // What it cost so far (and its budget, once nearly spent).
    let title = match session.filter(|s| s.usage.tokens() > 0 || s.usage.unpriced > 0) {
        Some(s) => {
            let budget = match (s.budget_usd, s.budget_spent()) {
                (Some(b), Some(spent)) if spent >= 1.0 => {
                    format!(" of {}: budget spent, no new turn", crate::model::usd(b))
                }
                (Some(b), Some(spent)) if spent >= crate::model::BUDGET_WARN => {
                    format!(" of {} ({:.0}%)", crate::model::usd(b), spent * 100.0)
                }
                _ => String::new(),
            };
            format!(
                "{title}· {}{budget} · {} tokens ",
                s.usage.cost_text(),
                s.usage.tokens_text()
            )
        }
        None => title,
    };
    // A fork says where it came from (its parent's id, as `sessions show` takes it).
    let title = match session.and_then(|s| s.parent_id.zip(s.fork_seq)) {
        Some((parent, at)) => {
            let short: String = parent.to_string().chars().take(8).collect();
            format!("{title}· forked from {short}… at #{at} ")
        }
        None => title,
    };
    let title = match t.search_query() {
        Some(q) => format!("{title}· search \"{}\" (n/N) ", sanitize::line(q)),
        None => title,
    };
    let (area, composer) = if t.composer.is_some() {
        let [b, c] = Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(area);
        (b, Some(c))
    } else {
        (area, None)
    };
    // A failed session says why, and what to do, above its conversation.
    let (area, failure) = match failure_lines(app, session) {
        Some(lines) => {
            let lines = wrap_clean(&lines, usize::from(area.width.saturating_sub(2)).max(1));
            let height = (lines.len() as u16 + 2).min(area.height / 3).max(3);
            let [top, rest] =
                Layout::vertical([Constraint::Length(height), Constraint::Min(3)]).areas(area);
            let block = Block::default()
                .borders(Borders::ALL)
                .border_style(app.theme.error)
                .title(" this session failed ");
            f.render_widget(Paragraph::new(lines).block(block), top);
            (rest, true)
        }
        None => (area, false),
    };
    // What the agent waits for, between the conversation and the composer: the oldest two.
    let waiting: Vec<Line> = t
        .asks
        .iter()
        .take(2)
        .flat_map(|a| ask_lines(app, a, true))
        .collect();
    let (body, asks) = if waiting.is_empty() {
        (area, None)
    } else {
        let height = (waiting.len() as u16 + 2).min(area.height / 2).max(3);
        let [b, a] = Layout::vertical([Constraint::Min(3), Constraint::Length(height)]).areas(area);
        (b, Some(a))
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border);
    let inner = block.inner(body);
    let height = usize::from(inner.height);
    // Only the lines on screen are drawn: instant at any length of transcript.
    let window = t.window(inner.width, &app.theme, height);
    // What is out of view above is said on the frame; what is below, on the last line.
    let title = if window.top > 0 {
        format!(
            "{title}· lines {}-{} of {} ",
            window.top + 1,
            (window.top + height).min(window.total),
            window.total
        )
    } else {
        title
    };
    f.render_widget(block.title(title), body);
    let below = window.total.saturating_sub(window.top + height);
    let mut shown = window.lines;
    if !t.loaded && t.messages().is_empty() {
        shown = vec![Line::from(Span::styled(
            "loading the transcript…",
            app.theme.muted,
        ))];
    } else if shown.is_empty() {
        let empty = if failure {
            "No messages."
        } else {
            "No messages yet. Press i to write one."
        };
        shown = vec![Line::from(Span::styled(empty, app.theme.muted))];
    }
    if below > 0 && height > 0 {
        let last = shown.len().min(height).saturating_sub(1);
        if let Some(line) = shown.get_mut(last) {
            *line = Line::from(Span::styled(
                format!("-- {below} more lines below: G or End to follow --"),
                app.theme.warning,
            ));
        }
    }
    f.render_widget(Paragraph::new(shown), inner);
    if let Some(area) = asks {
        let more = t.asks.len().saturating_sub(2);
        let mut title = format!(" the agent waits for you ({}) ", t.asks.len());
        if more > 0 {
            title.push_str(&format!("· {more} more after these "));
        }
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(app.theme.warning)
            .title(title);
        f.render_widget(Paragraph::new(waiting).block(block), area);
    }
    if let (Some(area), Some(c)) = (composer, &t.composer) {
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(app.theme.accent)
            .title(" message (ctrl-s send, esc keep as draft) ");
        let inner = block.inner(area);
        f.render_widget(block, area);
        f.render_widget(c, inner);
    }
}
