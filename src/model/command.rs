//! The commands an operator can give a session (from the cockpit, the CLI or REST) and which
//! statuses accept each: the one place that says so. The core checks it before writing (and
//! writes only if the status still accepts it), the cockpit offers only what it accepts.

use super::SessionStatus;

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
}
