//! The small closed vocabularies of the domain, stored as snake_case text.

/// A stored value that is not one of the known names.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of: {expected}")]
pub struct ParseEnumError {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::model::ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::model::ParseEnumError {
                        what: $what,
                        value: other.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

text_enum!(
    /// What an operator needs to know about a session at a glance.
    SessionStatus, "session status" {
        Creating => "creating",
        Ready => "ready",
        Idle => "idle",
        Busy => "busy",
        Suspended => "suspended",
        Dead => "dead",
        Failed => "failed",
    }
);

impl SessionStatus {
    /// The statuses whose harness is up and answering: ingest follows them, the reconciler
    /// checks that their sandbox is still there, messages are delivered to them.
    pub const LIVE: &'static [SessionStatus] = &[
        SessionStatus::Ready,
        SessionStatus::Idle,
        SessionStatus::Busy,
    ];

    /// Live and not working: the idle deadline runs (and the idle reaper acts on it).
    pub const AT_REST: &'static [SessionStatus] = &[SessionStatus::Ready, SessionStatus::Idle];

    /// The word people read for it: `ready` and `idle` are one state to an operator (up, and
    /// waiting for a message), and a `dead` session is one that was ended.
    pub fn word(self) -> &'static str {
        match self {
            SessionStatus::Ready | SessionStatus::Idle => "idle",
            SessionStatus::Dead => "ended",
            other => other.as_str(),
        }
    }

    /// The statuses a word a person typed means: a stored name, or a [`word`](Self::word)
    /// (`idle` is ready or idle, `ended` is dead).
    pub fn from_word(word: &str) -> Result<Vec<SessionStatus>, super::ParseEnumError> {
        match word {
            "idle" => Ok(SessionStatus::AT_REST.to_vec()),
            "ended" => Ok(vec![SessionStatus::Dead]),
            other => other.parse().map(|s| vec![s]),
        }
    }

    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }
    /// A session that has ended for good: nothing will run for it again.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Dead)
    }
    /// A session whose sandbox should exist and be running.
    pub fn wants_sandbox(self) -> bool {
        matches!(
            self,
            SessionStatus::Creating
                | SessionStatus::Ready
                | SessionStatus::Idle
                | SessionStatus::Busy
        )
    }
}

text_enum!(
    /// Where a session is in its life, finer than its status; shown with a detail line.
    Phase, "phase" {
        CreatingSandbox => "creating_sandbox",
        SandboxPending => "sandbox_pending",
        SandboxRunning => "sandbox_running",
        HarnessStarting => "harness_starting",
        HarnessReady => "harness_ready",
        Ready => "ready",
        Busy => "busy",
        Idle => "idle",
        Restarting => "restarting",
        Suspending => "suspending",
        Suspended => "suspended",
        Resuming => "resuming",
        Ending => "ending",
        Dead => "dead",
        Failed => "failed",
    }
);

impl Phase {
    /// The phases an operator's command puts a session in while its task is on the way to act
    /// on the sandbox (see [`super::Command::lands_in`]). Such a session is its task's: the
    /// reconciler leaves it alone and the session's own transitions (a turn ending …) do not
    /// overwrite the phase.
    pub const IN_TRANSITION: &'static [Phase] = &[
        Phase::Restarting,
        Phase::Suspending,
        Phase::Resuming,
        Phase::Ending,
    ];

    pub fn in_transition(self) -> bool {
        Self::IN_TRANSITION.contains(&self)
    }
}

text_enum!(
    MessageRole, "message role" {
        User => "user",
        Assistant => "assistant",
        System => "system",
    }
);

text_enum!(
    /// A user's message is `pending` from the moment it is stored until the agent took it.
    MessageStatus, "message status" {
        Pending => "pending",
        Complete => "complete",
        Failed => "failed",
        /// The turn was stopped on request (abort) before it finished.
        Aborted => "aborted",
    }
);

text_enum!(
    /// A worker task: `queued` → `running` (leased) → `done`, or back to `queued` with backoff,
    /// or `dead` after its last attempt.
    TaskStatus, "task status" {
        Queued => "queued",
        Running => "running",
        Done => "done",
        Dead => "dead",
    }
);

text_enum!(
    /// What a worker task does; stored as text, so that a task written by a newer agentdeck is
    /// still listed (and dead-lettered by a worker that does not know it).
    TaskKind, "task kind" {
        /// Make the session's sandbox and bring its harness up.
        Provision => "session.provision",
        /// Send the session's pending messages to its agent.
        Deliver => "session.deliver",
        Restart => "session.restart",
        Suspend => "session.suspend",
        Resume => "session.resume",
        End => "session.end",
        /// Stop the agent's running turn.
        Abort => "session.abort",
        /// Appends an event to a session's log (optionally after a pause): used to check that a
        /// worker fleet runs every task exactly once.
        DiagEcho => "diag.echo",
        /// Sends one notice to one webhook (`[[webhooks]]`), with retries.
        Webhook => "notice.webhook",
    }
);

text_enum!(
    /// What happened to a session that a person should hear of.
    NoticeKind, "notice" {
        /// Its agent waits for a person (a permission, a question).
        Waiting => "waiting",
        Failed => "failed",
        /// Its agent finished a turn.
        Done => "done",
    }
);

impl TaskKind {
    /// The kinds that drive a session's life: when one gives up for good, the session is
    /// marked failed with its last error (nothing else would take it out of its phase).
    pub fn drives_lifecycle(self) -> bool {
        matches!(
            self,
            TaskKind::Provision
                | TaskKind::Restart
                | TaskKind::Resume
                | TaskKind::Suspend
                | TaskKind::End
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_unknown_is_refused() {
        for s in SessionStatus::ALL {
            assert_eq!(s.as_str().parse::<SessionStatus>().ok(), Some(*s));
        }
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().ok(), Some(*p));
        }
        let err = "zombie".parse::<SessionStatus>().unwrap_err();
        assert!(err.to_string().contains("creating, ready"), "{err}");
        assert_eq!(
            serde_json::to_string(&Phase::CreatingSandbox)
                .ok()
                .as_deref(),
            Some("\"creating_sandbox\"")
        );
    }
}
