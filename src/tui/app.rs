//! The cockpit's state and how it changes. `App::update` applies one message (a key, a loaded
//! list, a change, a delta) and returns the effects to run; it does no I/O itself, so every
//! reaction to a key is testable, and the render path never waits on anything.

use super::actions::{Action, Keymap, Scope};
use super::logs::next_stream;
use super::panels::{ChangesView, DiagnoseView, HealthView, LogView, Panel};
use super::screen::{Cx, Screen, step};
use super::sessions::{SessionList, SortKey};
use super::theme::Theme;
use super::transcript::Transcript;
use crate::config::AgentSpec;
use crate::core::Diagnosis;
use crate::core::ingest::LiveDelta;
use crate::deck::AgentChoice;
use crate::model::{
    Answer, Ask, AskKind, Command, Message, PermissionReply, Session, SessionStatus,
};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::style::{Modifier, Style};
use ratatui_textarea::TextArea;
use std::cell::Cell;
use std::collections::HashMap;
use uuid::Uuid;

/// Every how many seconds an open view of what the agent changed is read again.
const CHANGES_EVERY: u64 = 5;

/// What background tasks and the terminal tell the loop.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    /// Only when the mouse is taken (`--mouse`, `[tui] mouse`).
    Mouse(MouseEvent),
    Resize,
    /// Every session: the list is replaced.
    Sessions(Vec<Session>),
    /// One page of the first load, newest first: the first replaces the list, the next ones
    /// (older) join it; `last` ends the load.
    SessionPage {
        sessions: Vec<Session>,
        first: bool,
        last: bool,
    },
    Session(Box<Session>),
    Messages {
        session: Uuid,
        messages: Vec<Message>,
        complete: bool,
    },
    Delta(LiveDelta),
    /// A message the store did not take: it goes back to the composer.
    NotSent {
        session: Uuid,
        text: String,
        error: String,
    },
    Info(String),
    Error(String),
    /// The clock moved (countdowns, ages).
    Tick,
    Health(
        Vec<(Uuid, String, Result<crate::model::SandboxHealth, String>)>,
        Vec<crate::model::PoolHealth>,
    ),
    HealthChange(Uuid, crate::model::SandboxHealth),
    LogLines {
        stream: u64,
        lines: Vec<String>,
        ended: Option<String>,
    },
    Diagnosis(Box<Diagnosis>),
    /// What the agent changed in a session's files, turn by turn.
    Changes(Uuid, Vec<crate::model::TurnDiff>),
    /// A fork made from the cockpit: it is attached.
    Forked(Box<Session>),
    /// A shell to run on the terminal (the loop gives the terminal to it, then takes it back).
    Shell(Box<crate::core::Shell>),
    /// What the session's agent waits for a person to answer.
    Asks {
        session: Uuid,
        asks: Vec<Ask>,
    },
    /// Whether the store, the runtime and the gateway answer.
    Connectivity(Connectivity),
    /// This month's spend of the teams with a budget (read every half minute).
    Budgets(Vec<crate::model::TeamSpend>),
    /// The agents changed (a server said so): what a new session can be started with.
    Agents(Vec<AgentSpec>, Vec<AgentChoice>),
    /// A reload was asked for from outside (SIGHUP).
    ReloadAsked,
    /// The configuration was read again: what applied, and what the cockpit takes of it.
    Reloaded(Box<Reload>),
}

/// What a reload of the configuration gives the cockpit.
#[derive(Debug, Clone)]
pub struct Reload {
    pub report: crate::core::Reloaded,
    pub agents: Vec<AgentSpec>,
    pub choices: Vec<AgentChoice>,
    pub tui: crate::config::TuiConfig,
    /// The theme `[tui] theme` names now, when it changed (and no `--theme` overrides it).
    pub theme: Option<Result<Theme, String>>,
}

pub use crate::deck::Connectivity;

/// What the loop must do for the app (I/O, off the render path).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell the person (the bell, a desktop notification, the hook): something needs them.
    Notify(super::notify::Notice),
    /// Reads every session; `pages` shows them a page at a time as they come (the first load,
    /// when there is nothing to show yet), else all at once.
    LoadSessions {
        pages: bool,
    },
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
        /// Which of several servers (none: the deck's own place).
        server: Option<String>,
        agent: String,
        title: String,
        prompt: String,
    },
    LoadHealth,
    /// Stream a sandbox's log into the log view while it shows `stream`.
    FollowLogs {
        session: Uuid,
        stream: u64,
        since: usize,
    },
    Diagnose {
        session: Uuid,
    },
    /// `:rename TITLE`.
    Rename {
        session: Uuid,
        title: String,
    },
    /// `:budget USD|none`.
    Budget {
        session: Uuid,
        usd: Option<f64>,
    },
    /// Read what the agent changed, for the changes screen.
    LoadChanges {
        session: Uuid,
    },
    LoadAsks {
        session: Uuid,
    },
    Fork {
        session: Uuid,
        at_seq: i64,
    },
    Shell {
        session: Uuid,
    },
    Answer {
        session: Uuid,
        ask: String,
        answer: Answer,
    },
    /// Read the configuration again and put it in effect (`:reload`, SIGHUP).
    Reload,
}

/// What a read-only cockpit says when asked to act.
/// How many of the selected session's last messages its preview reads.
pub const PREVIEW_MESSAGES: i64 = 20;

pub const READ_ONLY: &str = "read-only: this cockpit changes no session and makes no agent act (started with --read-only or a read-only context)";

impl Effect {
    /// Whether it changes a session or makes an agent act: none leaves a read-only cockpit.
    pub fn acts(&self) -> bool {
        match self {
            Effect::Send { .. }
            | Effect::Lifecycle { .. }
            | Effect::Create { .. }
            | Effect::Fork { .. }
            | Effect::Shell { .. }
            | Effect::Answer { .. }
            | Effect::Rename { .. }
            | Effect::Budget { .. } => true,
            Effect::LoadSessions { .. }
            | Effect::LoadMessages { .. }
            | Effect::LoadHealth
            | Effect::FollowLogs { .. }
            | Effect::Diagnose { .. }
            | Effect::LoadChanges { .. }
            | Effect::LoadAsks { .. }
            | Effect::Notify(_)
            | Effect::Reload => false,
        }
    }
}

pub enum Dialog {
    Help(HelpView),
    Filter(Box<TextArea<'static>>),
    Confirm {
        action: Action,
        session: Uuid,
        title: String,
    },
    NewSession(Box<NewSession>),
    /// `/` in the transcript or the logs: what to look for, typed in the status line.
    Search(Box<TextArea<'static>>),
    /// `f`: the message to fork the attached session at.
    Fork {
        session: Uuid,
        input: Box<TextArea<'static>>,
    },
    /// Answering what the agent asks: a reason for a rejection, or the answer to a question
    /// (one part after another when it has several: `answers` are the parts answered so far).
    Reply {
        session: Uuid,
        ask: Box<Ask>,
        input: Box<TextArea<'static>>,
        answers: Vec<Vec<String>>,
    },
}

pub struct NewSession {
    /// The agents to choose from (each on its server, when there are several).
    pub agents: Vec<AgentChoice>,
    pub agent: usize,
    /// 0 agent, 1 title, 2 prompt
    pub field: usize,
    pub title: TextArea<'static>,
    pub prompt: TextArea<'static>,
}

impl NewSession {
    pub fn new(agents: Vec<AgentChoice>) -> Self {
        let mut prompt = TextArea::default();
        prompt.set_placeholder_text("the first message (optional)");
        let mut title = TextArea::default();
        title.set_placeholder_text("a title (optional)");
        let mut form = NewSession {
            agents,
            agent: 0,
            field: 0,
            title,
            prompt,
        };
        form.focus(0);
        form
    }

    /// Moves to field `field`: only the field being typed in shows a cursor.
    pub fn focus(&mut self, field: usize) {
        self.field = field % 3;
        let cursor = Style::default().add_modifier(Modifier::REVERSED);
        for (i, area) in [(1, &mut self.title), (2, &mut self.prompt)] {
            area.set_cursor_style(if i == self.field {
                cursor
            } else {
                Style::default()
            });
            area.set_cursor_line_style(Style::default());
        }
    }
}

/// `?`: every key, those of the screen shown first; it scrolls, and any other key closes it.
#[derive(Default)]
pub struct HelpView {
    pub scroll: usize,
    pub shown: Cell<super::panels::Rows>,
}

pub struct App {
    pub keymap: Keymap,
    pub theme: Theme,
    pub sessions: SessionList,
    /// The first load of the sessions is not over: the list may be partial (or not there).
    pub loading: bool,
    pub transcript: Option<Transcript>,
    /// Whether the list shows the selected session's preview beside or under it (`p`).
    pub preview_on: bool,
    /// The selected session's last messages, as they stream, for the preview (none while a
    /// transcript is attached).
    pub preview: Option<Transcript>,
    /// Whether the last frame showed the preview (what it asks is answered from the list only
    /// when it was on screen).
    pub preview_shown: Cell<bool>,
    /// A screen over the others (health, logs, diagnose).
    pub panel: Option<Panel>,
    /// The screens left for the one shown, for esc.
    pub back: super::navigation::BackStack,
    pub dialog: Option<Dialog>,
    /// `:` command mode, and the commands given before.
    pub command: Option<TextArea<'static>>,
    pub history: Vec<String>,
    pub agents: Vec<AgentSpec>,
    /// Where a new session can start (each agent on its server, with several servers); the
    /// agents themselves when this is empty.
    pub choices: Vec<AgentChoice>,
    /// The last thing worth saying (and whether it is an error).
    pub status: Option<(String, bool)>,
    /// The status line's message as first shown, and when (to clear it after a while).
    status_since: Option<(String, bool, std::time::Instant)>,
    pub store: String,
    pub runtime: String,
    /// The Kubernetes context this cockpit is on, if any (for `[tui] read_only_contexts`).
    pub context: Option<String>,
    /// The theme was given with `--theme`: a reload keeps it.
    pub theme_fixed: bool,
    /// The last connectivity check; `None` before the first.
    pub connectivity: Option<Connectivity>,
    /// This month's spend of the teams with a budget: flagged on the top bar from 80%.
    pub budgets: Vec<crate::model::TeamSpend>,
    /// Clock ticks (seconds) since the cockpit started.
    ticks: u64,
    pub quit: bool,
    /// Set by anything that changes what is on screen.
    pub dirty: bool,
    /// What was written to a session and not sent (left with esc, or refused by the store).
    drafts: HashMap<Uuid, String>,
    /// Set when what [`App::unsent`] returns may have changed (for the loop to save it).
    pub drafts_changed: bool,
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
            sessions: SessionList::hiding_ended(),
            loading: true,
            transcript: None,
            preview_on: true,
            preview: None,
            preview_shown: Cell::new(false),
            panel: None,
            back: Default::default(),
            dialog: None,
            command: None,
            history: Vec::new(),
            agents,
            choices: Vec::new(),
            status: None,
            status_since: None,
            store,
            runtime,
            context: None,
            theme_fixed: false,
            connectivity: None,
            budgets: Vec::new(),
            ticks: 0,
            quit: false,
            dirty: true,
            drafts: HashMap::new(),
            drafts_changed: false,
        }
    }

    /// The screen shown: a panel (health, logs, diagnose) over the attached transcript over
    /// the session list.
    pub fn screen(&self) -> &dyn Screen {
        match (&self.panel, &self.transcript) {
            (Some(panel), _) => panel.screen(),
            (None, Some(t)) => t,
            (None, None) => &self.sessions,
        }
    }

    /// The screen shown, and what it may use of the app's while it handles something.
    fn screen_mut(&mut self) -> (&mut dyn Screen, Cx<'_>) {
        let App {
            panel,
            transcript,
            sessions,
            theme,
            status,
            ..
        } = self;
        let screen: &mut dyn Screen = match (panel, transcript) {
            (Some(panel), _) => panel.screen_mut(),
            (None, Some(t)) => t,
            (None, None) => sessions,
        };
        (screen, Cx { theme, status })
    }

    pub fn scope(&self) -> Scope {
        self.screen().scope()
    }

    /// The session an action applies to: the one the screen is about (the sandbox selected,
    /// the log's, the one diagnosed, the attached one), else the one selected in the list.
    fn target(&self) -> Option<&Session> {
        match self.screen().session() {
            Some(id) => self.sessions.get(id),
            None => self.sessions.selected(),
        }
    }

    /// Whether `action` makes sense now, for the hint bar: an action on a session needs one,
    /// in a state the core accepts it in (resume a suspended session, abort a busy one, …).
    pub fn offers(&self, action: Action) -> bool {
        let status = self.target().map(|s| s.status);
        // What the session takes, as the core decides it.
        let command = match action {
            Action::Resume => Command::Resume,
            Action::Suspend => Command::Suspend,
            Action::Restart => Command::Restart,
            Action::End => Command::End,
            Action::Abort => Command::Abort,
            Action::Attach | Action::Logs | Action::Diagnose => return status.is_some(),
            Action::Shell => return status.is_some_and(|s| !s.is_terminal()),
            Action::Allow | Action::Reject => return self.waiting_ask().is_some(),
            Action::NextWaiting | Action::PreviousWaiting => return self.sessions.waiting() > 0,
            Action::AllowAlways => {
                return self
                    .waiting_ask()
                    .is_some_and(|a| a.kind == AskKind::Permission);
            }
            _ => return true,
        };
        status.is_some_and(|s| command.accepts(s))
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        // a key may have written in the composer or left a draft; the loop compares and saves
        self.drafts_changed |= matches!(msg, Msg::Key(_) | Msg::NotSent { .. });
        let mut effects = self.apply(msg);
        effects.extend(self.follow_selection());
        // Read-only holds whatever path led here (a key, a command, a dialog): nothing that
        // changes a session or makes an agent act leaves the cockpit.
        if self.keymap.read_only() && effects.iter().any(Effect::acts) {
            effects.retain(|e| !e.acts());
            self.status = Some((READ_ONLY.to_string(), true));
        }
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

    /// Whether a transcript on screen has line counts still to make exact (after a resize).
    pub fn settling(&self) -> bool {
        [&self.transcript, &self.preview]
            .into_iter()
            .flatten()
            .any(Transcript::settling)
    }

    /// Makes line counts exact for at most `budget` each (see [`Transcript::settle`]); `true`
    /// once they all are.
    pub fn settle(&self, budget: std::time::Duration) -> bool {
        let mut settled = true;
        for t in [&self.transcript, &self.preview].into_iter().flatten() {
            settled &= t.settle(budget);
        }
        settled
    }

    fn apply(&mut self, msg: Msg) -> Vec<Effect> {
        self.dirty = true;
        match msg {
            Msg::Key(key) => self.on_key(key),
            Msg::Mouse(m) => self.on_mouse(m),
            Msg::Resize => vec![],
            Msg::Tick => {
                // A message stays on the status line for a few seconds.
                if let Some((_, _, since)) = &self.status_since
                    && since.elapsed() > std::time::Duration::from_secs(8)
                {
                    self.status = None;
                    self.status_since = None;
                }
                self.ticks += 1;
                // What the agent changed, read again every few seconds while it is on screen
                // and its session lives (a turn's changes come when the turn is summed up)
                match &self.panel {
                    Some(Panel::Changes(v))
                        if self.ticks.is_multiple_of(CHANGES_EVERY)
                            && self
                                .sessions
                                .get(v.session)
                                .is_some_and(|s| s.status != SessionStatus::Dead) =>
                    {
                        vec![Effect::LoadChanges { session: v.session }]
                    }
                    _ => vec![],
                }
            }
            Msg::Sessions(list) => {
                self.sessions.replace_all(list);
                self.loading = false;
                vec![]
            }
            Msg::SessionPage {
                sessions,
                first,
                last,
            } => {
                if first {
                    self.sessions.replace_all(sessions);
                } else {
                    self.sessions.add_older(sessions);
                }
                self.loading = !last;
                vec![]
            }
            Msg::Session(s) => {
                // The attached session's asks are read again when its count of them moved
                // (not on every change of the session: those come many times a turn).
                let reload = [self.transcript.as_ref(), self.preview.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|t| {
                        t.session == s.id && usize::try_from(s.waiting).ok() != Some(t.asks.len())
                    });
                let id = s.id;
                // What changed that a person should hear of, unless they look at it now.
                let looked_at = self.transcript.as_ref().is_some_and(|t| t.session == id)
                    || (self.preview_shown.get()
                        && self.sessions.selected().is_some_and(|x| x.id == id));
                let news = self
                    .sessions
                    .get(id)
                    .and_then(|before| super::notify::notice(before, &s))
                    .filter(|_| !looked_at);
                // the changes on screen are read again when a turn starts or ends
                let turned = matches!(&self.panel, Some(Panel::Changes(v)) if v.session == id)
                    && self.sessions.get(id).is_some_and(|b| b.status != s.status);
                self.sessions.upsert(*s);
                let mut effects = Vec::new();
                if reload {
                    effects.push(Effect::LoadAsks { session: id });
                }
                if turned {
                    effects.push(Effect::LoadChanges { session: id });
                }
                effects.extend(news.map(Effect::Notify));
                effects
            }
            Msg::Messages {
                session,
                messages,
                complete,
            } => {
                let shown = [self.transcript.as_mut(), self.preview.as_mut()];
                if let Some(t) = shown.into_iter().flatten().find(|t| t.session == session) {
                    t.merge(messages);
                    t.loaded |= complete;
                }
                vec![]
            }
            Msg::Delta(d) => {
                let shown = [self.transcript.as_mut(), self.preview.as_mut()];
                match shown.into_iter().flatten().find(|t| t.session == d.session) {
                    Some(t) => self.dirty = t.apply_delta(&d),
                    None => self.dirty = false,
                }
                vec![]
            }
            Msg::NotSent {
                session,
                text,
                error,
            } => {
                match self.transcript.as_mut().filter(|t| t.session == session) {
                    Some(t) if t.composer.is_none() => {
                        t.open_composer_with(&text);
                        self.status = Some((
                            format!("not sent: {error}; your message is back in the composer"),
                            true,
                        ));
                    }
                    _ => {
                        self.drafts.insert(session, text);
                        self.status = Some((
                            format!(
                                "not sent: {error}; your message is kept as a draft (attach, then i)"
                            ),
                            true,
                        ));
                    }
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
            Msg::Health(rows, pools) => {
                if let Some(Panel::Health(v)) = &mut self.panel {
                    v.replace(rows);
                    v.pools = pools;
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
                stream,
                lines,
                ended,
            } => {
                match &mut self.panel {
                    Some(Panel::Logs(v)) if v.stream == stream => {
                        v.push(lines);
                        if ended.is_some() {
                            v.ended = ended;
                        }
                    }
                    _ => self.dirty = false,
                }
                vec![]
            }
            Msg::Agents(agents, choices) => {
                self.agents = agents;
                self.choices = choices;
                self.dirty = false;
                vec![]
            }
            Msg::Budgets(budgets) => {
                self.budgets = budgets;
                vec![]
            }
            Msg::Connectivity(now) => {
                // Say why when something stops answering (the top bar only says DOWN).
                let before = self.connectivity.as_ref();
                for server in &now.servers {
                    use crate::deck::ServerLink;
                    let was = before
                        .and_then(|c| c.servers.iter().find(|s| s.name == server.name))
                        .map(|s| &s.link);
                    let name = server
                        .name
                        .as_ref()
                        .map_or_else(|| "the server".to_string(), |n| format!("server {n}"));
                    match (was, &server.link) {
                        (Some(ServerLink::Connected) | None, ServerLink::Reconnecting(why)) => {
                            self.status = Some((
                                format!("lost {name} ({why}); reconnecting by itself"),
                                true,
                            ));
                        }
                        (_, ServerLink::Refused(why)) if was != Some(&server.link) => {
                            self.status = Some((why.clone(), true));
                        }
                        (
                            Some(ServerLink::Reconnecting(_) | ServerLink::Refused(_)),
                            ServerLink::Connected,
                        ) => {
                            self.status = Some((format!("{name} answers again"), false));
                        }
                        _ => {}
                    }
                }
                for (name, was, is) in [
                    ("the store", before.map(|c| &c.store), &now.store),
                    ("the cluster", before.map(|c| &c.runtime), &now.runtime),
                    ("the gateway", before.map(|c| &c.gateway), &now.gateway),
                ] {
                    if let Err(e) = is
                        && was.is_none_or(Result::is_ok)
                    {
                        self.status = Some((format!("{name} does not answer: {e}"), true));
                    }
                }
                let now = Some(now);
                self.dirty = self.connectivity != now;
                self.connectivity = now;
                vec![]
            }
            Msg::Forked(fork) => {
                self.status = Some((
                    format!(
                        "forked at message #{}: {} (esc goes back to the list)",
                        fork.fork_seq.unwrap_or_default(),
                        fork.title
                    ),
                    false,
                ));
                let id = fork.id;
                self.sessions.upsert(*fork);
                self.go_to_transcript(id)
            }
            // The loop runs it; nothing changes here.
            Msg::Shell(_) => vec![],
            Msg::Asks { session, asks } => {
                match self.transcript.as_mut().filter(|t| t.session == session) {
                    Some(t) => t.set_asks(asks),
                    None => match self.preview.as_mut().filter(|p| p.session == session) {
                        Some(p) => p.set_asks(asks),
                        None => self.dirty = false,
                    },
                }
                vec![]
            }
            Msg::ReloadAsked => vec![Effect::Reload],
            Msg::Reloaded(reload) => {
                self.apply_reload(*reload);
                vec![]
            }
            Msg::Changes(session, turns) => {
                match &mut self.panel {
                    Some(Panel::Changes(v)) if v.session == session => v.set(turns),
                    _ => self.dirty = false,
                }
                vec![]
            }
            Msg::Diagnosis(d) => {
                match &mut self.panel {
                    Some(Panel::Diagnose(v)) if v.diagnosis.session.id == d.session.id => {
                        v.diagnosis = d;
                        v.looking = false;
                    }
                    _ => self.dirty = false,
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
        // Help scrolls; any other key closes it (quit still quits).
        if let Some(Dialog::Help(help)) = &mut self.dialog {
            let shown = help.shown.get();
            let delta = match action {
                Some(Action::Up) => -1,
                Some(Action::Down) => 1,
                Some(Action::PageUp) => -(shown.height.max(2) as isize - 1),
                Some(Action::PageDown) => shown.height.max(2) as isize - 1,
                _ => 0,
            };
            if delta != 0 {
                help.scroll = step(help.scroll, shown.max_top, delta).0;
                return vec![];
            }
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
        if self.keymap.read_only() && super::actions::def_of(action).is_some_and(|d| d.acts()) {
            self.status = Some((READ_ONLY.to_string(), true));
            return vec![];
        }
        // What is acted on from the list is the session under the cursor, from now on (not
        // one selected before a filter hid it); a new filter may still bring that one back.
        if self.panel.is_none() && self.transcript.is_none() && action != Action::Filter {
            self.sessions.pin();
        }
        // The screen shown first: its own actions are its to handle.
        let (screen, mut cx) = self.screen_mut();
        if let Some(effects) = screen.on_action(action, &mut cx) {
            return effects;
        }
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.dialog = Some(Dialog::Help(HelpView::default())),
            Action::Back => {
                if self.dialog.take().is_none() {
                    return self.go_back();
                }
            }
            Action::Preview => {
                self.preview_on = !self.preview_on;
                let said = if self.preview_on {
                    "preview on (it shows from 100 columns)"
                } else {
                    "preview off"
                };
                self.status = Some((said.into(), false));
            }
            Action::Health => {
                if !matches!(self.panel, Some(Panel::Health(_))) {
                    self.leave();
                    self.panel = Some(Panel::Health(HealthView::default()));
                }
                return vec![Effect::LoadHealth];
            }
            Action::Logs => {
                if let Some(s) = self.target() {
                    let (id, title) = (s.id, s.title.clone());
                    let stream = next_stream();
                    self.leave();
                    self.panel = Some(Panel::Logs(LogView::new(id, title, stream)));
                    return vec![Effect::FollowLogs {
                        session: id,
                        stream,
                        since: 0,
                    }];
                }
            }
            Action::Diagnose => {
                if let Some(s) = self.target() {
                    let (id, s) = (s.id, s.clone());
                    self.leave();
                    self.panel = Some(Panel::Diagnose(DiagnoseView::looking(s)));
                    return vec![Effect::Diagnose { session: id }];
                }
            }
            Action::Changes => {
                if let Some(s) = self.target() {
                    let (id, title) = (s.id, s.title.clone());
                    self.leave();
                    self.panel = Some(Panel::Changes(ChangesView::loading(id, title)));
                    return vec![Effect::LoadChanges { session: id }];
                }
            }
            Action::NextFile | Action::PreviousFile => {}
            Action::Command => {
                let mut area = TextArea::default();
                area.set_placeholder_text(
                    "sessions, sandboxes, logs, diagnose, agents, team NAME, sort KEY, reload, quit",
                );
                self.command = Some(area);
            }
            Action::Up => self.scroll(-1),
            Action::Down => self.scroll(1),
            Action::PageUp => self.scroll(-self.page()),
            Action::PageDown => self.scroll(self.page()),
            Action::Top => self.scroll(isize::MIN),
            Action::Attach => {
                if let Some(id) = self.target().map(|s| s.id) {
                    return self.go_to_transcript(id);
                }
            }
            Action::Filter => {
                let mut area = TextArea::default();
                area.insert_str(&self.sessions.filter().text);
                area.set_placeholder_text("words or key:value, e.g. agent:coder status:failed");
                self.dialog = Some(Dialog::Filter(Box::new(area)));
            }
            Action::Search => {
                let Some(current) = self.screen().search() else {
                    return vec![];
                };
                let mut area = TextArea::default();
                area.insert_str(current.unwrap_or_default());
                area.set_placeholder_text("text to find (smart case); enter keeps, esc clears");
                self.dialog = Some(Dialog::Search(Box::new(area)));
            }
            Action::NewSession => {
                let choices: Vec<AgentChoice> = if self.choices.is_empty() {
                    self.agents
                        .iter()
                        .map(|a| AgentChoice {
                            server: None,
                            agent: a.id.clone(),
                        })
                        .collect()
                } else {
                    self.choices.clone()
                };
                if choices.is_empty() {
                    self.status = Some(("no agents are configured".into(), true));
                } else {
                    self.dialog = Some(Dialog::NewSession(Box::new(NewSession::new(choices))));
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
            Action::Allow | Action::AllowAlways | Action::Reject => return self.on_ask(action),
            Action::Shell => {
                if let Some(s) = self.target() {
                    if s.status.is_terminal() {
                        self.status =
                            Some(("this session has ended: its sandbox is gone".into(), true));
                    } else {
                        return vec![Effect::Shell { session: s.id }];
                    }
                }
            }
            Action::Fork => {
                if let Some(t) = &self.transcript {
                    let last = t.last_seq();
                    if last < 1 {
                        self.status = Some(("nothing to fork yet: no messages".into(), true));
                    } else {
                        let mut input = TextArea::default();
                        input.insert_str(last.to_string());
                        self.dialog = Some(Dialog::Fork {
                            session: t.session,
                            input: Box::new(input),
                        });
                    }
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
                        match self.drafts.remove(&t.session) {
                            Some(draft) => t.open_composer_with(&draft),
                            None => t.open_composer(),
                        }
                    }
                }
            }
            // The screens' own, when not the shown screen's.
            Action::Bottom
            | Action::Follow
            | Action::Sort
            | Action::NextWaiting
            | Action::PreviousWaiting
            | Action::Since
            | Action::ToggleWrap
            | Action::ToggleTimestamps
            | Action::ToggleTools
            | Action::ToggleReasoning
            | Action::ToggleMarkdown
            | Action::SearchNext
            | Action::SearchPrevious => {}
        }
        vec![]
    }

    /// The oldest ask the attached session's agent waits on.
    fn waiting_ask(&self) -> Option<&Ask> {
        self.asking().and_then(|t| t.asks.first())
    }

    /// Whose asks `a`, `A` and `r` answer: the attached transcript's, else (on the list) the
    /// previewed session's.
    fn asking(&self) -> Option<&Transcript> {
        match (&self.transcript, &self.panel) {
            (Some(t), _) => Some(t),
            (None, None) => self.preview.as_ref().filter(|p| {
                self.preview_shown.get()
                    && self.sessions.selected().is_some_and(|s| s.id == p.session)
            }),
            (None, Some(_)) => None,
        }
    }

    /// `a`, `A`, `r` on what the agent asks: a permission is allowed at once (once or always),
    /// or rejected with a reason asked for first; a question is answered (or declined).
    fn on_ask(&mut self, action: Action) -> Vec<Effect> {
        let (Some(session), Some(ask)) = (
            self.asking().map(|t| t.session),
            self.waiting_ask().cloned(),
        ) else {
            self.status = Some(("the agent is not waiting for an answer".into(), true));
            return vec![];
        };
        let answer = |answer| {
            vec![Effect::Answer {
                session,
                ask: ask.id.clone(),
                answer,
            }]
        };
        let permission = |reply| Answer::Permission {
            reply,
            message: None,
        };
        match (ask.kind, action) {
            (AskKind::Permission, Action::Allow) => answer(permission(PermissionReply::Once)),
            (AskKind::Permission, Action::AllowAlways) => {
                answer(permission(PermissionReply::Always))
            }
            (AskKind::Question, Action::Reject) => answer(Answer::RejectQuestion),
            (AskKind::Question, Action::AllowAlways) => {
                self.status = Some(("a question is answered with a".into(), true));
                vec![]
            }
            (kind, _) => {
                let mut input = TextArea::default();
                input.set_placeholder_text(match kind {
                    AskKind::Permission => "why (the agent reads it); enter rejects, esc cancels",
                    AskKind::Question => "an option's number or your own answer; enter sends",
                });
                self.dialog = Some(Dialog::Reply {
                    session,
                    ask: Box::new(ask),
                    input: Box::new(input),
                    answers: Vec::new(),
                });
                vec![]
            }
        }
    }

    /// The wheel scrolls what is under it (three rows a notch); a click on a list row selects
    /// it. Nothing else: dialogs and text fields are for the keyboard.
    fn on_mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        if self.dialog.is_some() || self.command.is_some() {
            self.dirty = false;
            return vec![];
        }
        match m.kind {
            MouseEventKind::ScrollUp => self.scroll(-3),
            MouseEventKind::ScrollDown => self.scroll(3),
            MouseEventKind::Down(MouseButton::Left) => {
                let (screen, _) = self.screen_mut();
                if !screen.click(m.row) {
                    self.dirty = false;
                }
            }
            _ => self.dirty = false,
        }
        vec![]
    }

    /// Every unsent text: the drafts, and what the open composer holds.
    pub fn unsent(&self) -> HashMap<Uuid, String> {
        let mut all = self.drafts.clone();
        if let Some(t) = &self.transcript
            && let Some(area) = &t.composer
        {
            let text = text_of(area);
            if !text.trim().is_empty() {
                all.insert(t.session, text);
            }
        }
        all
    }

    /// Drafts saved by an earlier cockpit (each comes back with `i` on its session).
    pub fn restore_drafts(&mut self, drafts: HashMap<Uuid, String>) {
        for (session, text) in drafts {
            self.drafts.entry(session).or_insert(text);
        }
    }

    /// Keeps what the composer held when leaving a transcript, for the next `i` there.
    /// Takes what a reload gives the cockpit: the agents (for a new session), the keys, a
    /// read-only context or flag (a reload can make a cockpit read-only, never lift it: that
    /// takes a restart), and the theme. Says on the status line what applied and what needs a
    /// restart; keys that clash keep the old ones, and say why.
    fn apply_reload(&mut self, reload: Reload) {
        let Reload {
            report,
            agents,
            choices,
            tui,
            theme,
        } = reload;
        self.agents = agents;
        self.choices = choices;
        let mut said = report.summary();
        let mut error = !report.needs_restart.is_empty();
        let read_only = self.keymap.read_only() || tui.read_only_on(self.context.as_deref());
        match Keymap::with_keys(read_only, &tui.keys) {
            Ok(keymap) => self.keymap = keymap,
            Err(e) => {
                said.push_str(&format!("; the keys stay as they were: {e}"));
                error = true;
            }
        }
        match theme.filter(|_| !self.theme_fixed) {
            Some(Ok(theme)) => self.theme = theme,
            Some(Err(e)) => {
                said.push_str(&format!("; the theme stays as it was: {e}"));
                error = true;
            }
            None => {}
        }
        self.status = Some((said, error));
    }

    pub(super) fn keep_draft(&mut self, t: Transcript) {
        if let Some(area) = &t.composer {
            let text = text_of(area);
            if !text.trim().is_empty() {
                self.drafts.insert(t.session, text);
            }
        }
    }

    /// Rows in a page of what is on screen (one kept from the page before).
    fn page(&self) -> isize {
        self.screen().page().saturating_sub(1).max(1) as isize
    }

    /// Moves what is on screen by `delta` rows (or lines).
    fn scroll(&mut self, delta: isize) {
        self.screen_mut().0.scroll(delta);
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
                    let text = text_of(area);
                    t.composer = None;
                    if !text.trim().is_empty() {
                        self.drafts.insert(t.session, text);
                        self.status = Some(("draft kept: i goes on with it".into(), false));
                    }
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
            Some(Dialog::Search(area)) => Some(match key.code {
                KeyCode::Esc => {
                    self.dialog = None;
                    self.set_search("");
                    vec![]
                }
                KeyCode::Enter => {
                    self.dialog = None;
                    vec![]
                }
                _ => {
                    if area.input(key) {
                        let text = text_of(area);
                        self.set_search(&text);
                    }
                    vec![]
                }
            }),
            Some(Dialog::Fork { session, input }) => Some(match key.code {
                KeyCode::Esc => {
                    self.dialog = None;
                    vec![]
                }
                KeyCode::Enter => {
                    match text_of(input).trim().trim_start_matches('#').parse::<i64>() {
                        Ok(at_seq) => {
                            let session = *session;
                            self.dialog = None;
                            vec![Effect::Fork { session, at_seq }]
                        }
                        Err(_) => {
                            self.status =
                                Some(("fork at which message? type its number (#N)".into(), true));
                            vec![]
                        }
                    }
                }
                _ => {
                    input.input(key);
                    vec![]
                }
            }),
            Some(Dialog::Reply { input, .. }) => Some(match key.code {
                KeyCode::Esc => {
                    self.dialog = None;
                    self.status = Some(("not answered".into(), false));
                    vec![]
                }
                KeyCode::Enter => self.submit_reply(),
                _ => {
                    input.input(key);
                    vec![]
                }
            }),
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
                    form.focus(form.field + 1);
                    vec![]
                }
                KeyCode::BackTab => {
                    form.focus(form.field + 2);
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

    /// Looks for `text` as it is typed: the transcript moves to the first match from the
    /// top of the screen; the log shows only the lines that hold it. Empty stops looking.
    fn set_search(&mut self, text: &str) {
        let text = text.trim_end_matches('\n');
        let (screen, mut cx) = self.screen_mut();
        screen.set_search(text, &mut cx);
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
                self.go_home();
                vec![]
            }
            "sandboxes" | "sb" | "health" | "pods" => self.on_action(Action::Health),
            "logs" | "log" => self.on_action(Action::Logs),
            "diagnose" | "diag" => self.on_action(Action::Diagnose),
            "new" => self.on_action(Action::NewSession),
            "help" => self.on_action(Action::Help),
            "reload" => {
                self.status = Some(("reading the configuration again…".into(), false));
                vec![Effect::Reload]
            }
            "agents" | "agent" => {
                let names: Vec<String> = self
                    .agents
                    .iter()
                    .map(|a| format!("{} ({})", a.id, a.model))
                    .collect();
                self.status = Some((format!("agents: {}", names.join(", ")), false));
                vec![]
            }
            "sort" => {
                let names: Vec<&str> = SortKey::ALL.iter().map(|k| k.name()).collect();
                match rest.first().map(|k| SortKey::parse(k)) {
                    Some(Some(key)) => {
                        self.go_home();
                        self.sessions.set_sort(key);
                        self.status = Some((format!("sorted by {}", key.name()), false));
                    }
                    _ => {
                        self.status =
                            Some((format!("sort by what? :sort {}", names.join("|")), true))
                    }
                }
                vec![]
            }
            "rename" => {
                let title = rest.join(" ");
                match self.target().map(|s| s.id) {
                    Some(_) if title.is_empty() => {
                        self.status = Some(("rename to what? :rename NEW TITLE".into(), true));
                        vec![]
                    }
                    Some(session) => vec![Effect::Rename { session, title }],
                    None => {
                        self.status = Some(("no session to rename".into(), true));
                        vec![]
                    }
                }
            }
            "budget" => {
                let usd = match rest.first().map(|w| w.trim_start_matches('$')) {
                    Some("none") => Ok(None),
                    Some(amount) => amount
                        .parse::<f64>()
                        .ok()
                        .filter(|u| u.is_finite() && *u > 0.0)
                        .map(Some)
                        .ok_or(()),
                    None => Err(()),
                };
                match (self.target().map(|s| s.id), usd) {
                    (Some(session), Ok(usd)) => vec![Effect::Budget { session, usd }],
                    (None, _) => {
                        self.status = Some(("no session to give a budget".into(), true));
                        vec![]
                    }
                    (_, Err(())) => {
                        self.status =
                            Some(("a budget in USD? :budget 25 (or :budget none)".into(), true));
                        vec![]
                    }
                }
            }
            "team" => {
                self.go_home();
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
                        "unknown command :{other}; try :sessions :sandboxes :logs :diagnose :agents :team NAME :sort KEY :rename TITLE :budget USD :reload :quit"
                    ),
                    true,
                ));
                vec![]
            }
        }
    }

    /// Enter in the reply dialog: a permission is rejected with the reason typed; a question
    /// is answered with the option whose number was typed, or with the text as written, one part
    /// after another when it has several (sent once every part has its answer).
    fn submit_reply(&mut self) -> Vec<Effect> {
        let Some(Dialog::Reply {
            session,
            ask,
            input,
            mut answers,
        }) = self.dialog.take()
        else {
            return vec![];
        };
        let text = text_of(&input).trim().to_string();
        let answer = match ask.kind {
            AskKind::Permission => Answer::Permission {
                reply: PermissionReply::Reject,
                message: Some(text).filter(|t| !t.is_empty()),
            },
            AskKind::Question => {
                let parts = ask.detail["questions"]
                    .as_array()
                    .map_or(0, Vec::len)
                    .max(1);
                let options = &ask.detail["questions"][answers.len()]["options"];
                let label = text
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| options[i]["label"].as_str())
                    .map(str::to_string)
                    .unwrap_or(text);
                if label.is_empty() {
                    self.status = Some((
                        "nothing to answer with: type a number or words".into(),
                        true,
                    ));
                    self.dialog = Some(Dialog::Reply {
                        session,
                        ask,
                        input,
                        answers,
                    });
                    return vec![];
                }
                answers.push(vec![label]);
                if answers.len() < parts {
                    self.status =
                        Some((format!("part {} of {parts} answered", answers.len()), false));
                    let mut input = TextArea::default();
                    input
                        .set_placeholder_text("an option's number or your own answer; enter sends");
                    self.dialog = Some(Dialog::Reply {
                        session,
                        ask,
                        input: Box::new(input),
                        answers,
                    });
                    return vec![];
                }
                Answer::Question { answers }
            }
        };
        vec![Effect::Answer {
            session,
            ask: ask.id.clone(),
            answer,
        }]
    }

    /// Keeps the preview on the selected session: a new selection is read (its last messages,
    /// and what it asks when it waits); none while a transcript is attached or the preview is
    /// off.
    fn follow_selection(&mut self) -> Vec<Effect> {
        let want = match (self.preview_on, &self.transcript) {
            (true, None) => self.sessions.selected(),
            _ => None,
        };
        let Some(s) = want else {
            self.preview = None;
            return vec![];
        };
        if self.preview.as_ref().is_some_and(|p| p.session == s.id) {
            return vec![];
        }
        let (id, last, waiting) = (s.id, s.last_message_seq, s.waiting);
        self.preview = Some(Transcript::new(id));
        let mut effects = vec![Effect::LoadMessages {
            session: id,
            after: (last - PREVIEW_MESSAGES).max(0),
        }];
        if waiting > 0 {
            effects.push(Effect::LoadAsks { session: id });
        }
        effects
    }

    fn submit_new(&mut self) -> Vec<Effect> {
        let Some(Dialog::NewSession(form)) = self.dialog.take() else {
            return vec![];
        };
        let Some(choice) = form.agents.get(form.agent).cloned() else {
            return vec![];
        };
        vec![Effect::Create {
            server: choice.server,
            agent: choice.agent,
            title: text_of(&form.title),
            prompt: text_of(&form.prompt),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::sessions::tests::session;

    /// An app with the preview off (the tests of the preview turn it on): its reads would
    /// be among every update's effects.
    fn app() -> App {
        let mut a = App::new(
            Keymap::new(false),
            Theme::mono(),
            vec![],
            "sqlite://x".into(),
            "local".into(),
        );
        a.preview_on = false;
        a
    }

    fn key(c: char) -> Msg {
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    /// `:reload` (or SIGHUP) reads the configuration again; what it gives applies to the
    /// cockpit and the status line says what applied and what needs a restart. Keys that clash
    /// keep the old ones; a reload can make a cockpit read-only but never lifts it.
    #[test]
    fn a_reload_applies_and_says_what_needs_a_restart() {
        let mut a = app();
        a.update(key(':'));
        for c in "reload".chars() {
            a.update(key(c));
        }
        let effects = a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
        assert_eq!(effects, [Effect::Reload]);
        assert_eq!(a.update(Msg::ReloadAsked), [Effect::Reload]);

        let agent = |id: &str| AgentSpec {
            id: id.into(),
            ..crate::config::load_text("", "x.toml", crate::config::Dirs::discover().unwrap())
                .unwrap()
                .agents["opencode"]
                .clone()
        };
        let reload = |keys: Vec<(String, Vec<String>, String)>, read_only: bool| {
            Msg::Reloaded(Box::new(Reload {
                report: crate::core::Reloaded {
                    applied: vec!["agent reviewer added".into()],
                    needs_restart: vec!["[worker]".into()],
                },
                agents: vec![agent("reviewer")],
                choices: Vec::new(),
                tui: crate::config::TuiConfig {
                    keys,
                    read_only,
                    ..Default::default()
                },
                theme: None,
            }))
        };
        a.update(reload(
            vec![("restart".into(), vec!["F".into()], "x:1:1".into())],
            false,
        ));
        assert_eq!(
            a.agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["reviewer"]
        );
        assert_eq!(a.keymap.key_for(Action::Restart), Some("F"));
        let (said, error) = a.status.clone().unwrap_or_default();
        assert!(said.contains("agent reviewer added"), "{said}");
        assert!(
            said.contains("needs a restart to apply: [worker]"),
            "{said}"
        );
        assert!(error, "what does not apply is said as a warning");
        // Keys that clash: the old ones stay, and the reason is said.
        a.update(reload(
            vec![("restart".into(), vec!["q".into()], "x:2:1".into())],
            false,
        ));
        assert_eq!(a.keymap.key_for(Action::Restart), Some("F"));
        let (said, _) = a.status.clone().unwrap_or_default();
        assert!(said.contains("the keys stay as they were"), "{said}");
        // Read-only on, then off in the file: it stays on.
        a.update(reload(vec![], true));
        assert!(a.keymap.read_only());
        a.update(reload(vec![], false));
        assert!(a.keymap.read_only(), "a reload never lifts read-only");
    }

    #[test]
    fn the_hint_bar_offers_what_can_be_done_to_the_session() {
        let hints = |a: &App| -> Vec<&'static str> {
            a.keymap
                .hints(a.scope(), |x| a.offers(x))
                .into_iter()
                .map(|(_, h)| h)
                .collect()
        };
        let mut a = app();
        let none = hints(&a);
        assert!(none.contains(&"new") && !none.contains(&"attach") && !none.contains(&"end"));
        for (status, offered, not) in [
            (
                SessionStatus::Idle,
                &["attach", "suspend", "restart", "end"][..],
                &["resume"][..],
            ),
            (
                SessionStatus::Suspended,
                &["resume", "restart", "end"],
                &["suspend"],
            ),
            (
                SessionStatus::Failed,
                &["restart", "end", "diagnose"],
                &["suspend", "resume"],
            ),
            (
                SessionStatus::Dead,
                &["attach", "logs"],
                &["restart", "end", "suspend", "resume"],
            ),
        ] {
            a.sessions.show_ended(true);
            a.update(Msg::Sessions(vec![session(1, "coder", status)]));
            let shown = hints(&a);
            for h in offered {
                assert!(shown.contains(h), "{status:?}: {h} missing from {shown:?}");
            }
            for h in not {
                assert!(!shown.contains(h), "{status:?}: {h} offered in {shown:?}");
            }
        }
        // Abort only while the agent is busy, in the transcript.
        a.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
        assert_eq!(a.scope(), Scope::Transcript);
        assert!(!hints(&a).contains(&"abort"));
        a.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Busy,
        )]));
        let busy = hints(&a);
        let at = |h: &str| busy.iter().position(|x| *x == h);
        // The screen's own actions first: a narrow hint bar cuts global ones, not abort.
        assert!(
            at("abort").is_some() && at("abort") < at("quit"),
            "{busy:?}"
        );
        assert!(at("quit") < at("restart"), "{busy:?}");
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
            vec![
                Effect::LoadMessages {
                    session: id,
                    after: 0
                },
                Effect::LoadAsks { session: id }
            ]
        );
        a.update(key('i'));
        for c in "hi there".chars() {
            a.update(key(c));
        }
        let fx = a.update(ctrl('s'));
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
        // the "q" typed is kept as a draft (saved by the loop), so quitting loses nothing
        assert_eq!(a.unsent().get(&id).map(String::as_str), Some("q"));
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

    /// A read-only cockpit acts on nothing whatever the way in: every acting action of the
    /// registry (sent as the action itself, as if a key or a command had led to it), `:new`
    /// typed in the command line, and a composer left open with text in it.
    #[test]
    fn read_only_acts_on_nothing_whatever_the_way_in() {
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
            SessionStatus::Busy,
        )]));
        for def in crate::tui::actions::REGISTRY.iter().filter(|d| d.acts()) {
            ro.status = None;
            let effects = ro.on_action(def.action);
            assert!(effects.iter().all(|e| !e.acts()), "{}: {effects:?}", def.id);
            assert!(ro.dialog.is_none(), "{}: no dialog to act from", def.id);
            assert_eq!(
                ro.status.as_ref().map(|(t, _)| t.as_str()),
                Some(READ_ONLY),
                "{} says why",
                def.id
            );
        }
        ro.status = None;
        assert_eq!(ro.run_command(":new"), vec![]);
        assert_eq!(ro.status.as_ref().map(|(t, _)| t.as_str()), Some(READ_ONLY));
        // Whatever state the app is in, no acting effect leaves it: a composer open with text
        // in it sends in a writable cockpit, and nothing once the cockpit is read-only.
        let composing = |read_only: bool| {
            let mut a = app();
            a.update(Msg::Sessions(vec![session(
                1,
                "coder",
                SessionStatus::Idle,
            )]));
            a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
            a.update(key('i'));
            a.update(key('h'));
            a.update(key('i'));
            if read_only {
                a.keymap = Keymap::new(true);
            }
            let sent = a.update(ctrl('s'));
            (sent, a.status.clone())
        };
        let (sent, _) = composing(false);
        assert!(
            sent.iter().any(Effect::acts),
            "the writable cockpit sends: {sent:?}"
        );
        let (sent, status) = composing(true);
        assert_eq!(sent, vec![], "nothing sent once read-only");
        assert_eq!(status.as_ref().map(|(t, _)| t.as_str()), Some(READ_ONLY));
    }

    /// Sessions of one runtime: no RUNTIME column. Of two (the local and the Kubernetes
    /// cockpit's on one store): each row says which, and the column goes when they are one
    /// runtime's again.
    #[test]
    fn the_list_says_the_runtime_when_there_are_several() {
        let mut a = app();
        let local = session(1, "coder", SessionStatus::Idle);
        let mut k8s = session(2, "coder", SessionStatus::Idle);
        k8s.runtime = Some("kubernetes".into());
        a.update(Msg::Sessions(vec![local.clone()]));
        assert!(!frame(&a).contains("RUNTIME"), "{}", frame(&a));
        a.update(Msg::Session(Box::new(k8s.clone())));
        let screen = frame(&a);
        assert!(screen.contains("RUNTIME"), "{screen}");
        assert!(
            screen.contains("kubernetes") && screen.contains("local"),
            "{screen}"
        );
        a.sessions.set_filter("runtime:kube");
        assert_eq!(a.sessions.len(), 1, "runtime: filters");
        a.sessions.set_filter("");
        k8s.runtime = Some("local".into());
        a.update(Msg::Session(Box::new(k8s)));
        assert!(!frame(&a).contains("RUNTIME"), "{}", frame(&a));
    }

    /// A cockpit over several servers: a SERVER column first, `server:NAME` in the filter, and
    /// a new session is started with an agent of a chosen server, on that server.
    #[test]
    fn the_list_says_the_server_and_a_new_session_goes_to_the_one_chosen() {
        let mut a = app();
        let mut eu = session(1, "coder", SessionStatus::Idle);
        eu.server = Some("eu-west".into());
        let mut us = session(2, "coder", SessionStatus::Failed);
        us.server = Some("us".into());
        a.update(Msg::Sessions(vec![eu.clone()]));
        let screen = frame(&a);
        assert!(screen.contains("SERVER"), "{screen}");
        a.update(Msg::Session(Box::new(us)));
        let screen = frame(&a);
        let row = screen
            .lines()
            .find(|l| l.contains("failed"))
            .unwrap_or_default();
        assert!(row.contains("us"), "each row says its server: {screen}");
        a.sessions.set_filter("server:eu");
        assert_eq!(a.sessions.len(), 1, "server: filters");
        assert_eq!(a.sessions.selected().map(|s| s.id), Some(eu.id));
        a.sessions.set_filter("");

        a.choices = ["eu-west", "us"]
            .map(|server| AgentChoice {
                server: Some(server.into()),
                agent: "coder".into(),
            })
            .into();
        a.update(press(KeyCode::Char('n')));
        let screen = frame(&a);
        assert!(screen.contains("< coder on eu-west >"), "{screen}");
        a.update(press(KeyCode::Down));
        assert!(frame(&a).contains("< coder on us >"));
        let effects = a.update(ctrl('s'));
        assert!(
            effects.iter().any(|e| matches!(e,
                Effect::Create { server: Some(s), agent, .. } if s == "us" && agent == "coder")),
            "{effects:?}"
        );
    }

    fn ctrl(c: char) -> Msg {
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
    }

    fn press(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn frame(a: &App) -> String {
        frame_of(a, 80, 24)
    }

    fn frame_of(a: &App, width: u16, height: u16) -> String {
        let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))
            .unwrap_or_else(|e| panic!("{e}"));
        term.draw(|f| crate::tui::views::render(f, a, chrono::Utc::now()))
            .unwrap_or_else(|e| panic!("{e}"));
        term.backend().to_string()
    }

    fn message(session: Uuid, seq: i64, text: &str) -> Message {
        Message {
            id: Uuid::from_u128(1000 + seq as u128),
            session_id: session,
            seq,
            role: crate::model::MessageRole::Assistant,
            status: crate::model::MessageStatus::Complete,
            parts: vec![crate::model::Part::text(text)],
            error: None,
            harness_message_id: None,
            usage: None,
            diffs: Vec::new(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    /// The preview follows the selection: a newly selected session's last messages are read
    /// (and what it asks, when it waits); its messages and streamed text go to the preview;
    /// attaching leaves it, `p` turns it off and on.
    #[test]
    fn the_preview_follows_the_selection() {
        let mut a = app();
        a.preview_on = true;
        let mut busy = session(1, "coder", SessionStatus::Busy);
        busy.last_message_seq = 50;
        let mut waiting = session(2, "coder", SessionStatus::Idle);
        waiting.waiting = 1;
        waiting.last_message_seq = 3;
        // Newest first: the waiting session (2) is selected first.
        let effects = a.update(Msg::Sessions(vec![busy.clone(), waiting.clone()]));
        assert_eq!(
            effects,
            vec![
                Effect::LoadMessages {
                    session: waiting.id,
                    after: 0
                },
                Effect::LoadAsks {
                    session: waiting.id
                }
            ]
        );
        let effects = a.update(key('j'));
        assert_eq!(
            effects,
            vec![Effect::LoadMessages {
                session: busy.id,
                after: 50 - PREVIEW_MESSAGES
            }],
            "only its last messages"
        );
        assert_eq!(a.update(Msg::Tick), vec![], "read once per selection");
        a.update(Msg::Messages {
            session: busy.id,
            messages: vec![message(busy.id, 49, "building the project")],
            complete: true,
        });
        a.update(Msg::Delta(crate::core::ingest::LiveDelta {
            session: busy.id,
            seq: 49,
            part: 0,
            text: " and running the tests".into(),
        }));
        let preview = a.preview.as_ref().map(|p| (p.session, p.messages().len()));
        assert_eq!(preview, Some((busy.id, 1)));
        let text = a.preview.as_ref().unwrap().messages()[0].text();
        assert_eq!(text, "building the project and running the tests");
        a.update(press(KeyCode::Enter));
        assert!(a.preview.is_none(), "attached: no preview");
        a.update(press(KeyCode::Esc));
        assert!(a.preview.is_some(), "back on the list: the preview again");
        a.update(key('p'));
        assert!(!a.preview_on && a.preview.is_none());
        let effects = a.update(key('p'));
        assert!(a.preview_on);
        assert!(
            matches!(effects.as_slice(), [Effect::LoadMessages { session, .. }] if *session == busy.id),
            "{effects:?}"
        );
    }

    /// The inbox: `w` goes to the next session that waits for a person (round the list), `W`
    /// to the one before; what it asks is answered from the list (the preview has read it),
    /// without attaching.
    #[test]
    fn what_waits_is_reached_and_answered_from_the_list() {
        let mut a = app();
        a.preview_on = true;
        let mut sessions: Vec<Session> = (1..=6)
            .map(|i| session(i, "coder", SessionStatus::Idle))
            .collect();
        sessions[1].waiting = 1; // session 2
        sessions[4].waiting = 1; // session 5
        a.update(Msg::Sessions(sessions));
        assert!(a.offers(Action::NextWaiting));
        // Newest first: 6 is selected; the next waiting ones are 5, then 2, then 5 again.
        let at = |a: &App| a.sessions.selected().map(|s| s.id.as_u128());
        a.update(key('w'));
        assert_eq!(at(&a), Some(5));
        a.update(key('w'));
        assert_eq!(at(&a), Some(2));
        a.update(key('w'));
        assert_eq!(at(&a), Some(5));
        a.update(key('W'));
        assert_eq!(at(&a), Some(2));
        assert!(!a.offers(Action::Allow), "its asks are not read yet");
        frame(&a);
        let id = Uuid::from_u128(2);
        a.update(Msg::Asks {
            session: id,
            asks: vec![an_ask(id, "per_1", AskKind::Permission)],
        });
        // Too narrow for the preview: what it asks is not on screen, and is not answered here.
        frame(&a);
        assert!(!a.offers(Action::Allow), "not answered unseen");
        let screen = frame_of(&a, 120, 30);
        assert!(
            screen.contains("rm -rf build"),
            "what it asks, in the preview: {screen}"
        );
        assert!(a.offers(Action::Allow));
        assert_eq!(
            a.update(key('a')),
            vec![Effect::Answer {
                session: id,
                ask: "per_1".into(),
                answer: Answer::Permission {
                    reply: PermissionReply::Once,
                    message: None,
                },
            }]
        );
        assert!(a.transcript.is_none(), "answered without attaching");
        // Nothing waits: w says so.
        let mut b = app();
        b.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        assert!(!b.offers(Action::NextWaiting));
    }

    /// A session that starts waiting, fails or finishes its turn is told of (the loop rings),
    /// unless it is what the person looks at: its transcript, or its preview on screen.
    #[test]
    fn news_of_a_session_not_looked_at_is_told() {
        let mut a = app();
        let mut one = session(1, "coder", SessionStatus::Busy);
        let two = session(2, "coder", SessionStatus::Idle);
        a.update(Msg::Sessions(vec![one.clone(), two]));
        // Newest first: 2 is selected (no preview on this narrow screen anyway).
        one.status = SessionStatus::Idle;
        let effects = a.update(Msg::Session(Box::new(one.clone())));
        let told: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(n) => Some((n.session, n.event)),
                _ => None,
            })
            .collect();
        assert_eq!(told, vec![(one.id, crate::model::NoticeKind::Done)]);
        // Looked at (attached): nothing.
        a.sessions.select(one.id);
        a.update(press(KeyCode::Enter));
        one.waiting = 1;
        let effects = a.update(Msg::Session(Box::new(one)));
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Notify(_))),
            "{effects:?}"
        );
    }

    /// An app attached to a session whose transcript is `texts`, one message each, drawn once.
    fn attached(texts: &[String]) -> (App, Uuid) {
        let mut a = app();
        a.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        a.update(press(KeyCode::Enter));
        let id = Uuid::from_u128(1);
        let messages = texts
            .iter()
            .enumerate()
            .map(|(i, t)| message(id, i as i64 + 1, t))
            .collect();
        a.update(Msg::Messages {
            session: id,
            messages,
            complete: true,
        });
        frame(&a);
        (a, id)
    }

    fn an_ask(session: Uuid, id: &str, kind: AskKind) -> Ask {
        let detail = match kind {
            AskKind::Permission => serde_json::json!({
                "permission": "bash",
                "patterns": ["rm -rf build\u{1b}[2J"],
                "metadata": {"command": "rm -rf build"},
                "tool": {"messageID": "msg_1", "callID": "call_1"}
            }),
            AskKind::Question => serde_json::json!({"questions": [{
                "question": "Which region?",
                "header": "Region",
                "options": [{"label": "eu-west", "description": ""}, {"label": "us-east", "description": ""}]
            }]}),
        };
        Ask {
            session_id: session,
            id: id.to_string(),
            kind,
            status: crate::model::AskStatus::Pending,
            title: if kind == AskKind::Permission {
                "bash".into()
            } else {
                "Region".into()
            },
            detail,
            asked_at: chrono::Utc::now(),
            answer: None,
            message: None,
            answered_by: None,
            answered_at: None,
        }
    }

    /// What the agent asks shows under its transcript (sanitised) and in the list; `a` allows
    /// once, `A` always, `r` asks why and rejects with the reason; a question is answered by
    /// an option's number; read-only has none of it.
    #[test]
    fn the_agent_asks_and_the_operator_answers() {
        let (mut a, id) = attached(&["run the cleanup".to_string()]);
        // The agent's turn: a bash call, which the ask below is about.
        let mut turn = message(id, 2, "");
        turn.role = crate::model::MessageRole::Assistant;
        turn.parts = vec![crate::model::Part::Tool {
            call_id: "call_1".into(),
            tool: "bash".into(),
            status: crate::model::ToolStatus::Running,
            input: serde_json::json!({"command": "rm -rf build"}),
            output: None,
            error: None,
            started_at: None,
            ended_at: None,
        }];
        a.update(Msg::Messages {
            session: id,
            messages: vec![turn],
            complete: true,
        });
        assert!(frame(&a).contains("[bash running]"));
        let mut waiting = session(1, "coder", SessionStatus::Busy);
        waiting.waiting = 1;
        // Its count of asks moved: they are read again (and only then).
        assert_eq!(
            a.update(Msg::Session(Box::new(waiting.clone()))),
            vec![Effect::LoadAsks { session: id }]
        );
        assert!(
            !a.offers(Action::Allow),
            "nothing to answer before the asks arrive"
        );
        a.update(Msg::Asks {
            session: id,
            asks: vec![an_ask(id, "per_1", AskKind::Permission)],
        });
        assert!(a.offers(Action::Allow) && a.offers(Action::AllowAlways));
        assert_eq!(a.update(Msg::Session(Box::new(waiting))), vec![]);
        let screen = frame(&a);
        assert!(
            screen.contains("bash wants to run: rm -rf build"),
            "{screen}"
        );
        assert!(screen.contains("[bash waits for you]"), "{screen}");
        assert!(screen.contains("a allow once"), "{screen}");
        assert!(screen.contains("1 waiting for you?"), "{screen}");
        assert!(!screen.contains('\u{1b}'));

        let once = Effect::Answer {
            session: id,
            ask: "per_1".into(),
            answer: Answer::Permission {
                reply: PermissionReply::Once,
                message: None,
            },
        };
        assert_eq!(a.update(key('a')), vec![once]);
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('A'),
            KeyModifiers::SHIFT,
        )));
        assert!(a.dialog.is_none());
        assert_eq!(a.update(key('r')), vec![]);
        assert!(matches!(a.dialog, Some(Dialog::Reply { .. })));
        assert!(frame(&a).contains("Reject (why?)"));
        for c in "not on prod".chars() {
            a.update(key(c));
        }
        assert_eq!(
            a.update(press(KeyCode::Enter)),
            vec![Effect::Answer {
                session: id,
                ask: "per_1".into(),
                answer: Answer::Permission {
                    reply: PermissionReply::Reject,
                    message: Some("not on prod".into()),
                },
            }]
        );

        // A question: its options are numbered; a number answers with that option's label.
        a.update(Msg::Asks {
            session: id,
            asks: vec![an_ask(id, "que_1", AskKind::Question)],
        });
        assert!(!a.offers(Action::AllowAlways));
        let screen = frame(&a);
        assert!(screen.contains("1 eu-west · 2 us-east"), "{screen}");
        a.update(key('a'));
        a.update(key('2'));
        assert_eq!(
            a.update(press(KeyCode::Enter)),
            vec![Effect::Answer {
                session: id,
                ask: "que_1".into(),
                answer: Answer::Question {
                    answers: vec![vec!["us-east".into()]],
                },
            }]
        );
        // A question of two parts: answered one after the other, sent once both are.
        let mut two = an_ask(id, "que_2", AskKind::Question);
        two.detail["questions"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "question": "How many replicas?", "header": "Replicas",
                "options": [{"label": "1", "description": ""}, {"label": "3", "description": ""}]
            }));
        a.update(Msg::Asks {
            session: id,
            asks: vec![two],
        });
        a.update(key('a'));
        assert!(frame(&a).contains("Answer 1 of 2: Region"));
        a.update(key('1'));
        assert_eq!(a.update(press(KeyCode::Enter)), vec![], "one part of two");
        let screen = frame(&a);
        assert!(screen.contains("Answer 2 of 2: Replicas"), "{screen}");
        for c in "5 please".chars() {
            a.update(key(c));
        }
        assert_eq!(
            a.update(press(KeyCode::Enter)),
            vec![Effect::Answer {
                session: id,
                ask: "que_2".into(),
                answer: Answer::Question {
                    answers: vec![vec!["eu-west".into()], vec!["5 please".into()]],
                },
            }]
        );
        a.update(Msg::Asks {
            session: id,
            asks: vec![],
        });
        assert!(!a.offers(Action::Reject));
        assert_eq!(a.update(key('a')), vec![]);
        let screen = frame(&a);
        assert!(
            screen.contains("[bash running]"),
            "answered: the call is drawn as it is again:\n{screen}"
        );

        // Read-only: no answering.
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
            SessionStatus::Busy,
        )]));
        ro.update(press(KeyCode::Enter));
        ro.update(Msg::Asks {
            session: id,
            asks: vec![an_ask(id, "per_1", AskKind::Permission)],
        });
        assert_eq!(ro.update(key('a')), vec![]);
        assert_eq!(ro.update(key('r')), vec![]);
        assert!(ro.dialog.is_none());
    }

    /// `!` asks the loop for a shell in the selected session's sandbox; not for an ended
    /// session, and not in read-only mode.
    #[test]
    fn a_shell_for_a_session_that_has_a_sandbox() {
        let mut a = app();
        a.sessions.show_ended(true);
        a.update(Msg::Sessions(vec![
            session(1, "coder", SessionStatus::Idle),
            session(2, "coder", SessionStatus::Dead),
        ]));
        // Newest first: the ended session (2) is the first row.
        a.sessions.select_index(0);
        assert_eq!(
            a.sessions.selected().map(|s| s.status),
            Some(SessionStatus::Dead)
        );
        assert!(!a.offers(Action::Shell));
        assert_eq!(a.update(key('!')), vec![]);
        a.sessions.select_index(1);
        assert!(a.offers(Action::Shell));
        let id = a.sessions.selected().map(|s| s.id).unwrap();
        assert_eq!(a.update(key('!')), vec![Effect::Shell { session: id }]);
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
        assert_eq!(ro.update(key('!')), vec![]);
    }

    /// `f` asks at which message (the last one offered), Enter forks there; the fork is
    /// attached when it is made.
    #[test]
    fn fork_at_a_message() {
        let (mut a, id) = attached(&["one".to_string(), "two".to_string(), "three".to_string()]);
        assert_eq!(a.update(key('f')), vec![]);
        assert!(matches!(a.dialog, Some(Dialog::Fork { .. })));
        assert!(frame(&a).contains("Fork at message #"));
        a.update(press(KeyCode::Backspace));
        a.update(key('x'));
        assert_eq!(a.update(press(KeyCode::Enter)), vec![]);
        assert!(
            a.status
                .as_ref()
                .is_some_and(|(t, e)| *e && t.contains("which message"))
        );
        a.update(press(KeyCode::Backspace));
        a.update(key('2'));
        assert_eq!(
            a.update(press(KeyCode::Enter)),
            vec![Effect::Fork {
                session: id,
                at_seq: 2
            }]
        );
        let mut fork = session(9, "coder", SessionStatus::Creating);
        fork.parent_id = Some(id);
        fork.fork_seq = Some(2);
        let fx = a.update(Msg::Forked(Box::new(fork)));
        assert_eq!(transcript(&a).session, Uuid::from_u128(9));
        assert!(fx.contains(&Effect::LoadMessages {
            session: Uuid::from_u128(9),
            after: 0
        }));
        assert!(frame(&a).contains("forked from"), "{}", frame(&a));
    }

    fn transcript(a: &App) -> &Transcript {
        a.transcript.as_ref().unwrap_or_else(|| panic!("attached"))
    }

    #[test]
    fn scrolling_up_stops_following_and_coming_back_down_resumes_it() {
        let texts: Vec<String> = (0..60).map(|i| format!("message {i}")).collect();
        let (mut a, _) = attached(&texts);
        let shown = transcript(&a).shown().unwrap_or_else(|| panic!("drawn"));
        let max_top = shown.total - shown.height;
        assert!(transcript(&a).follow);
        a.update(key('k'));
        assert!(!transcript(&a).follow);
        assert_eq!(transcript(&a).scroll, max_top - 1);
        frame(&a);
        // a page is the screen's height (less the line kept for context)
        a.update(press(KeyCode::PageUp));
        assert_eq!(transcript(&a).scroll, max_top - 1 - (shown.height - 1));
        let screen = frame(&a);
        assert!(screen.contains("more lines below"), "{screen}");
        let top = max_top - 1 - (shown.height - 1);
        assert!(
            screen.contains(&format!(
                "lines {}-{} of {}",
                top + 1,
                top + shown.height,
                shown.total
            )),
            "what is above is said: {screen}"
        );
        a.update(press(KeyCode::PageDown));
        a.update(key('j'));
        assert!(transcript(&a).follow, "back at the end, following again");
        let screen = frame(&a);
        assert!(screen.contains("message 59"), "{screen}");
        a.update(key('g'));
        assert_eq!(transcript(&a).scroll, 0);
        assert!(frame(&a).contains("message 0"));
        a.update(key('G'));
        assert!(transcript(&a).follow);
    }

    #[test]
    fn search_moves_from_match_to_match_and_says_where() {
        let texts: Vec<String> = (0..80)
            .map(|i| {
                if i % 20 == 5 {
                    format!("message {i} has the Needle")
                } else {
                    format!("message {i}")
                }
            })
            .collect();
        let (mut a, _) = attached(&texts);
        a.update(key('/'));
        assert!(matches!(a.dialog, Some(Dialog::Search(_))));
        for c in "needle".chars() {
            a.update(key(c));
        }
        // as typed: to the first match from the top of the screen, wrapping around
        let said = a.status.clone().map(|s| s.0).unwrap_or_default();
        assert!(said.contains("match 1 of 4"), "{said}");
        a.update(press(KeyCode::Enter));
        assert!(a.dialog.is_none());
        let screen = frame(&a);
        assert!(screen.contains("message 5 has the Needle"), "{screen}");
        assert!(screen.contains("search \"needle\""), "{screen}");
        a.update(key('n'));
        let said = a.status.clone().map(|s| s.0).unwrap_or_default();
        assert!(said.contains("match 2 of 4"), "{said}");
        assert!(frame(&a).contains("message 25 has the Needle"));
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('N'),
            KeyModifiers::SHIFT,
        )));
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('N'),
            KeyModifiers::SHIFT,
        )));
        let said = a.status.clone().map(|s| s.0).unwrap_or_default();
        assert!(said.contains("match 4 of 4"), "wraps around: {said}");
        // smart case: an uppercase letter means exactly that
        a.update(key('/'));
        for _ in 0..6 {
            a.update(press(KeyCode::Backspace));
        }
        for c in "NEEDLE".chars() {
            a.update(key(c));
        }
        let (said, error) = a.status.clone().unwrap_or_default();
        assert!(error && said.contains("not in the transcript"), "{said}");
        // esc: no search any more
        a.update(press(KeyCode::Esc));
        assert_eq!(transcript(&a).search_query(), None);
        assert!(
            a.transcript.is_some(),
            "esc closed the search, not the transcript"
        );
    }

    #[test]
    fn nothing_written_is_lost() {
        let (mut a, id) = attached(&["hello".to_string()]);
        a.update(key('i'));
        for c in "half a thought".chars() {
            a.update(key(c));
        }
        a.update(press(KeyCode::Esc));
        assert!(transcript(&a).composer.is_none());
        a.update(key('i'));
        let area = transcript(&a).composer.as_ref().map(text_of);
        assert_eq!(area.as_deref(), Some("half a thought"));
        let fx = a.update(ctrl('s'));
        assert_eq!(
            fx,
            vec![Effect::Send {
                session: id,
                text: "half a thought".into()
            }]
        );
        // the store refused it: back in the composer, and said
        a.update(Msg::NotSent {
            session: id,
            text: "half a thought".into(),
            error: "the store is down".into(),
        });
        let area = transcript(&a).composer.as_ref().map(text_of);
        assert_eq!(area.as_deref(), Some("half a thought"));
        let (said, error) = a.status.clone().unwrap_or_default();
        assert!(error && said.contains("the store is down"), "{said}");
        // leaving the transcript keeps the draft for coming back
        a.update(press(KeyCode::Esc));
        a.update(press(KeyCode::Esc));
        assert!(a.transcript.is_none());
        a.update(press(KeyCode::Enter));
        a.update(key('i'));
        let area = transcript(&a).composer.as_ref().map(text_of);
        assert_eq!(area.as_deref(), Some("half a thought"));
        // what the open composer holds is unsent too (a dropped connection loses nothing)
        a.update(key('!'));
        assert!(a.drafts_changed);
        assert_eq!(
            a.unsent().get(&id).map(String::as_str),
            Some("half a thought!")
        );
        // and a cockpit started later gets it back
        let mut next = app();
        next.restore_drafts(a.unsent());
        next.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        next.update(press(KeyCode::Enter));
        next.update(key('i'));
        let area = transcript(&next).composer.as_ref().map(text_of);
        assert_eq!(area.as_deref(), Some("half a thought!"));
    }

    #[test]
    fn the_mouse_scrolls_and_selects() {
        use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
        let mut a = app();
        a.update(Msg::Sessions(
            (1..=40)
                .map(|i| session(i, "coder", SessionStatus::Idle))
                .collect(),
        ));
        frame(&a);
        let mouse = |kind, row| {
            Msg::Mouse(MouseEvent {
                kind,
                column: 10,
                row,
                modifiers: KeyModifiers::NONE,
            })
        };
        a.update(mouse(MouseEventKind::ScrollDown, 5));
        assert_eq!(a.sessions.selected_index(), 3);
        frame(&a);
        let row = a.sessions.shown.y.get() + 7;
        a.update(mouse(MouseEventKind::Down(MouseButton::Left), row));
        assert_eq!(a.sessions.selected_index(), 7);
        // below the last row: nothing
        a.update(mouse(MouseEventKind::Down(MouseButton::Left), 23));
        assert_eq!(a.sessions.selected_index(), 7);
    }

    #[test]
    fn help_scrolls_when_it_does_not_fit_and_any_other_key_closes_it() {
        let mut a = app();
        a.update(key('?'));
        let first = frame(&a);
        assert!(first.contains("On this screen"), "{first}");
        assert!(first.contains("j/k"), "a hint that it scrolls: {first}");
        let Some(Dialog::Help(help)) = &a.dialog else {
            panic!("help is open")
        };
        assert!(
            help.shown.get().max_top > 0,
            "80x24 is too small for every key"
        );
        let mut pages = Vec::new();
        for _ in 0..3 {
            a.update(press(KeyCode::PageDown));
            pages.push(frame(&a));
        }
        assert!(
            pages.iter().any(|p| p.contains("On other screens")),
            "{pages:?}"
        );
        assert!(matches!(a.dialog, Some(Dialog::Help(_))));
        a.update(key('x'));
        assert!(a.dialog.is_none());
    }

    #[test]
    fn sort_by_key_or_command() {
        let mut a = app();
        a.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Idle,
        )]));
        a.update(key('s'));
        assert_eq!(a.sessions.sort(), SortKey::Activity);
        assert_eq!(
            a.status.clone().map(|s| s.0).as_deref(),
            Some("sorted by activity")
        );
        for c in ":sort title".chars() {
            a.update(key(c));
        }
        a.update(press(KeyCode::Enter));
        assert_eq!(a.sessions.sort(), SortKey::Title);
        for c in ":sort size".chars() {
            a.update(key(c));
        }
        a.update(press(KeyCode::Enter));
        let (said, error) = a.status.clone().unwrap_or_default();
        assert!(
            error && said.contains("newest|activity|status|agent|title"),
            "{said}"
        );
        assert_eq!(a.sessions.sort(), SortKey::Title);
    }

    /// What the agent changed, while on screen, is read again when its session's turn starts
    /// or ends, and every few seconds; not once the session has ended.
    #[test]
    fn the_changes_on_screen_are_read_again() {
        let mut a = app();
        a.update(Msg::Sessions(vec![session(
            1,
            "coder",
            SessionStatus::Busy,
        )]));
        a.sessions.select_index(0);
        let id = Uuid::from_u128(1);
        assert_eq!(
            a.update(key('c')),
            vec![Effect::LoadChanges { session: id }]
        );
        let reads = |effects: Vec<Effect>| {
            effects
                .iter()
                .filter(|e| matches!(e, Effect::LoadChanges { session } if *session == id))
                .count()
        };
        // the turn ends
        assert_eq!(
            reads(a.update(Msg::Session(Box::new(session(
                1,
                "coder",
                SessionStatus::Idle
            ))))),
            1
        );
        // a change that is not a turn's
        assert_eq!(
            reads(a.update(Msg::Session(Box::new(session(
                1,
                "coder",
                SessionStatus::Idle
            ))))),
            0
        );
        // and every few seconds
        let ticked: usize = (0..CHANGES_EVERY * 2)
            .map(|_| reads(a.update(Msg::Tick)))
            .sum();
        assert_eq!(ticked, 2);
        // ended: nothing more to read
        a.update(Msg::Session(Box::new(session(
            1,
            "coder",
            SessionStatus::Dead,
        ))));
        let ticked: usize = (0..CHANGES_EVERY * 2)
            .map(|_| reads(a.update(Msg::Tick)))
            .sum();
        assert_eq!(ticked, 0);
        // closed: nothing read
        a.update(Msg::Key(KeyEvent::from(crossterm::event::KeyCode::Esc)));
        a.update(Msg::Session(Box::new(session(
            1,
            "coder",
            SessionStatus::Busy,
        ))));
        let ticked: usize = (0..CHANGES_EVERY * 2)
            .map(|_| reads(a.update(Msg::Tick)))
            .sum();
        assert_eq!(ticked, 0);
    }

    /// `:rename` and `:budget` act on the selected session; a read-only cockpit refuses them
    /// however they are typed.
    #[test]
    fn rename_and_budget_from_the_command_line() {
        let typed = |a: &mut App, text: &str| {
            for c in text.chars() {
                a.update(key(c));
            }
            a.update(press(KeyCode::Enter))
        };
        for read_only in [false, true] {
            let mut a = App::new(
                Keymap::new(read_only),
                Theme::mono(),
                vec![],
                String::new(),
                String::new(),
            );
            let s = session(7, "coder", SessionStatus::Idle);
            let id = s.id;
            a.update(Msg::Sessions(vec![s]));
            let renamed = typed(&mut a, ":rename the build, fixed");
            let budget = typed(&mut a, ":budget $25");
            let lifted = typed(&mut a, ":budget none");
            if read_only {
                assert!(renamed.is_empty() && budget.is_empty() && lifted.is_empty());
                assert_eq!(a.status.as_ref().map(|(t, _)| t.as_str()), Some(READ_ONLY));
                continue;
            }
            assert_eq!(
                renamed,
                vec![Effect::Rename {
                    session: id,
                    title: "the build, fixed".into()
                }]
            );
            assert_eq!(
                budget,
                vec![Effect::Budget {
                    session: id,
                    usd: Some(25.0)
                }]
            );
            assert_eq!(
                lifted,
                vec![Effect::Budget {
                    session: id,
                    usd: None
                }]
            );
            assert!(typed(&mut a, ":budget lots").is_empty());
            let (said, error) = a.status.clone().unwrap_or_default();
            assert!(error && said.contains(":budget 25"), "{said}");
            assert!(typed(&mut a, ":rename").is_empty());
            let (said, error) = a.status.clone().unwrap_or_default();
            assert!(error && said.contains("rename to what"), "{said}");
        }
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
