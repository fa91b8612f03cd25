//! The one registry of actions: each has an id, default keys, a hint, a help line and what it
//! does to sessions (looks, acts, or acts dangerously). It drives key handling, the hint bar,
//! `?` help and read-only mode (where every action that acts vanishes). No key is handled
//! outside it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where an action applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everywhere, unless the screen shown has its own action on the key.
    Global,
    Sessions,
    Transcript,
    Logs,
    Sandboxes,
    Diagnose,
    /// What the agent changed.
    Changes,
}

impl Scope {
    /// How `?` help names it.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "",
            Scope::Sessions => "sessions",
            Scope::Transcript => "transcript",
            Scope::Logs => "logs",
            Scope::Sandboxes => "sandboxes",
            Scope::Diagnose => "diagnose",
            Scope::Changes => "changes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Quit,
    Help,
    Back,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Follow,
    Attach,
    Filter,
    Sort,
    Preview,
    NextWaiting,
    PreviousWaiting,
    NewSession,
    Restart,
    Suspend,
    Resume,
    End,
    Abort,
    Allow,
    AllowAlways,
    Reject,
    Fork,
    Shell,
    Compose,
    ToggleWrap,
    ToggleTimestamps,
    ToggleTools,
    ToggleReasoning,
    ToggleMarkdown,
    Search,
    SearchNext,
    SearchPrevious,
    Since,
    Health,
    Logs,
    Diagnose,
    Changes,
    NextFile,
    PreviousFile,
    Command,
}

/// What an action does to sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Moves, shows, filters: changes no session and makes no agent act.
    Looks,
    /// Changes a session or makes an agent act (a new session, a message, a fork, a resume).
    Acts,
    /// Acts, and stops or overrides something (restart, suspend, end, abort, answers, a shell
    /// in the sandbox): offered last.
    Dangerous,
}

pub struct ActionDef {
    pub action: Action,
    pub id: &'static str,
    pub keys: &'static [&'static str],
    /// A word or two for the hint bar.
    pub hint: &'static str,
    pub help: &'static str,
    /// What it does to sessions: read-only mode has only the actions that look.
    pub kind: Kind,
    /// Where it applies: everywhere (`[Global]`) or on the screens listed.
    pub scopes: &'static [Scope],
}

impl ActionDef {
    pub fn applies_in(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    fn global(&self) -> bool {
        self.applies_in(Scope::Global)
    }

    /// Whether it changes a session or makes an agent act: none of these in read-only mode.
    pub fn acts(&self) -> bool {
        self.kind != Kind::Looks
    }

    pub fn dangerous(&self) -> bool {
        self.kind == Kind::Dangerous
    }
}

/// The registry's entry of `action`.
pub fn def_of(action: Action) -> Option<&'static ActionDef> {
    REGISTRY.iter().find(|d| d.action == action)
}

macro_rules! def {
    ($a:ident, $id:literal, [$($k:literal),*], $hint:literal, $help:literal, $kind:ident, [$($scope:ident),+]) => {
        ActionDef { action: Action::$a, id: $id, keys: &[$($k),*], hint: $hint, help: $help, kind: Kind::$kind, scopes: &[$(Scope::$scope),+] }
    };
}

pub const REGISTRY: &[ActionDef] = &[
    def!(
        Quit,
        "quit",
        ["q", "ctrl-c"],
        "quit",
        "Leave the cockpit (sessions keep running)",
        Looks,
        [Global]
    ),
    def!(
        Help,
        "help",
        ["?"],
        "help",
        "Show every key",
        Looks,
        [Global]
    ),
    def!(
        Back,
        "back",
        ["esc"],
        "back",
        "Go back / close",
        Looks,
        [Global]
    ),
    def!(Up, "up", ["up", "k"], "", "Move up", Looks, [Global]),
    def!(
        Down,
        "down",
        ["down", "j"],
        "",
        "Move down",
        Looks,
        [Global]
    ),
    def!(
        PageUp,
        "page-up",
        ["pgup", "ctrl-b"],
        "",
        "Page up",
        Looks,
        [Global]
    ),
    def!(
        PageDown,
        "page-down",
        ["pgdn", "ctrl-f"],
        "",
        "Page down",
        Looks,
        [Global]
    ),
    def!(
        Top,
        "top",
        ["home", "g"],
        "",
        "Go to the top",
        Looks,
        [Global]
    ),
    def!(
        Bottom,
        "bottom",
        ["end", "G"],
        "",
        "Go to the bottom",
        Looks,
        [Sessions, Sandboxes, Diagnose]
    ),
    def!(
        Follow,
        "follow",
        ["end", "G"],
        "follow",
        "Go to the end and follow what comes (scrolling up stops following)",
        Looks,
        [Transcript, Logs]
    ),
    def!(
        Attach,
        "attach",
        ["enter"],
        "attach",
        "Open the session's live transcript",
        Looks,
        [Sessions, Sandboxes, Diagnose]
    ),
    def!(
        Filter,
        "filter",
        ["/"],
        "filter",
        "Filter: words, or key:value (agent:x status:failed team:y)",
        Looks,
        [Sessions]
    ),
    def!(
        Sort,
        "sort",
        ["s"],
        "sort",
        "Sort: newest, last activity, trouble first, agent, title (:sort KEY)",
        Looks,
        [Sessions]
    ),
    def!(
        NextWaiting,
        "next-waiting",
        ["w"],
        "next waiting",
        "Go to the next session whose agent waits for a person (its ask in the preview: a, A, r answer it)",
        Looks,
        [Sessions]
    ),
    def!(
        PreviousWaiting,
        "previous-waiting",
        ["W"],
        "previous waiting",
        "Go to the session before that waits for a person",
        Looks,
        [Sessions]
    ),
    def!(
        Preview,
        "preview",
        ["p"],
        "preview",
        "Show or hide the selected session's last lines beside the list (under it when narrow)",
        Looks,
        [Sessions]
    ),
    def!(
        NewSession,
        "new-session",
        ["n"],
        "new",
        "Start a new session",
        Acts,
        [Sessions]
    ),
    def!(
        Restart,
        "restart",
        ["R"],
        "restart",
        "Restart the session's sandbox",
        Dangerous,
        [Global]
    ),
    def!(
        Suspend,
        "suspend",
        ["S"],
        "suspend",
        "Suspend the session's sandbox",
        Dangerous,
        [Global]
    ),
    def!(
        Resume,
        "resume",
        ["U"],
        "resume",
        "Resume a suspended session",
        Acts,
        [Global]
    ),
    def!(
        End,
        "end",
        ["X"],
        "end",
        "End the session: its sandbox is destroyed, its transcript kept",
        Dangerous,
        [Global]
    ),
    def!(
        Abort,
        "abort",
        ["ctrl-x"],
        "abort",
        "Stop the agent's running turn",
        Dangerous,
        [Transcript]
    ),
    def!(
        Allow,
        "allow",
        ["a"],
        "allow",
        "Allow what the agent asks, this once; or answer its question",
        Dangerous,
        [Transcript, Sessions]
    ),
    def!(
        AllowAlways,
        "allow-always",
        ["A"],
        "always",
        "Allow what the agent asks, and the like of it, for the rest of its life",
        Dangerous,
        [Transcript, Sessions]
    ),
    def!(
        Reject,
        "reject",
        ["r"],
        "reject",
        "Reject what the agent asks, with a reason it hears; or decline its question",
        Dangerous,
        [Transcript, Sessions]
    ),
    def!(
        Compose,
        "compose",
        ["i", "tab"],
        "write",
        "Write a message to the agent (ctrl-s sends; esc keeps it as a draft)",
        Acts,
        [Transcript]
    ),
    def!(
        ToggleWrap,
        "wrap",
        ["w"],
        "wrap",
        "Wrap long lines on or off",
        Looks,
        [Transcript, Logs]
    ),
    def!(
        ToggleTimestamps,
        "timestamps",
        ["t"],
        "times",
        "Show or hide timestamps",
        Looks,
        [Transcript]
    ),
    def!(
        ToggleTools,
        "tools",
        ["o"],
        "tools",
        "Unfold or fold tool calls",
        Looks,
        [Transcript]
    ),
    def!(
        ToggleReasoning,
        "reasoning",
        ["T"],
        "",
        "Show or fold the agent's reasoning (its thinking)",
        Looks,
        [Transcript]
    ),
    def!(
        ToggleMarkdown,
        "markdown",
        ["M"],
        "",
        "Show the agent's text as markdown (headings, lists, code, tables), or as it was written",
        Looks,
        [Transcript]
    ),
    def!(
        Search,
        "search",
        ["/"],
        "search",
        "Search: the transcript (smart case; n next, N previous), or in logs show only matching lines",
        Looks,
        [Transcript, Logs]
    ),
    def!(
        SearchNext,
        "search-next",
        ["n"],
        "",
        "Next match of the search",
        Looks,
        [Transcript]
    ),
    def!(
        SearchPrevious,
        "search-previous",
        ["N"],
        "",
        "Previous match of the search",
        Looks,
        [Transcript]
    ),
    def!(
        Fork,
        "fork",
        ["f"],
        "fork",
        "Fork the session at a message: a new session whose conversation is this one up to it",
        Acts,
        [Transcript]
    ),
    def!(
        Shell,
        "shell",
        ["!"],
        "shell",
        "A shell in the session's sandbox (exit it to come back)",
        Dangerous,
        [Sessions, Transcript, Sandboxes]
    ),
    def!(
        Since,
        "since",
        ["s"],
        "since",
        "Logs since: the last 500 lines, 5 minutes, 1 hour, 1 day, everything",
        Looks,
        [Logs]
    ),
    def!(
        Health,
        "sandboxes",
        ["h"],
        "health",
        "Sandbox health of every live session, trouble first",
        Looks,
        [Global]
    ),
    def!(
        Logs,
        "logs",
        ["l"],
        "logs",
        "The session's sandbox log, following",
        Looks,
        [Global]
    ),
    def!(
        Diagnose,
        "diagnose",
        ["d"],
        "diagnose",
        "Everything about the session, and what to do",
        Looks,
        [Global]
    ),
    def!(
        Changes,
        "changes",
        ["c"],
        "changes",
        "What the agent changed in files, turn by turn",
        Looks,
        [Global]
    ),
    def!(
        NextFile,
        "next_file",
        ["]"],
        "next file",
        "The next changed file",
        Looks,
        [Changes]
    ),
    def!(
        PreviousFile,
        "previous_file",
        ["["],
        "prev file",
        "The changed file before",
        Looks,
        [Changes]
    ),
    def!(
        Command,
        "command",
        [":"],
        "cmd",
        "Command mode: :sessions :sandboxes :logs :diagnose :agents :team NAME :sort KEY :quit",
        Looks,
        [Global]
    ),
];

/// A key as the registry writes it (`"q"`, `"ctrl-c"`, `"enter"`, `"G"`).
fn parse(key: &str) -> Option<(KeyCode, KeyModifiers)> {
    let (mods, name) = match key.strip_prefix("ctrl-") {
        Some(rest) => (KeyModifiers::CONTROL, rest),
        None => (KeyModifiers::NONE, key),
    };
    let code = match name {
        "enter" => KeyCode::Enter,
        "esc" => KeyCode::Esc,
        "tab" => KeyCode::Tab,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "pgup" => KeyCode::PageUp,
        "pgdn" => KeyCode::PageDown,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        s if s.chars().count() == 1 => KeyCode::Char(s.chars().next()?),
        _ => return None,
    };
    Some((code, mods))
}

fn matches(key: &KeyEvent, spec: &str) -> bool {
    let Some((code, mods)) = parse(spec) else {
        return false;
    };
    let got = key.modifiers - KeyModifiers::SHIFT;
    match (code, key.code) {
        (KeyCode::Char(a), KeyCode::Char(b)) => a == b && got == mods,
        (a, b) => a == b && key.modifiers == mods,
    }
}

/// The actions in effect: read-only mode removes every one that acts; the config may rebind keys.
pub struct Keymap {
    read_only: bool,
    keys: std::collections::HashMap<Action, Vec<String>>,
}

impl Keymap {
    pub fn new(read_only: bool) -> Self {
        Keymap {
            read_only,
            keys: REGISTRY
                .iter()
                .map(|d| (d.action, d.keys.iter().map(|k| k.to_string()).collect()))
                .collect(),
        }
    }

    /// The defaults with `[tui] keys` applied: `(action id, keys, where it was written)`. An
    /// unknown action, a key that cannot be read, or two actions of one scope on one key is an
    /// error naming the place in the config file.
    pub fn with_keys(
        read_only: bool,
        overrides: &[(String, Vec<String>, String)],
    ) -> Result<Self, String> {
        let mut map = Keymap::new(read_only);
        for (id, keys, at) in overrides {
            let Some(def) = REGISTRY.iter().find(|d| d.id == id) else {
                let ids: Vec<&str> = REGISTRY.iter().map(|d| d.id).collect();
                return Err(format!(
                    "{at}: unknown action {id:?} in [tui] keys; actions are: {}",
                    ids.join(", ")
                ));
            };
            if keys.is_empty() {
                return Err(format!("{at}: no key given for {id:?}"));
            }
            for k in keys {
                if parse(k).is_none() {
                    return Err(format!(
                        "{at}: cannot read the key {k:?} for {id:?}: write a character, or ctrl-X, enter, esc, tab, up, down, pgup, pgdn, home, end"
                    ));
                }
            }
            map.keys.insert(def.action, keys.clone());
        }
        // No key may mean two things where both apply.
        for a in REGISTRY {
            for b in REGISTRY {
                if a.id >= b.id {
                    continue;
                }
                let overlap = a.global() || b.global() || a.scopes.iter().any(|s| b.applies_in(*s));
                if !overlap {
                    continue;
                }
                if let Some(k) = map
                    .keys_of(a.action)
                    .iter()
                    .find(|k| map.keys_of(b.action).contains(k))
                {
                    let at = overrides
                        .iter()
                        .find(|(id, _, _)| id == a.id || id == b.id)
                        .map_or("[tui] keys".to_string(), |(_, _, at)| at.clone());
                    return Err(format!(
                        "{at}: the key {k:?} is bound to both {:?} and {:?}",
                        a.id, b.id
                    ));
                }
            }
        }
        Ok(map)
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn keys_of(&self, action: Action) -> &[String] {
        self.keys.get(&action).map_or(&[], Vec::as_slice)
    }

    /// The first key of `action` when it is in effect (read-only has none for what acts).
    pub fn key_for(&self, action: Action) -> Option<&str> {
        if self.read_only && def_of(action).is_some_and(|d| d.acts()) {
            return None;
        }
        self.keys_of(action).first().map(String::as_str)
    }

    pub fn defs(&self) -> impl Iterator<Item = &'static ActionDef> + '_ {
        REGISTRY
            .iter()
            .filter(move |d| !(self.read_only && d.acts()))
    }

    /// The action a key means in `scope` (its own actions first, then global ones).
    pub fn action(&self, key: &KeyEvent, scope: Scope) -> Option<Action> {
        let find = |s: Scope| {
            self.defs()
                .filter(|d| d.applies_in(s))
                .find(|d| self.keys_of(d.action).iter().any(|k| matches(key, k)))
                .map(|d| d.action)
        };
        find(scope).or_else(|| find(Scope::Global))
    }

    /// `key hint` pairs for the hint bar of `scope`. The screen's own actions come first (abort
    /// in a busy transcript among them), then those that apply everywhere, the dangerous ones
    /// last: a narrow terminal cuts from the end. `esc` is not offered on the home screen (there
    /// is nothing to go back to). Only actions that `offered` says make sense now are shown
    /// (resume for a suspended session, abort for a busy one); their keys still work, and say
    /// why when they cannot.
    pub fn hints(
        &self,
        scope: Scope,
        offered: impl Fn(Action) -> bool,
    ) -> Vec<(String, &'static str)> {
        let mut defs: Vec<&ActionDef> = self
            .defs()
            .filter(|d| !d.hint.is_empty() && (d.applies_in(scope) || d.global()))
            .filter(|d| !(scope == Scope::Sessions && d.action == Action::Back))
            .filter(|d| offered(d.action))
            .collect();
        defs.sort_by_key(|d| (d.global(), d.dangerous()));
        defs.into_iter()
            .filter_map(|d| self.keys_of(d.action).first().map(|k| (k.clone(), d.hint)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn keys_map_to_actions_by_scope() {
        let km = Keymap::new(false);
        assert_eq!(
            km.action(
                &key(KeyCode::Char('q'), KeyModifiers::NONE),
                Scope::Sessions
            ),
            Some(Action::Quit)
        );
        assert_eq!(
            km.action(
                &key(KeyCode::Char('c'), KeyModifiers::CONTROL),
                Scope::Transcript
            ),
            Some(Action::Quit)
        );
        assert_eq!(
            km.action(&key(KeyCode::Enter, KeyModifiers::NONE), Scope::Sessions),
            Some(Action::Attach)
        );
        assert_eq!(
            km.action(&key(KeyCode::Enter, KeyModifiers::NONE), Scope::Transcript),
            None
        );
        // an uppercase letter arrives with SHIFT
        assert_eq!(
            km.action(
                &key(KeyCode::Char('G'), KeyModifiers::SHIFT),
                Scope::Transcript
            ),
            Some(Action::Follow)
        );
        assert_eq!(
            km.action(&key(KeyCode::End, KeyModifiers::NONE), Scope::Sessions),
            Some(Action::Bottom)
        );
        // one key, one meaning per screen: `/` filters sessions and searches transcripts
        assert_eq!(
            km.action(
                &key(KeyCode::Char('/'), KeyModifiers::NONE),
                Scope::Sessions
            ),
            Some(Action::Filter)
        );
        assert_eq!(
            km.action(&key(KeyCode::Char('/'), KeyModifiers::NONE), Scope::Logs),
            Some(Action::Search)
        );
        // a screen's own actions only: no search-next in the sessions list, `n` is new there
        assert_eq!(
            km.action(
                &key(KeyCode::Char('n'), KeyModifiers::NONE),
                Scope::Transcript
            ),
            Some(Action::SearchNext)
        );
        assert_eq!(
            km.action(&key(KeyCode::Char('n'), KeyModifiers::NONE), Scope::Logs),
            None
        );
        assert_eq!(
            km.action(
                &key(KeyCode::Char('X'), KeyModifiers::SHIFT),
                Scope::Sessions
            ),
            Some(Action::End)
        );
    }

    #[test]
    fn keys_can_be_rebound_and_mistakes_are_named() {
        let at = "c.toml:3:1".to_string();
        let km = Keymap::with_keys(false, &[("end".into(), vec!["ctrl-d".into()], at.clone())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            km.action(
                &key(KeyCode::Char('d'), KeyModifiers::CONTROL),
                Scope::Sessions
            ),
            Some(Action::End)
        );
        assert_eq!(
            km.action(
                &key(KeyCode::Char('X'), KeyModifiers::SHIFT),
                Scope::Sessions
            ),
            None
        );
        let err = Keymap::with_keys(false, &[("restat".into(), vec!["r".into()], at.clone())])
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("c.toml:3:1: unknown action \"restat\""),
            "{err}"
        );
        let err = Keymap::with_keys(false, &[("end".into(), vec!["q".into()], at.clone())])
            .err()
            .unwrap_or_default();
        assert!(err.contains("bound to both"), "{err}");
        let err = Keymap::with_keys(false, &[("end".into(), vec!["shift-meta-x".into()], at)])
            .err()
            .unwrap_or_default();
        assert!(err.contains("cannot read the key"), "{err}");
    }

    /// Every action says what it does, and read-only mode keeps only those that look: a table
    /// over every action (a new one does not compile until it is in it), checked against the
    /// registry and against a read-only keymap, where no key of an acting action does anything.
    #[test]
    fn read_only_keeps_only_the_actions_that_look() {
        use Action as A;
        let all = [
            A::Quit,
            A::Help,
            A::Back,
            A::Up,
            A::Down,
            A::PageUp,
            A::PageDown,
            A::Top,
            A::Bottom,
            A::Follow,
            A::Attach,
            A::Filter,
            A::Sort,
            A::Preview,
            A::NextWaiting,
            A::PreviousWaiting,
            A::NewSession,
            A::Restart,
            A::Suspend,
            A::Resume,
            A::End,
            A::Abort,
            A::Allow,
            A::AllowAlways,
            A::Reject,
            A::Fork,
            A::Shell,
            A::Compose,
            A::ToggleWrap,
            A::ToggleTimestamps,
            A::ToggleTools,
            A::ToggleReasoning,
            A::ToggleMarkdown,
            A::Search,
            A::SearchNext,
            A::SearchPrevious,
            A::Since,
            A::Health,
            A::Logs,
            A::Diagnose,
            A::Changes,
            A::NextFile,
            A::PreviousFile,
            A::Command,
        ];
        let acts = |a: Action| match a {
            A::Quit
            | A::Help
            | A::Back
            | A::Up
            | A::Down
            | A::PageUp
            | A::PageDown
            | A::Top
            | A::Bottom
            | A::Follow
            | A::Attach
            | A::Filter
            | A::Sort
            | A::Preview
            | A::NextWaiting
            | A::PreviousWaiting
            | A::ToggleWrap
            | A::ToggleTimestamps
            | A::ToggleTools
            | A::ToggleReasoning
            | A::ToggleMarkdown
            | A::Search
            | A::SearchNext
            | A::SearchPrevious
            | A::Since
            | A::Health
            | A::Logs
            | A::Diagnose
            | A::Changes
            | A::NextFile
            | A::PreviousFile
            | A::Command => false,
            A::NewSession
            | A::Restart
            | A::Suspend
            | A::Resume
            | A::End
            | A::Abort
            | A::Allow
            | A::AllowAlways
            | A::Reject
            | A::Fork
            | A::Shell
            | A::Compose => true,
        };
        assert_eq!(
            all.len(),
            REGISTRY.len(),
            "every action of the registry is in the table"
        );
        let read_only = Keymap::new(true);
        let scopes = [
            Scope::Sessions,
            Scope::Transcript,
            Scope::Logs,
            Scope::Sandboxes,
            Scope::Diagnose,
            Scope::Changes,
        ];
        for a in all {
            let def = def_of(a).unwrap_or_else(|| panic!("{a:?} is in the registry"));
            assert_eq!(def.acts(), acts(a), "{a:?} ({}) says what it does", def.id);
            for k in def.keys {
                let Some((code, mods)) = parse(k) else {
                    panic!("{k}");
                };
                let event = KeyEvent::new(code, mods);
                for scope in scopes {
                    let found = read_only.action(&event, scope);
                    if acts(a) {
                        assert_ne!(
                            found,
                            Some(a),
                            "read-only: {k} still does {a:?} in {scope:?}"
                        );
                    }
                }
            }
            assert_eq!(
                read_only.defs().any(|d| d.action == a),
                !acts(a),
                "read-only offers {a:?} exactly when it only looks"
            );
        }
    }

    #[test]
    fn read_only_removes_dangerous_actions_everywhere() {
        let km = Keymap::new(true);
        assert_eq!(
            km.action(
                &key(KeyCode::Char('X'), KeyModifiers::SHIFT),
                Scope::Sessions
            ),
            None
        );
        assert!(
            !km.hints(Scope::Sessions, |_| true)
                .iter()
                .any(|(_, h)| *h == "end" || *h == "restart")
        );
        assert!(km.defs().all(|d| !d.acts()));
        // every key is parseable and no two actions of one scope share a key
        for d in REGISTRY {
            for k in d.keys {
                assert!(parse(k).is_some(), "{k}");
            }
        }
    }
}
