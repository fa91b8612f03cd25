//! The changes screen: what the agent changed in files, turn by turn (kept with the transcript,
//! so it reads the same once the sandbox is gone). The changed files on the left (each turn's,
//! with its added and removed lines), the selected file's unified diff on the right; `]` and
//! `[` go from file to file. Added and removed lines are coloured, and keep their `+` and `-`,
//! so they read in 16 colours and with NO_COLOR alike.

use super::actions::{Action, Scope};
use super::app::{App, Effect};
use super::cells;
use super::panels::block;
use super::screen::{Cx, Rows, Screen, step};
use crate::model::TurnDiff;
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use uuid::Uuid;

/// Below this width the file list goes above the diff instead of beside it.
const SIDE_BY_SIDE: u16 = 100;

pub struct ChangesView {
    pub session: Uuid,
    pub title: String,
    /// `None` while the changes are read.
    pub turns: Option<Vec<TurnDiff>>,
    /// The selected file, counted over every turn's files.
    pub file: usize,
    /// The diff's first row on screen.
    pub scroll: usize,
    pub shown: std::cell::Cell<Rows>,
}

impl ChangesView {
    pub fn loading(session: Uuid, title: String) -> Self {
        ChangesView {
            session,
            title,
            turns: None,
            file: 0,
            scroll: 0,
            shown: Default::default(),
        }
    }

    /// The changes as read: the selection stays on its file where it can.
    pub fn set(&mut self, turns: Vec<TurnDiff>) {
        let before = self.selected().map(|(t, f)| (t.seq, f.file.clone()));
        self.turns = Some(turns);
        self.file = before
            .and_then(|(seq, file)| {
                self.files()
                    .position(|(t, f)| t.seq == seq && f.file == file)
            })
            .unwrap_or(0);
    }

    /// Every changed file, with its turn, in order.
    fn files(&self) -> impl Iterator<Item = (&TurnDiff, &crate::model::FileDiff)> {
        self.turns
            .iter()
            .flatten()
            .flat_map(|t| t.files.iter().map(move |f| (t, f)))
    }

    fn count(&self) -> usize {
        self.files().count()
    }

    fn selected(&self) -> Option<(&TurnDiff, &crate::model::FileDiff)> {
        self.files().nth(self.file)
    }

    fn select(&mut self, delta: isize, cx: &mut Cx<'_>) {
        let count = self.count();
        if count == 0 {
            cx.say("no changed files");
            return;
        }
        self.file = step(self.file, count - 1, delta).0;
        self.scroll = 0;
    }
}

impl Screen for ChangesView {
    fn scope(&self) -> Scope {
        Scope::Changes
    }

    fn session(&self) -> Option<Uuid> {
        Some(self.session)
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx<'_>) -> Option<Vec<Effect>> {
        match action {
            Action::NextFile => self.select(1, cx),
            Action::PreviousFile => self.select(-1, cx),
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

    fn draw(&self, f: &mut Frame, app: &App, area: Rect, _now: chrono::DateTime<chrono::Utc>) {
        render(f, app, self, area);
    }
}

/// How one line of a unified diff reads.
fn diff_line<'a>(app: &App, line: &str) -> Line<'a> {
    let t = &app.theme;
    let text = sanitize::line(line);
    let style = if line.starts_with("+++") || line.starts_with("---") {
        t.muted.add_modifier(Modifier::BOLD)
    } else if line.starts_with('+') {
        t.ok
    } else if line.starts_with('-') {
        t.error
    } else if line.starts_with("@@") {
        t.accent
    } else if line.starts_with("Index:") || line.starts_with("====") {
        t.muted
    } else {
        t.text
    };
    Line::from(Span::styled(text, style))
}

fn render(f: &mut Frame, app: &App, view: &ChangesView, area: Rect) {
    let t = &app.theme;
    let count = view.count();
    let title = format!(
        " changes · {} · {} file(s) ",
        sanitize::line(&view.title),
        count
    );
    let outer = block(app, title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let Some(turns) = &view.turns else {
        f.render_widget(
            Paragraph::new(Line::from(Span::styled("reading the changes…", t.muted))),
            inner,
        );
        return;
    };
    if count == 0 {
        let lines = vec![
            Line::from("The agent changed no file (or its harness did not say)."),
            Line::from(Span::styled(
                "opencode reports changes where the sandbox's folder is a git repository and \
                 git is installed (agentdeck makes it one on the local runtime).",
                t.muted,
            )),
        ];
        f.render_widget(
            Paragraph::new(super::panels::wrap_clean(
                &lines,
                usize::from(inner.width).max(1),
            )),
            inner,
        );
        return;
    }
    // The file list: each turn, then its files.
    let mut list: Vec<Line> = Vec::new();
    let mut selected_row = 0;
    let mut n = 0;
    for turn in turns {
        list.push(Line::from(Span::styled(
            format!("#{} {}", turn.seq, sanitize::line(&turn.asked)),
            t.muted,
        )));
        for file in &turn.files {
            let marker = if n == view.file { "> " } else { "  " };
            if n == view.file {
                selected_row = list.len();
            }
            let mut spans = vec![
                Span::raw(marker),
                Span::raw(sanitize::line(&file.file)),
                Span::raw(" "),
                Span::styled(format!("+{}", file.additions), t.ok),
                Span::raw(" "),
                Span::styled(format!("-{}", file.deletions), t.error),
            ];
            if n == view.file {
                spans = spans
                    .into_iter()
                    .map(|s| {
                        let style = s.style.patch(t.selected);
                        s.style(style)
                    })
                    .collect();
            }
            list.push(Line::from(spans));
            n += 1;
        }
    }
    let (list_area, diff_area) = if inner.width >= SIDE_BY_SIDE {
        let width = list
            .iter()
            .map(|l| cells::width(&l.to_string()))
            .max()
            .unwrap_or(20)
            .clamp(20, usize::from(inner.width / 3))
            + 1;
        let width = u16::try_from(width).unwrap_or(20);
        let [a, b] =
            Layout::horizontal([Constraint::Length(width), Constraint::Min(10)]).areas(inner);
        (a, b)
    } else {
        let height = (list.len() as u16).min(inner.height / 3).max(1);
        let [a, b] =
            Layout::vertical([Constraint::Length(height), Constraint::Min(3)]).areas(inner);
        (a, b)
    };
    let list_height = usize::from(list_area.height).max(1);
    let list_top = selected_row.saturating_sub(list_height - 1);
    let list: Vec<Line> = list.into_iter().skip(list_top).take(list_height).collect();
    let mut list = Paragraph::new(list);
    if inner.width >= SIDE_BY_SIDE {
        list = list.block(
            ratatui::widgets::Block::default()
                .borders(ratatui::widgets::Borders::RIGHT)
                .border_style(t.border),
        );
    }
    f.render_widget(list, list_area);
    // The selected file's diff, from where it is scrolled to.
    let Some((_, file)) = view.selected() else {
        return;
    };
    let diff_area = if inner.width >= SIDE_BY_SIDE {
        Rect {
            x: diff_area.x + 1,
            width: diff_area.width.saturating_sub(1),
            ..diff_area
        }
    } else {
        diff_area
    };
    let lines: Vec<Line> = file.patch.lines().map(|l| diff_line(app, l)).collect();
    let lines = super::panels::wrap_clean(&lines, usize::from(diff_area.width).max(1));
    let height = usize::from(diff_area.height);
    let rows = Rows::place(view.scroll, lines.len(), height);
    view.shown.set(rows);
    let top = rows.top;
    let shown: Vec<Line> = lines.into_iter().skip(top).take(height).collect();
    f.render_widget(Paragraph::new(shown), diff_area);
}
