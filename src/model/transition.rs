//! What a session's own life does to its status, as opposed to an operator's commands
//! ([`super::Command`]): the agent starts and ends turns, a sandbox vanishes. Each transition
//! says from which statuses it may happen and where it leads; its patch is written only if the
//! session is still in one of those statuses and no command is on its way (a phase of
//! [`Phase::IN_TRANSITION`]), so that a turn ending never hides a suspend or an end in progress.
//!
//! The whole machine, in one place (commands in capitals; the worker's tasks carry commands out
//! and write where they lead; the rest are the transitions below):
//!
//! ```text
//! creating ── task: sandbox up, harness answers ──▶ ready
//! ready, idle ── turn started ──▶ busy ── turn ended / stopped ──▶ idle
//! ready, idle, busy ── sandbox vanished ──▶ creating
//! creating, ready, idle, busy ── SUSPEND (or the idle deadline) ──▶ suspended
//! suspended ── RESUME ──▶ creating;   any but dead ── RESTART ──▶ creating
//! any but dead ── END ──▶ dead;       a lifecycle task gives up for good ──▶ failed
//! ```

use super::{Phase, SessionPatch, SessionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A message is on its way to the agent (busy before it is sent: the agent's "idle" at
    /// the end of the turn may come back before the sender would get to say "busy").
    Delivering,
    /// The agent says it is working.
    TurnStarted,
    /// The agent's turn is over.
    TurnEnded,
    /// The turn stopped before its end: the agent refused the message, or it was aborted.
    TurnStopped,
    /// The sandbox of a live session is gone: it is provisioned again.
    SandboxVanished,
}

impl Transition {
    pub const ALL: &'static [Transition] = &[
        Transition::Delivering,
        Transition::TurnStarted,
        Transition::TurnEnded,
        Transition::TurnStopped,
        Transition::SandboxVanished,
    ];

    /// The statuses it may happen from.
    pub fn from(self) -> &'static [SessionStatus] {
        use SessionStatus as S;
        match self {
            Transition::Delivering | Transition::SandboxVanished => SessionStatus::LIVE,
            Transition::TurnStarted => SessionStatus::AT_REST,
            Transition::TurnEnded => &[S::Busy, S::Ready],
            Transition::TurnStopped => &[S::Busy],
        }
    }

    /// Where it leads.
    pub fn to(self) -> (SessionStatus, Phase) {
        match self {
            Transition::Delivering | Transition::TurnStarted => (SessionStatus::Busy, Phase::Busy),
            Transition::TurnEnded | Transition::TurnStopped => (SessionStatus::Idle, Phase::Idle),
            Transition::SandboxVanished => (SessionStatus::Creating, Phase::CreatingSandbox),
        }
    }

    /// The write: the new status and phase, made only from [`Transition::from`] and not while
    /// a command is in transition (the store answers a conflict otherwise).
    pub fn patch(self) -> SessionPatch {
        let (status, phase) = self.to();
        SessionPatch {
            only_if_status: Some(self.from().to_vec()),
            unless_phase: Some(Phase::IN_TRANSITION.to_vec()),
            ..SessionPatch::status(status, phase)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionStatus as S;

    /// The table, spelled out: a change to it is a change of behaviour, seen here.
    #[test]
    fn where_each_transition_may_happen_and_where_it_leads() {
        let table: &[(Transition, &[S], S)] = &[
            (
                Transition::Delivering,
                &[S::Ready, S::Idle, S::Busy],
                S::Busy,
            ),
            (Transition::TurnStarted, &[S::Ready, S::Idle], S::Busy),
            (Transition::TurnEnded, &[S::Busy, S::Ready], S::Idle),
            (Transition::TurnStopped, &[S::Busy], S::Idle),
            (
                Transition::SandboxVanished,
                &[S::Ready, S::Idle, S::Busy],
                S::Creating,
            ),
        ];
        assert_eq!(table.len(), Transition::ALL.len());
        for (transition, from, to) in table {
            assert_eq!(transition.from(), *from, "{transition:?}");
            assert_eq!(transition.to().0, *to, "{transition:?}");
            let patch = transition.patch();
            assert_eq!(patch.only_if_status.as_deref(), Some(*from));
            assert_eq!(patch.unless_phase.as_deref(), Some(Phase::IN_TRANSITION));
            assert!(
                from.iter().all(|s| s.is_live()),
                "{transition:?} happens only to a session whose harness is up"
            );
        }
    }
}
