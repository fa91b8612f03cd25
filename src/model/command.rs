//! The commands an operator can give a session (from the cockpit, the CLI or REST) and which
//! statuses accept each: the one place that says so. The core checks it before writing (and
//! writes only if the status still accepts it), the cockpit offers only what it accepts.

use super::{Phase, SessionStatus, TaskKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Write to the agent (a suspended session is resumed for it).
    Send,
    /// Stop the agent's running turn.
    Abort,
    /// Make the sandbox again (a failed session is provisioned again).
    Restart,
    /// Stop the sandbox; the session and its transcript stay.
    Suspend,
    /// Bring a suspended sandbox back.
    Resume,
    /// End the session for good.
    End,
}

impl Command {
    pub const ALL: &'static [Command] = &[
        Command::Send,
        Command::Abort,
        Command::Restart,
        Command::Suspend,
        Command::Resume,
        Command::End,
    ];

    /// Whether a session in `status` takes this command.
    pub fn accepts(self, status: SessionStatus) -> bool {
        use SessionStatus as S;
        match self {
            Command::Send => !matches!(status, S::Dead | S::Failed),
            Command::Abort => status == S::Busy,
            Command::Restart | Command::End => !status.is_terminal(),
            Command::Suspend => status.wants_sandbox(),
            Command::Resume => status == S::Suspended,
        }
    }

    /// Every status that takes this command (for a write made only if the session is still in
    /// one of them).
    pub fn accepted(self) -> Vec<SessionStatus> {
        SessionStatus::ALL
            .iter()
            .copied()
            .filter(|s| self.accepts(*s))
            .collect()
    }

    /// Where an accepted command puts the session until its task has acted: its status (or
    /// `None`: the status stays as it is, the phase says what is coming) and its phase. `None`
    /// for the commands that do not change the session's state.
    pub fn lands_in(self) -> Option<(Option<SessionStatus>, Phase)> {
        match self {
            Command::Send | Command::Abort => None,
            Command::Restart => Some((Some(SessionStatus::Creating), Phase::Restarting)),
            Command::Suspend => Some((None, Phase::Suspending)),
            Command::Resume => Some((Some(SessionStatus::Creating), Phase::Resuming)),
            Command::End => Some((None, Phase::Ending)),
        }
    }

    /// The worker task that carries the command out.
    pub fn task(self) -> TaskKind {
        match self {
            Command::Send => TaskKind::Deliver,
            Command::Abort => TaskKind::Abort,
            Command::Restart => TaskKind::Restart,
            Command::Suspend => TaskKind::Suspend,
            Command::Resume => TaskKind::Resume,
            Command::End => TaskKind::End,
        }
    }

    /// The verb, as messages say it ("cannot suspend session …").
    pub fn verb(self) -> &'static str {
        match self {
            Command::Send => "send to",
            Command::Abort => "abort",
            Command::Restart => "restart",
            Command::Suspend => "suspend",
            Command::Resume => "resume",
            Command::End => "end",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionStatus as S;

    /// The table, spelled out: a change to it is a change of behaviour, seen here.
    #[test]
    fn which_status_takes_which_command() {
        let table: &[(Command, &[S])] = &[
            (
                Command::Send,
                &[S::Creating, S::Ready, S::Idle, S::Busy, S::Suspended],
            ),
            (Command::Abort, &[S::Busy]),
            (
                Command::Restart,
                &[
                    S::Creating,
                    S::Ready,
                    S::Idle,
                    S::Busy,
                    S::Suspended,
                    S::Failed,
                ],
            ),
            (Command::Suspend, &[S::Creating, S::Ready, S::Idle, S::Busy]),
            (Command::Resume, &[S::Suspended]),
            (
                Command::End,
                &[
                    S::Creating,
                    S::Ready,
                    S::Idle,
                    S::Busy,
                    S::Suspended,
                    S::Failed,
                ],
            ),
        ];
        for (command, statuses) in table {
            let mut want = statuses.to_vec();
            want.sort();
            assert_eq!(command.accepted(), want, "{command:?}");
        }
        assert_eq!(table.len(), Command::ALL.len());
    }

    /// A command that moves a session puts it in a phase of transition (so that the reconciler
    /// leaves it to its task), and the task it queues drives the session's life (so that a task
    /// that gives up for good fails the session instead of leaving it in that phase).
    #[test]
    fn a_moving_command_is_in_transition_until_its_task_acts() {
        for command in Command::ALL {
            match command.lands_in() {
                Some((_, phase)) => {
                    assert!(phase.in_transition(), "{command:?} lands in {phase}");
                    assert!(command.task().drives_lifecycle(), "{command:?}");
                }
                None => assert!(!command.task().drives_lifecycle(), "{command:?}"),
            }
        }
        assert_eq!(
            Phase::IN_TRANSITION.len(),
            Command::ALL
                .iter()
                .filter_map(|c| c.lands_in())
                .map(|(_, p)| p)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            "every phase of transition is some command's"
        );
    }
}
