//! A terminal backend that writes nothing when nothing changed. ratatui already sends only the
//! cells that differ from the last frame, but around them it hides the cursor, resets colours
//! and flushes on every frame; over SSH that is traffic for nothing, and a terminal that
//! tracks activity (tmux's monitor-activity) would see some each second. This wrapper drops
//! what would not change the screen: an empty draw, hiding a hidden cursor, moving the cursor
//! where it is, and a flush after nothing.

use ratatui::backend::{Backend, ClearType, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};

pub struct Quiet<B> {
    inner: B,
    /// Whether the cursor is shown, once known.
    shown: Option<bool>,
    /// Where the cursor is, when nothing has moved it since it was put there.
    at: Option<Position>,
    /// Something was written since the last flush.
    pending: bool,
}

impl<B> Quiet<B> {
    pub fn new(inner: B) -> Self {
        Quiet {
            inner,
            shown: None,
            at: None,
            pending: false,
        }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The terminal itself, for what is written between two frames (a bell).
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: Backend> Backend for Quiet<B> {
    type Error = B::Error;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        let mut content = content.peekable();
        if content.peek().is_none() {
            return Ok(());
        }
        self.pending = true;
        self.at = None;
        self.inner.draw(content)
    }

    fn append_lines(&mut self, n: u16) -> Result<(), Self::Error> {
        self.pending = true;
        self.at = None;
        self.inner.append_lines(n)
    }

    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        if self.shown != Some(false) {
            self.inner.hide_cursor()?;
            self.shown = Some(false);
            self.pending = true;
        }
        Ok(())
    }

    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        if self.shown != Some(true) {
            self.inner.show_cursor()?;
            self.shown = Some(true);
            self.pending = true;
        }
        Ok(())
    }

    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        let position = position.into();
        if self.at != Some(position) {
            self.inner.set_cursor_position(position)?;
            self.at = Some(position);
            self.pending = true;
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), Self::Error> {
        self.pending = true;
        self.at = None;
        self.inner.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.pending = true;
        self.at = None;
        self.inner.clear_region(clear_type)
    }

    fn size(&self) -> Result<Size, Self::Error> {
        self.inner.size()
    }

    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        self.inner.window_size()
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        if std::mem::take(&mut self.pending) {
            self.inner.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::actions::Keymap;
    use crate::tui::app::{App, Msg};
    use crate::tui::sessions::tests::session;
    use crate::tui::theme::Theme;
    use ratatui::backend::CrosstermBackend;
    use ratatui::layout::Rect;
    use ratatui::{Terminal, TerminalOptions, Viewport};
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// What the terminal was sent.
    #[derive(Clone, Default)]
    struct Wire(Arc<Mutex<Vec<u8>>>);

    impl Wire {
        fn len(&self) -> usize {
            self.0.lock().map(|b| b.len()).unwrap_or(0)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unchanged_frame_writes_nothing_and_a_change_writes_little() {
        let wire = Wire::default();
        let backend = Quiet::new(CrosstermBackend::new(wire.clone()));
        let mut term = Terminal::with_options(
            backend,
            TerminalOptions {
                viewport: Viewport::Fixed(Rect::new(0, 0, 120, 40)),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut app = App::new(
            Keymap::new(false),
            Theme::default_theme(),
            vec![],
            "sqlite:///x.db".into(),
            "local".into(),
        );
        app.update(Msg::Sessions(
            (1..=30)
                .map(|i| session(i, "coder", crate::model::SessionStatus::Idle))
                .collect(),
        ));
        let now = chrono::DateTime::from_timestamp(1_790_000_600, 0).unwrap_or_default();
        let mut draw = |app: &App| {
            term.draw(|f| crate::tui::views::render(f, app, now))
                .unwrap_or_else(|e| panic!("{e}"));
        };
        draw(&app);
        let first = wire.len();
        assert!(first > 1000, "the first frame is drawn: {first} bytes");
        // the clock ticks, nothing on screen changes: not a byte
        app.update(Msg::Tick);
        draw(&app);
        draw(&app);
        assert_eq!(wire.len(), first);
        // one row changes selection: a few rows' worth, not a screen
        app.update(Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Down,
            crossterm::event::KeyModifiers::NONE,
        )));
        draw(&app);
        let step = wire.len() - first;
        assert!(
            step > 0 && step < first / 4,
            "{step} bytes for one row moving"
        );
    }
}
