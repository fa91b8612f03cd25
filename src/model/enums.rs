//! The small closed vocabularies of the domain, stored as snake_case text.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseEnumError {
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
