//! The one registry of actions: each has an id, default keys, a hint, a help line and a
//! `dangerous` flag. It drives key handling, the hint bar, `?` help and read-only mode (where
//! dangerous actions vanish). No key is handled outside it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where an action applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Sessions,
    Transcript,
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
    Attach,
    Filter,
    NewSession,
    Restart,
    Suspend,
    Resume,
    End,
    Abort,
    Compose,
    ToggleWrap,
    ToggleTimestamps,
    ToggleTools,
    Health,
    Logs,
    Diagnose,
    Command,
}

pub struct ActionDef {
    pub action: Action,
    pub id: &'static str,
    pub keys: &'static [&'static str],
    /// A word or two for the hint bar.
    pub hint: &'static str,
    pub help: &'static str,
    pub dangerous: bool,
    pub scope: Scope,
}

macro_rules! def {
    ($a:ident, $id:literal, [$($k:literal),*], $hint:literal, $help:literal, $danger:literal, $scope:ident) => {
        ActionDef { action: Action::$a, id: $id, keys: &[$($k),*], hint: $hint, help: $help, dangerous: $danger, scope: Scope::$scope }
    };
}

pub const REGISTRY: &[ActionDef] = &[
    def!(
        Quit,
        "quit",
        ["q", "ctrl-c"],
        "quit",
        "Leave the cockpit (sessions keep running)",
        false,
        Global
    ),
    def!(Help, "help", ["?"], "help", "Show every key", false, Global),
    def!(
        Back,
        "back",
        ["esc"],
        "back",
        "Go back / close",
        false,
        Global
    ),
    def!(Up, "up", ["up", "k"], "", "Move up", false, Global),
    def!(Down, "down", ["down", "j"], "", "Move down", false, Global),
    def!(
        PageUp,
        "page-up",
        ["pgup", "ctrl-b"],
        "",
        "Page up",
        false,
        Global
    ),
    def!(
        PageDown,
        "page-down",
        ["pgdn", "ctrl-f"],
        "",
        "Page down",
        false,
        Global
    ),
    def!(
        Top,
        "top",
        ["home", "g"],
        "",
        "Go to the top",
        false,
        Global
    ),
    def!(
        Bottom,
        "bottom",
        ["end", "G"],
        "follow",
        "Go to the bottom (and follow the transcript)",
        false,
        Global
    ),
    def!(
        Attach,
        "attach",
        ["enter"],
        "attach",
        "Open the session's live transcript",
        false,
        Sessions
    ),
    def!(
        Filter,
        "filter",
        ["/"],
        "filter",
        "Filter: words, or key:value (agent:x status:failed team:y)",
        false,
        Sessions
    ),
    def!(
        NewSession,
        "new-session",
        ["n"],
        "new",
        "Start a new session",
        false,
        Sessions
    ),
    def!(
        Restart,
        "restart",
        ["R"],
        "restart",
        "Restart the session's sandbox",
        true,
        Global
    ),
    def!(
        Suspend,
        "suspend",
        ["S"],
        "suspend",
        "Suspend the session's sandbox",
        true,
        Global
    ),
    def!(
        Resume,
        "resume",
        ["U"],
        "resume",
        "Resume a suspended session",
        false,
        Global
    ),
    def!(
        End,
        "end",
        ["X"],
        "end",
        "End the session: its sandbox is destroyed, its transcript kept",
        true,
        Global
    ),
    def!(
        Abort,
        "abort",
        ["ctrl-x"],
        "abort",
        "Stop the agent's running turn",
        true,
        Transcript
    ),
    def!(
        Compose,
        "compose",
        ["i", "tab"],
        "write",
        "Write a message to the agent (ctrl-s sends, esc leaves)",
        false,
        Transcript
    ),
    def!(
        ToggleWrap,
        "wrap",
        ["w"],
        "wrap",
        "Wrap long lines on or off",
        false,
        Transcript
    ),
    def!(
        ToggleTimestamps,
        "timestamps",
        ["t"],
        "times",
        "Show or hide timestamps",
        false,
        Transcript
    ),
    def!(
        ToggleTools,
        "tools",
        ["o"],
        "tools",
        "Unfold or fold tool calls",
        false,
        Transcript
    ),
    def!(
        Health,
        "sandboxes",
        ["h"],
        "health",
        "Sandbox health of every live session, trouble first",
        false,
        Global
    ),
    def!(
        Logs,
        "logs",
        ["l"],
        "logs",
        "The session's sandbox log, following",
        false,
        Global
    ),
    def!(
        Diagnose,
        "diagnose",
        ["d"],
        "diagnose",
        "Everything about the session, and what to do",
        false,
        Global
    ),
    def!(
        Command,
        "command",
        [":"],
        "cmd",
        "Command mode: :sessions :sandboxes :logs :diagnose :agents :team NAME :quit",
        false,
        Global
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

/// The actions in effect (read-only mode removes the dangerous ones).
pub struct Keymap {
    read_only: bool,
}

impl Keymap {
    pub fn new(read_only: bool) -> Self {
        Keymap { read_only }
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn defs(&self) -> impl Iterator<Item = &'static ActionDef> + '_ {
        REGISTRY
            .iter()
            .filter(move |d| !(self.read_only && d.dangerous))
    }

    /// The action a key means in `scope` (its own actions first, then global ones).
    pub fn action(&self, key: &KeyEvent, scope: Scope) -> Option<Action> {
        let find = |s: Scope| {
            self.defs()
                .filter(|d| d.scope == s)
                .find(|d| d.keys.iter().any(|k| matches(key, k)))
                .map(|d| d.action)
        };
        find(scope).or_else(|| find(Scope::Global))
    }

    /// `key hint` pairs for the hint bar of `scope`.
    pub fn hints(&self, scope: Scope) -> Vec<(&'static str, &'static str)> {
        self.defs()
            .filter(|d| !d.hint.is_empty() && (d.scope == scope || d.scope == Scope::Global))
            .map(|d| (d.keys[0], d.hint))
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
            Some(Action::Bottom)
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
            !km.hints(Scope::Sessions)
                .iter()
                .any(|(_, h)| *h == "end" || *h == "restart")
        );
        assert!(km.defs().all(|d| !d.dangerous));
        // every key is parseable and no two actions of one scope share a key
        for d in REGISTRY {
            for k in d.keys {
                assert!(parse(k).is_some(), "{k}");
            }
        }
    }
}
