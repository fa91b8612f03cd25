//! Where the cockpit has been: the screens left for another, newest last, so that esc returns
//! where you came from (a log opened from the Sandboxes view goes back to that view, with its
//! selection), and the session list's cursor is on the session you last worked on.

use super::app::{App, Effect};
use super::logs::next_stream;
use super::panels::Panel;
use super::transcript::Transcript;
use uuid::Uuid;

/// A screen left for another.
pub enum Place {
    Sessions,
    Transcript(Uuid),
    /// Kept whole (the Sandboxes view's selection, a diagnosis), and refreshed on return.
    Panel(Box<Panel>),
}

/// How many places are remembered; the oldest is forgotten first.
const DEPTH: usize = 32;

/// The places left, newest last.
#[derive(Default)]
pub struct BackStack(Vec<Place>);

impl BackStack {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, place: Place) {
        if self.0.len() == DEPTH {
            self.0.remove(0);
        }
        self.0.push(place);
    }
}

impl App {
    /// Remembers the screen shown before another is shown (its panel is taken out: the caller
    /// puts the next screen in its place).
    pub(super) fn leave(&mut self) {
        let place = match (self.panel.take(), &self.transcript) {
            (Some(panel), _) => Place::Panel(Box::new(panel)),
            (None, Some(t)) => Place::Transcript(t.session),
            (None, None) => Place::Sessions,
        };
        self.back.push(place);
    }

    /// Shows session `id`'s transcript, remembering the screen it leaves; the list's cursor
    /// moves to the session.
    pub(super) fn go_to_transcript(&mut self, id: Uuid) -> Vec<Effect> {
        self.leave();
        self.show_transcript(id)
    }

    /// Shows the session list, remembering the screen it leaves.
    pub(super) fn go_home(&mut self) {
        if self.panel.is_none() && self.transcript.is_none() {
            return;
        }
        self.leave();
        if let Some(t) = self.transcript.take() {
            self.keep_draft(t);
        }
    }

    /// esc: the screen shown before this one, as it was left (a panel is refreshed).
    pub(super) fn go_back(&mut self) -> Vec<Effect> {
        match self.back.0.pop() {
            None | Some(Place::Sessions) => {
                self.panel = None;
                if let Some(t) = self.transcript.take() {
                    self.sessions.select(t.session);
                    self.keep_draft(t);
                }
                vec![]
            }
            Some(Place::Transcript(id)) => {
                self.panel = None;
                self.show_transcript(id)
            }
            Some(Place::Panel(mut panel)) => {
                let effects = match &mut *panel {
                    Panel::Health(_) => vec![Effect::LoadHealth],
                    Panel::Logs(v) => {
                        // Its stream stopped when it was left: a new one, from the same point.
                        let stream = next_stream();
                        v.restart(stream, v.since);
                        vec![Effect::FollowLogs {
                            session: v.session,
                            stream,
                            since: v.since,
                        }]
                    }
                    Panel::Diagnose(v) => {
                        v.looking = true;
                        vec![Effect::Diagnose {
                            session: v.diagnosis.session.id,
                        }]
                    }
                    Panel::Changes(v) => vec![Effect::LoadChanges { session: v.session }],
                };
                self.panel = Some(*panel);
                effects
            }
        }
    }

    /// Puts session `id`'s transcript on screen (the one open stays, loaded, if it is that
    /// session's) and the list's cursor on the session.
    fn show_transcript(&mut self, id: Uuid) -> Vec<Effect> {
        self.panel = None;
        self.sessions.select(id);
        if self.transcript.as_ref().is_some_and(|t| t.session == id) {
            return vec![];
        }
        if let Some(old) = self.transcript.take() {
            self.keep_draft(old);
        }
        self.transcript = Some(Transcript::new(id));
        vec![
            Effect::LoadMessages {
                session: id,
                after: 0,
            },
            Effect::LoadAsks { session: id },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HealthPhase, SandboxHealth, SessionStatus};
    use crate::tui::actions::{Keymap, Scope};
    use crate::tui::app::Msg;
    use crate::tui::sessions::tests::session;
    use crate::tui::theme::Theme;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn app() -> App {
        let mut app = App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "sqlite://x".into(),
            "local".into(),
        );
        app.update(Msg::Sessions(
            (1..=5)
                .map(|i| session(i, "coder", SessionStatus::Idle))
                .collect(),
        ));
        app
    }

    fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
        app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn key(app: &mut App, c: char) -> Vec<Effect> {
        press(app, KeyCode::Char(c))
    }

    fn fleet(app: &mut App, trouble: u64) {
        let rows = (1..=5)
            .map(|i| {
                let phase = if i == trouble {
                    HealthPhase::CrashLooping
                } else {
                    HealthPhase::Ready
                };
                (
                    Uuid::from_u128(i.into()),
                    format!("task {i}"),
                    Ok(SandboxHealth::new(phase)),
                )
            })
            .collect();
        app.update(Msg::Health(rows, Vec::new()));
    }

    fn health_selected(app: &App) -> Option<Uuid> {
        match &app.panel {
            Some(Panel::Health(v)) => v.rows.get(v.selected).map(|r| r.0),
            _ => None,
        }
    }

    /// Esc from a log or a diagnosis opened from the Sandboxes view lands on that view (it
    /// landed on the session list), with the cursor on the same sandbox.
    #[test]
    fn esc_returns_where_you_came_from() {
        let mut a = app();
        key(&mut a, 'h');
        assert_eq!(a.scope(), Scope::Sandboxes);
        fleet(&mut a, 0);
        press(&mut a, KeyCode::Down);
        press(&mut a, KeyCode::Down);
        let picked = health_selected(&a).expect("a sandbox is selected");
        let effects = key(&mut a, 'l');
        assert_eq!(a.scope(), Scope::Logs);
        assert!(matches!(effects[..], [Effect::FollowLogs { session, .. }] if session == picked));
        let effects = press(&mut a, KeyCode::Esc);
        assert_eq!(a.scope(), Scope::Sandboxes, "esc from the log");
        assert_eq!(health_selected(&a), Some(picked));
        assert!(
            matches!(effects[..], [Effect::LoadHealth]),
            "refreshed: {effects:?}"
        );
        // A diagnosis, then the transcript from it: esc walks back through each.
        key(&mut a, 'd');
        assert_eq!(a.scope(), Scope::Diagnose);
        press(&mut a, KeyCode::Enter);
        assert_eq!(a.scope(), Scope::Transcript);
        assert_eq!(a.transcript.as_ref().map(|t| t.session), Some(picked));
        press(&mut a, KeyCode::Esc);
        assert_eq!(a.scope(), Scope::Diagnose);
        press(&mut a, KeyCode::Esc);
        assert_eq!(a.scope(), Scope::Sandboxes);
        press(&mut a, KeyCode::Esc);
        assert_eq!(a.scope(), Scope::Sessions);
        assert!(a.back.is_empty());
        // Home has nowhere further back.
        press(&mut a, KeyCode::Esc);
        assert_eq!(a.scope(), Scope::Sessions);
        // The list's cursor is on the session last worked on.
        assert_eq!(a.sessions.selected().map(|s| s.id), Some(picked));
    }

    /// A panel opened over a transcript goes back to it as it was: no reload.
    #[test]
    fn a_panel_over_a_transcript_goes_back_to_it() {
        let mut a = app();
        press(&mut a, KeyCode::Enter);
        let attached = a.transcript.as_ref().map(|t| t.session);
        key(&mut a, 'd');
        assert_eq!(a.scope(), Scope::Diagnose);
        let effects = press(&mut a, KeyCode::Esc);
        assert_eq!(a.scope(), Scope::Transcript);
        assert_eq!(a.transcript.as_ref().map(|t| t.session), attached);
        assert!(effects.is_empty(), "{effects:?}");
    }

    /// A health change re-sorts the Sandboxes view: the cursor stays on its sandbox (it
    /// stayed on the row number, so the next key acted on another session).
    #[test]
    fn the_sandboxes_cursor_follows_its_sandbox() {
        let mut a = app();
        key(&mut a, 'h');
        fleet(&mut a, 0);
        press(&mut a, KeyCode::Down);
        press(&mut a, KeyCode::Down);
        let picked = health_selected(&a).expect("a sandbox is selected");
        // Another one gets into trouble and goes to the top.
        let other = Uuid::from_u128(5);
        assert_ne!(picked, other);
        a.update(Msg::HealthChange(
            other,
            SandboxHealth::new(HealthPhase::CrashLooping),
        ));
        assert_eq!(health_selected(&a), Some(picked));
        // A whole new read of the fleet, with it at the top.
        fleet(&mut a, 3);
        assert_eq!(health_selected(&a), Some(picked));
    }

    /// Clearing a filter leaves the cursor on the session worked on under it (it went back to
    /// the one selected before the filter: a question was typed into the wrong session).
    #[test]
    fn the_cursor_stays_on_the_session_worked_on() {
        let mut a = app();
        // The newest (5) is selected; a filter hides it and shows 4 and 2.
        let first = a.sessions.selected().map(|s| s.id);
        assert_eq!(first, Some(Uuid::from_u128(5)));
        a.sessions.set_filter("team:red");
        let shown: Vec<_> = (0..a.sessions.len())
            .filter_map(|i| a.sessions.at(i).map(|s| s.id))
            .collect();
        assert_eq!(shown, [Uuid::from_u128(4), Uuid::from_u128(2)]);
        press(&mut a, KeyCode::Down);
        let worked_on = a.sessions.selected().map(|s| s.id);
        assert_eq!(worked_on, Some(Uuid::from_u128(2)));
        press(&mut a, KeyCode::Enter);
        assert_eq!(a.transcript.as_ref().map(|t| t.session), worked_on);
        press(&mut a, KeyCode::Esc);
        a.sessions.set_filter("");
        assert_eq!(a.sessions.selected().map(|s| s.id), worked_on);
        // Sorting keeps it too.
        key(&mut a, 's');
        assert_eq!(a.sessions.selected().map(|s| s.id), worked_on);
        // A reload without it keeps the cursor where it was, not at the top.
        let at = a.sessions.selected_index();
        let keep: Vec<_> = (1..=5)
            .filter(|i| Some(Uuid::from_u128(*i as u128)) != worked_on)
            .map(|i| session(i, "coder", SessionStatus::Idle))
            .collect();
        a.update(Msg::Sessions(keep));
        assert_eq!(a.sessions.selected_index(), at.min(3));
    }
}
