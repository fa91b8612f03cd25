//! The fleet: the processes that run the fleet's work (tasks, the reconciler, the idle reaper,
//! following live sessions' event streams), each a *core* with a lease that its heartbeat
//! renews. What a core holds, it holds under its lease at an *epoch*: a core that stops renewing
//! (killed, frozen, cut off) loses all of it within the lease, and if it comes back it starts a
//! new epoch, so nothing it held before counts any more.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

text_enum!(
    /// What kind of process a core is.
    CoreKind, "core kind" {
        /// `agentdeck serve`: the REST API, and fleet work unless `--no-worker`.
        Serve => "serve",
        /// `agentdeck worker`: fleet work only.
        Worker => "worker",
        /// A cockpit that runs the fleet's work itself: on its own store, or on a shared one
        /// when no `serve` or `worker` is alive.
        Cockpit => "cockpit",
    }
);

impl CoreKind {
    /// Whether this kind runs fleet work whoever else is alive (a cockpit steps aside).
    pub fn always_in_fleet(self) -> bool {
        matches!(self, CoreKind::Serve | CoreKind::Worker)
    }
}

/// A live core, as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreInfo {
    /// The process's name (host:pid:tag).
    pub id: String,
    pub kind: CoreKind,
    /// Whether it runs fleet work now.
    pub fleet: bool,
    pub epoch: i64,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// How many live sessions' event streams it follows.
    pub sessions: i64,
    /// The roles it holds (`reconciler`, `idle-reaper`).
    pub roles: Vec<String>,
}

/// What a write is made under: the store checks, in the same transaction as the write, that
/// `core` still holds it at `epoch` with its lease running, and refuses the write otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fence {
    /// A fleet role.
    Role {
        name: String,
        core: String,
        epoch: i64,
    },
    /// A live session's event stream.
    Session {
        id: uuid::Uuid,
        core: String,
        epoch: i64,
    },
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fence::Role { name, core, epoch } => {
                write!(f, "the {name} role ({core}, epoch {epoch})")
            }
            Fence::Session { id, core, epoch } => {
                write!(f, "session {id}'s event stream ({core}, epoch {epoch})")
            }
        }
    }
}
