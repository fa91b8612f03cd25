//! What every cockpit screen is. The sessions list, an attached transcript, the sandboxes'
//! health, a sandbox's log and a session's diagnosis each own their state, handle their own
//! actions, say which session they are about, scroll, and draw themselves, behind [`Screen`].
//!
//! The action registry (`actions`) stays the one table of keys: a key becomes an action in the
//! shown screen's [`Scope`], and the app hands the action to that screen first. What is shared
//! between screens stays the app's: the session list everyone looks sessions up in, dialogs,
//! drafts, the status line. Adding an action touches its registry row and the screen it acts
//! on.

use super::actions::{Action, Scope};
use super::app::{App, Effect};
use super::theme::Theme;
use ratatui::Frame;
use ratatui::layout::Rect;
use std::cell::Cell;
use uuid::Uuid;

/// What a screen may use of the app's while it handles an action.
pub struct Cx<'a> {
    pub theme: &'a Theme,
    /// The status line: the last thing worth saying, and whether it is an error.
    pub status: &'a mut Option<(String, bool)>,
}

impl Cx<'_> {
    pub fn say(&mut self, text: impl Into<String>) {
        *self.status = Some((text.into(), false));
    }
    pub fn warn(&mut self, text: impl Into<String>) {
        *self.status = Some((text.into(), true));
    }
}

pub trait Screen {
    /// Where its keys are looked up in the action registry.
    fn scope(&self) -> Scope;

    /// The session it is about, which session actions (restart, logs, diagnose …) apply to;
    /// `None` when that is the session selected in the list.
    fn session(&self) -> Option<Uuid> {
        None
    }

    /// Its own handling of `action`; `None` when the action is not its own (the app's
    /// handling applies: dialogs, moving between screens, lifecycle commands).
    fn on_action(&mut self, _action: Action, _cx: &mut Cx<'_>) -> Option<Vec<Effect>> {
        None
    }

    /// Moves what is on screen by `delta` rows (`isize::MIN`: to the top, `isize::MAX`: to
    /// the end).
    fn scroll(&mut self, delta: isize);

    /// Rows in a page of what it shows (as last drawn).
    fn page(&self) -> usize;

    /// A click at screen row `y`: selects what is there. `false` when nothing is.
    fn click(&mut self, _y: u16) -> bool {
        false
    }

    /// Whether `/` searches it, and what it looks for now.
    fn search(&self) -> Option<Option<&str>> {
        None
    }

    /// Looks for `text` as it is typed (empty: stops looking).
    fn set_search(&mut self, _text: &str, _cx: &mut Cx<'_>) {}

    /// Draws it into `area` (a pure function of the state; what it needs of the last frame,
    /// such as how many rows fit, it keeps in cells).
    fn draw(&self, f: &mut Frame, app: &App, area: Rect, now: chrono::DateTime<chrono::Utc>);
}

/// Where a list stood in its last frame: its first row on screen, how many rows fit, and the
/// terminal row its first row was drawn at (for the mouse).
#[derive(Debug, Default)]
pub struct ListShown {
    pub top: Cell<usize>,
    pub rows: Cell<usize>,
    pub y: Cell<u16>,
}

impl ListShown {
    /// The list row drawn at terminal row `y`, if one was.
    pub fn row_at(&self, y: u16) -> Option<usize> {
        let row = usize::from(y.checked_sub(self.y.get())?);
        (row < self.rows.get()).then(|| self.top.get() + row)
    }

    /// Rows in a page (at least one).
    pub fn page(&self) -> usize {
        self.rows.get().max(1)
    }
}

/// Where a scrolling screen stood in its last frame (rows, or log lines when wrapping): its
/// first, the first of the last screenful, and how many fit. Kept by drawing, read by
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

/// Where a view showing rows `from..` of a list whose last screenful starts at `max_top` is
/// after moving `delta` rows: its first row, and whether that is the end (follow again).
pub fn step(from: usize, max_top: usize, delta: isize) -> (usize, bool) {
    let to = from.min(max_top).saturating_add_signed(delta).min(max_top);
    (to, to >= max_top)
}
