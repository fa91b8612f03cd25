//! The cockpit's state and how it changes. `App::update` applies one message (a key, a loaded
//! list, a change, a delta) and returns the effects to run; it does no I/O itself, so every
//! reaction to a key is testable, and the render path never waits on anything.

use super::actions::{Action, Keymap, Scope};
use super::panels::{Diagnosis, HealthView, LogView, Panel};
use super::sessions::SessionList;
use super::theme::Theme;
use super::transcript::Transcript;
use crate::config::AgentSpec;
use crate::core::ingest::LiveDelta;
use crate::model::{Message, Session, SessionStatus};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::TextArea;
use uuid::Uuid;

/// What background tasks and the terminal tell the loop.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Resize,
    Sessions(Vec<Session>),
    Session(Box<Session>),
    Messages {
        session: Uuid,
        messages: Vec<Message>,
        complete: bool,
    },
    Delta(LiveDelta),
    Info(String),
    Error(String),
    /// The clock moved (countdowns, ages).
    Tick,
    Health(Vec<(Uuid, String, Result<crate::runtime::SandboxHealth, String>)>),
    HealthChange(Uuid, crate::runtime::SandboxHealth),
    LogLines {
        session: Uuid,
        lines: Vec<String>,
        ended: Option<String>,
    },
    Diagnosis(Box<Diagnosis>),
    /// Whether the store and the gateway answer.
    Connectivity {
        store: Result<(), String>,
        gateway: Result<(), String>,
    },
}

/// What the loop must do for the app (I/O, off the render path).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    LoadSessions,
    LoadMessages {
        session: Uuid,
        after: i64,
    },
    Send {
        session: Uuid,
        text: String,
    },
    Lifecycle {
        action: Action,
        session: Uuid,
    },
    Create {
        agent: String,
        title: String,
        prompt: String,
    },
    LoadHealth,
    FollowLogs {
        session: Uuid,
    },
    Diagnose {
        session: Uuid,
    },
}

pub enum Dialog {
    Help,
    Filter(Box<TextArea<'static>>),
    Confirm {
        action: Action,
        session: Uuid,
        title: String,
    },
    NewSession(Box<NewSession>),
}

pub struct NewSession {
    pub agents: Vec<String>,
    pub agent: usize,
    /// 0 agent, 1 title, 2 prompt
    pub field: usize,
    pub title: TextArea<'static>,
    pub prompt: TextArea<'static>,
}

pub struct App {
    pub keymap: Keymap,
    pub theme: Theme,
    pub sessions: SessionList,
    pub transcript: Option<Transcript>,
    /// A screen over the others (health, logs, diagnose).
    pub panel: Option<Panel>,
    pub dialog: Option<Dialog>,
    /// `:` command mode, and the commands given before.
    pub command: Option<TextArea<'static>>,
    pub history: Vec<String>,
    pub agents: Vec<AgentSpec>,
    /// The last thing worth saying (and whether it is an error).
    pub status: Option<(String, bool)>,
    /// The status line's message as first shown, and when (to clear it after a while).
    status_since: Option<(String, bool, std::time::Instant)>,
    pub store: String,
    pub runtime: String,
    /// The last connectivity check: (store, gateway); `None` before the first.
    pub connectivity: Option<(Result<(), String>, Result<(), String>)>,
    pub quit: bool,
    /// Set by anything that changes what is on screen.
    pub dirty: bool,
}

fn text_of(area: &TextArea<'_>) -> String {
    area.lines().join("\n")
}

impl App {
    pub fn new(
        keymap: Keymap,
        theme: Theme,
        agents: Vec<AgentSpec>,
        store: String,
        runtime: String,
    ) -> Self {
        App {
            keymap,
            theme,
            sessions: SessionList::default(),
            transcript: None,
            panel: None,
            dialog: None,
            command: None,
            history: Vec::new(),
            agents,
            status: None,
            status_since: None,
            store,
            runtime,
            connectivity: None,
            quit: false,
            dirty: true,
        }
    }

    pub fn scope(&self) -> Scope {
        if matches!(self.panel, Some(Panel::Logs(_))) {
            Scope::Transcript
        } else if self.panel.is_some() {
            Scope::Global
        } else if self.transcript.is_some() {
            Scope::Transcript
        } else {
            Scope::Sessions
        }
    }

    /// The session an action applies to: the attached one, else the selected one.
    fn target(&self) -> Option<&Session> {
        match &self.transcript {
            Some(t) => self.sessions.get(t.session),
            None => self.sessions.selected(),
        }
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let effects = self.apply(msg);
        let same = match (&self.status, &self.status_since) {
            (Some((t, e)), Some((t2, e2, _))) => t == t2 && e == e2,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.status_since = self
                .status
                .clone()
                .map(|(t, e)| (t, e, std::time::Instant::now()));
        }
        effects
    }

    fn apply(&mut self, msg: Msg) -> Vec<Effect> {
        self.dirty = true;
        match msg {
            Msg::Key(key) => self.on_key(key),
            Msg::Resize => vec![],
            Msg::Tick => {
                // A message stays on the status line for a few seconds.
                if let Some((_, _, since)) = &self.status_since
                    && since.elapsed() > std::time::Duration::from_secs(8)
                {
                    self.status = None;
                    self.status_since = None;
                }
                vec![]
            }
            Msg::Sessions(list) => {
                self.sessions.replace_all(list);
                vec![]
            }
            Msg::Session(s) => {
                self.sessions.upsert(*s);
                vec![]
            }
            Msg::Messages {
                session,
                messages,
                complete,
            } => {
                if let Some(t) = self.transcript.as_mut().filter(|t| t.session == session) {
                    t.merge(messages);
                    t.loaded |= complete;
                }
                vec![]
            }
            Msg::Delta(d) => {
                if let Some(t) = self.transcript.as_mut().filter(|t| t.session == d.session) {
                    self.dirty = t.apply_delta(&d);
                } else {
                    self.dirty = false;
                }
                vec![]
            }
            Msg::Info(text) => {
                self.status = Some((text, false));
                vec![]
            }
            Msg::Error(text) => {
                self.status = Some((text, true));
                vec![]
            }
            Msg::Health(rows) => {
                if let Some(Panel::Health(v)) = &mut self.panel {
                    v.rows = rows;
                    v.loaded = true;
                    v.sort();
                }
                vec![]
            }
            Msg::HealthChange(id, health) => {
                match &mut self.panel {
                    Some(Panel::Health(v)) => {
                        let title = self
                            .sessions
                            .get(id)
                            .map(|s| s.title.clone())
                            .unwrap_or_default();
                        v.upsert(id, title, Ok(health));
                    }
                    _ => self.dirty = false,
                }
                vec![]
            }
            Msg::LogLines {
                session,
                lines,
                ended,
            } => {
                match &mut self.panel {
                    Some(Panel::Logs(v)) if v.session == session => {
                        v.push(lines);
                        if ended.is_some() {
                            v.ended = ended;
                        }
                    }
                    _ => self.dirty = false,
                }
                vec![]
            }
            Msg::Connectivity { store, gateway } => {
                let now = Some((store, gateway));
                self.dirty = self.connectivity != now;
                self.connectivity = now;
                vec![]
            }
            Msg::Diagnosis(d) => {
                if matches!(&self.panel, Some(Panel::Diagnose(old)) if old.session.id == d.session.id)
                {
                    self.panel = Some(Panel::Diagnose(d));
                }
                vec![]
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        // Text entry owns the keyboard while it is open.
        if let Some(effects) = self.on_text_key(key) {
            return effects;
        }
        if let Some(Dialog::Confirm {
            action, session, ..
        }) = &self.dialog
        {
            let (action, session) = (*action, *session);
            self.dialog = None;
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    vec![Effect::Lifecycle { action, session }]
                }
                _ => {
                    self.status = Some(("cancelled".into(), false));
                    vec![]
                }
            };
        }
        let action = self.keymap.action(&key, self.scope());
        // Any key closes help (quit still quits).
        if matches!(self.dialog, Some(Dialog::Help)) {
            self.dialog = None;
            if action != Some(Action::Quit) {
                return vec![];
            }
        }
        let Some(action) = action else {
            return vec![];
        };
        self.on_action(action)
    }

    fn on_action(&mut self, action: Action) -> Vec<Effect> {
        let page = 10;
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.dialog = Some(Dialog::Help),
            Action::Back => {
                if self.dialog.take().is_none() && self.panel.take().is_none() {
                    self.transcript = None;
                }
            }
            Action::Health => {
                self.panel = Some(Panel::Health(HealthView::default()));
                return vec![Effect::LoadHealth];
            }
            Action::Logs => {
                if let Some(s) = self.target() {
                    let (id, title) = (s.id, s.title.clone());
                    self.panel = Some(Panel::Logs(LogView::new(id, title)));
                    return vec![Effect::FollowLogs { session: id }];
                }
            }
            Action::Diagnose => {
                if let Some(s) = self.target() {
                    let id = s.id;
                    self.panel = Some(Panel::Diagnose(Box::new(Diagnosis {
                        session: s.clone(),
                        phases: vec![],
                        health: None,
                        log_tail: Ok(vec![]),
                        gateway: Ok(()),
                    })));
                    return vec![Effect::Diagnose { session: id }];
                }
            }
            Action::Command => {
                let mut area = TextArea::default();
                area.set_placeholder_text(
                    "sessions, sandboxes, logs, diagnose, agents, team NAME, quit",
                );
                self.command = Some(area);
            }
            Action::Up => self.scroll(-1),
            Action::Down => self.scroll(1),
            Action::PageUp => self.scroll(-page),
            Action::PageDown => self.scroll(page),
            Action::Top => match &mut self.transcript {
                Some(t) => {
                    t.follow = false;
                    t.scroll = 0;
                }
                None => self.sessions.select_index(0),
            },
            Action::Bottom => match (&mut self.panel, &mut self.transcript) {
                (Some(Panel::Logs(v)), _) => v.follow = true,
                (Some(_), _) => {}
                (None, Some(t)) => t.follow = true,
                (None, None) => self.sessions.select_index(usize::MAX),
            },
            Action::Attach => {
                if let Some(s) = self.sessions.selected() {
                    let id = s.id;
                    self.transcript = Some(Transcript::new(id));
                    return vec![Effect::LoadMessages {
                        session: id,
                        after: 0,
                    }];
                }
            }
            Action::Filter => {
                let mut area = TextArea::default();
                area.insert_str(&self.sessions.filter().text);
                area.set_placeholder_text("words or key:value, e.g. agent:coder status:failed");
                self.dialog = Some(Dialog::Filter(Box::new(area)));
            }
            Action::NewSession => {
                if self.agents.is_empty() {
                    self.status = Some(("no agents are configured".into(), true));
                } else {
                    let mut prompt = TextArea::default();
                    prompt.set_placeholder_text("the first message (optional)");
                    let mut title = TextArea::default();
                    title.set_placeholder_text("a title (optional)");
                    self.dialog = Some(Dialog::NewSession(Box::new(NewSession {
                        agents: self.agents.iter().map(|a| a.id.clone()).collect(),
                        agent: 0,
                        field: 0,
                        title,
                        prompt,
                    })));
                }
            }
            Action::Restart | Action::Suspend | Action::End => {
                if let Some(s) = self.target() {
                    self.dialog = Some(Dialog::Confirm {
                        action,
                        session: s.id,
                        title: s.title.clone(),
                    });
                }
            }
            Action::Resume | Action::Abort => {
                if let Some(s) = self.target() {
                    return vec![Effect::Lifecycle {
                        action,
                        session: s.id,
                    }];
                }
            }
            Action::Compose => {
                if let Some(t) = &mut self.transcript {
                    let ended = self
                        .sessions
                        .get(t.session)
                        .is_some_and(|s| s.status == SessionStatus::Dead);
                    if ended {
                        self.status =
                            Some(("this session has ended; start a new one (n)".into(), true));
                    } else {
                        t.open_composer();
                    }
                }
            }
            Action::ToggleWrap => {
                if let Some(Panel::Logs(v)) = &mut self.panel {
                    v.wrap = !v.wrap;
                } else if let Some(t) = &mut self.transcript {
                    t.wrap = !t.wrap;
                }
            }
            Action::ToggleTimestamps => {
                if let Some(t) = &mut self.transcript {
                    t.timestamps = !t.timestamps;
                }
            }
            Action::ToggleTools => {
                if let Some(t) = &mut self.transcript {
                    t.tools_open = !t.tools_open;
                }
            }
        }
        vec![]
    }

    fn scroll(&mut self, delta: isize) {
        match &mut self.panel {
            Some(Panel::Logs(v)) => {
                if delta < 0 && v.follow {
                    v.follow = false;
                    v.scroll = v.lines.len().saturating_sub(10);
                }
                v.scroll = (v.scroll as isize + delta).max(0) as usize;
                return;
            }
            Some(Panel::Health(v)) => {
                let last = v.rows.len().saturating_sub(1) as isize;
                v.selected = (v.selected as isize + delta).clamp(0, last.max(0)) as usize;
                return;
            }
            Some(Panel::Diagnose(_)) => return,
            None => {}
        }
        match &mut self.transcript {
            Some(t) => {
                if delta < 0 {
                    t.follow = false;
                }
                t.scroll = (t.scroll as isize + delta).max(0) as usize;
            }
            None => self.sessions.move_by(delta),
        }
    }

    /// Keys for an open text field; `None` when no text field is open.
    fn on_text_key(&mut self, key: KeyEvent) -> Option<Vec<Effect>> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if let Some(area) = &mut self.command {
            return Some(match key.code {
                KeyCode::Esc => {
                    self.command = None;
                    vec![]
                }
                KeyCode::Enter => {
                    let text = text_of(area).trim().to_string();
                    self.command = None;
                    if !text.is_empty() {
                        self.history.retain(|h| *h != text);
                        self.history.push(text.clone());
                    }
                    self.run_command(&text)
                }
                KeyCode::Up => {
                    let current = text_of(area);
                    let pos = self
                        .history
                        .iter()
                        .position(|h| *h == current)
                        .unwrap_or(self.history.len());
                    if let Some(prev) = pos.checked_sub(1).and_then(|i| self.history.get(i)) {
                        let mut fresh = TextArea::default();
                        fresh.insert_str(prev);
                        *area = fresh;
                    }
                    vec![]
                }
                _ => {
                    area.input(key);
                    vec![]
                }
            });
        }
        if let Some(t) = &mut self.transcript
            && self.dialog.is_none()
            && let Some(area) = &mut t.composer
        {
            return Some(match key.code {
                KeyCode::Esc => {
                    t.composer = None;
                    vec![]
                }
                KeyCode::Char('s') if ctrl => {
                    let text = text_of(area);
                    if text.trim().is_empty() {
                        self.status = Some(("nothing to send".into(), true));
                        return Some(vec![]);
                    }
                    // Kept until the store has it: a failed send leaves the text in place.
                    t.composer = None;
                    vec![Effect::Send {
                        session: t.session,
                        text,
                    }]
                }
                _ => {
                    area.input(key);
                    vec![]
                }
            });
        }
        match &mut self.dialog {
            Some(Dialog::Filter(area)) => Some(match key.code {
                KeyCode::Esc => {
                    self.dialog = None;
                    vec![]
                }
                KeyCode::Enter => {
                    let text = text_of(area);
                    self.sessions.set_filter(&text);
                    self.dialog = None;
                    vec![]
                }
                _ => {
                    area.input(key);
                    let text = text_of(area);
                    self.sessions.set_filter(&text);
                    vec![]
                }
            }),
            Some(Dialog::NewSession(form)) => Some(match key.code {
                KeyCode::Esc => {
                    self.dialog = None;
                    vec![]
                }
                KeyCode::Tab => {
                    form.field = (form.field + 1) % 3;
                    vec![]
                }
                KeyCode::BackTab => {
                    form.field = (form.field + 2) % 3;
                    vec![]
                }
                KeyCode::Char('s') if ctrl => self.submit_new(),
                KeyCode::Enter if form.field < 2 => self.submit_new(),
                KeyCode::Up if form.field == 0 => {
                    form.agent = form.agent.saturating_sub(1);
                    vec![]
                }
                KeyCode::Down if form.field == 0 => {
                    form.agent = (form.agent + 1).min(form.agents.len().saturating_sub(1));
                    vec![]
                }
                _ => {
                    match form.field {
                        1 => {
                            form.title.input(key);
                        }
                        2 => {
                            form.prompt.input(key);
                        }
                        _ => {}
                    }
                    vec![]
                }
            }),
            _ => None,
        }
    }

    /// `:` commands and their aliases.
    fn run_command(&mut self, text: &str) -> Vec<Effect> {
        let mut words = text.trim_start_matches(':').split_whitespace();
        let verb = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        match verb {
            "" => vec![],
            "q" | "quit" => self.on_action(Action::Quit),
            "s" | "sessions" => {
                self.panel = None;
                self.transcript = None;
                vec![]
            }
            "sandboxes" | "sb" | "health" | "pods" => self.on_action(Action::Health),
            "logs" | "log" => self.on_action(Action::Logs),
            "diagnose" | "diag" => self.on_action(Action::Diagnose),
            "new" => self.on_action(Action::NewSession),
            "help" => self.on_action(Action::Help),
            "agents" | "agent" => {
                let names: Vec<String> = self
                    .agents
                    .iter()
                    .map(|a| format!("{} ({})", a.id, a.model))
                    .collect();
                self.status = Some((format!("agents: {}", names.join(", ")), false));
                vec![]
            }
            "team" => {
                self.panel = None;
                self.transcript = None;
                let filter = match rest.first() {
                    Some(team) => format!("team:{team}"),
                    None => String::new(),
                };
                self.sessions.set_filter(&filter);
                vec![]
            }
            other => {
                self.status = Some((
                    format!(
                        "unknown command :{other}; try :sessions :sandboxes :logs :diagnose :agents :team NAME :quit"
                    ),
                    true,
                ));
                vec![]
            }
        }
    }

    fn submit_new(&mut self) -> Vec<Effect> {
        let Some(Dialog::NewSession(form)) = self.dialog.take() else {
            return vec![];
        };
        let agent = form.agents.get(form.agent).cloned().unwrap_or_default();
        vec![Effect::Create {
            agent,
            title: text_of(&form.title),
            prompt: text_of(&form.prompt),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::sessions::tests::session;

    fn app() -> App {
        App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "sqlite://x".into(),
            "local".into(),
        )
    }

    fn key(c: char) -> Msg {
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    #[test]
    fn attach_compose_send_and_back() {
        let mut a = app();
        a.update(Msg::Sessions(vec![
            session(1, "coder", SessionStatus::Idle),
            session(2, "coder", SessionStatus::Idle),
        ]));
        let fx = a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
        let id = Uuid::from_u128(2);
        assert_eq!(
            fx,
            vec![Effect::LoadMessages {
                session: id,
                after: 0
            }]
        );
        a.update(key('i'));
        for c in "hi there".chars() {
            a.update(key(c));
        }
        let fx = a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('s'),
            KeyModifiers::CONTROL,
        )));
        assert_eq!(
            fx,
            vec![Effect::Send {
                session: id,
                text: "hi there".into()
            }]
        );
        // 'q' typed in the composer is text, not quit
        a.update(key('i'));
        a.update(key('q'));
        assert!(!a.quit);
        a.update(Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
        a.update(Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(a.transcript.is_none());
        a.update(key('q'));
        assert!(a.quit);
    }

    #[test]
    fn dangerous_actions_ask_first_and_read_only_has_none() {
        let mut a = app();
        a.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('X'),
            KeyModifiers::SHIFT,
        )));
        assert!(matches!(
            a.dialog,
            Some(Dialog::Confirm {
                action: Action::End,
                ..
            })
        ));
        assert_eq!(a.update(key('n')), vec![]);
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('X'),
            KeyModifiers::SHIFT,
        )));
        assert_eq!(
            a.update(key('y')),
            vec![Effect::Lifecycle {
                action: Action::End,
                session: Uuid::from_u128(1)
            }]
        );

        let mut ro = App::new(
            Keymap::new(true),
            Theme::mono(),
            vec![],
            String::new(),
            String::new(),
        );
        ro.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        ro.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('X'),
            KeyModifiers::SHIFT,
        )));
        assert!(ro.dialog.is_none());
    }

    #[test]
    fn filter_applies_as_you_type() {
        let mut a = app();
        a.update(Msg::Sessions(vec![
            session(1, "coder", SessionStatus::Idle),
            session(2, "reviewer", SessionStatus::Failed),
        ]));
        a.update(key('/'));
        for c in "status:failed".chars() {
            a.update(key(c));
        }
        assert_eq!(a.sessions.len(), 1);
        a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
        assert!(a.dialog.is_none());
        assert_eq!(
            a.sessions.selected().map(|s| s.agent_id.as_str()),
            Some("reviewer")
        );
    }
}
