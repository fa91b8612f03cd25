//! Telling a person what needs them while they look elsewhere: an agent that starts waiting for
//! them, fails, or finishes a turn. The app says what happened ([`notice`], from a session's
//! state before and after a change); the cockpit's loop rings the terminal's bell, sends a
//! desktop notification by escape sequence (OSC 9 and OSC 777, wrapped for tmux's passthrough),
//! and runs the `[notify] command` hook, as `[notify]` says ([`Notify`]).

use crate::config::NotifyConfig;
use crate::model::{NoticeKind as Event, Session, SessionStatus};
use crate::sanitize;
use std::time::Duration;
use uuid::Uuid;

/// Something worth a person's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub session: Uuid,
    pub title: String,
    pub event: Event,
    /// In words, for a notification (untrusted parts already cleaned).
    pub text: String,
}

/// What changed in a session from `before` to `after` that a person should hear of.
pub fn notice(before: &Session, after: &Session) -> Option<Notice> {
    let title = sanitize::line(&after.title);
    let (event, text) = if after.waiting > before.waiting {
        (Event::Waiting, format!("{title} waits for you"))
    } else if after.status == SessionStatus::Failed && before.status != SessionStatus::Failed {
        let why = after
            .failure_reason
            .as_deref()
            .map(sanitize::line)
            .unwrap_or_else(|| "no reason was recorded".into());
        (Event::Failed, format!("{title} failed: {why}"))
    } else if before.status == SessionStatus::Busy
        && matches!(after.status, SessionStatus::Idle | SessionStatus::Ready)
        && after.waiting == 0
    {
        (Event::Done, format!("{title} finished its turn"))
    } else {
        return None;
    };
    Some(Notice {
        session: after.id,
        title,
        event,
        text,
    })
}

/// How the cockpit tells a notice, from `[notify]`.
pub struct Notify {
    config: NotifyConfig,
    /// Inside tmux: escape sequences for the outer terminal go through its passthrough.
    in_tmux: bool,
}

impl Notify {
    pub fn new(config: NotifyConfig) -> Notify {
        Notify {
            config,
            in_tmux: std::env::var_os("TMUX").is_some(),
        }
    }

    pub fn wants(&self, event: Event) -> bool {
        match event {
            Event::Waiting => self.config.waiting,
            Event::Failed => self.config.failed,
            Event::Done => self.config.done,
        }
    }

    /// What to write to the terminal for `n` (between two frames): the bell, a desktop
    /// notification, both or nothing.
    pub fn terminal_bytes(&self, n: &Notice) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.wants(n.event) {
            return out;
        }
        if self.config.desktop {
            // The text goes inside an escape sequence: nothing in it may end or start one.
            let clean = |s: &str| -> String {
                s.chars().filter(|c| !c.is_control() && *c != ';').collect()
            };
            let (title, body) = (
                clean(&format!("agentdeck: {}", n.event.as_str())),
                clean(&n.text),
            );
            for osc in [
                format!("\x1b]9;{title}: {body}\x07"),
                format!("\x1b]777;notify;{title};{body}\x07"),
            ] {
                out.extend(self.passed_through(&osc));
            }
        }
        if self.config.bell {
            out.push(0x07);
        }
        out
    }

    /// `seq` as the outer terminal gets it: in tmux, wrapped in its passthrough (each escape
    /// doubled) so that tmux hands it on instead of eating it.
    fn passed_through(&self, seq: &str) -> Vec<u8> {
        if !self.in_tmux {
            return seq.as_bytes().to_vec();
        }
        let mut out = b"\x1bPtmux;".to_vec();
        for b in seq.bytes() {
            if b == 0x1b {
                out.push(0x1b);
            }
            out.push(b);
        }
        out.extend_from_slice(b"\x1b\\");
        out
    }

    /// Runs the hook for `n`, if one is configured, in the background (its output goes
    /// nowhere; one that hangs is killed after 30 s).
    pub fn run_hook(&self, n: &Notice) {
        let Some((program, args)) = self.config.command.split_first() else {
            return;
        };
        if !self.wants(n.event) {
            return;
        }
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env("AGENTDECK_SESSION", n.session.to_string())
            .env("AGENTDECK_TITLE", &n.title)
            .env("AGENTDECK_EVENT", n.event.as_str())
            .env("AGENTDECK_TEXT", &n.text)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let program = program.clone();
        match command.spawn() {
            Ok(mut child) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                        Ok(Ok(status)) if !status.success() => {
                            tracing::warn!(%program, %status, "the notify command failed")
                        }
                        Ok(_) => {}
                        Err(_) => tracing::warn!(%program, "the notify command hung; killed"),
                    }
                });
            }
            Err(e) => tracing::warn!(%program, error = %e, "cannot run the notify command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::sessions::tests::session;

    fn config() -> NotifyConfig {
        NotifyConfig {
            bell: true,
            desktop: true,
            command: Vec::new(),
            waiting: true,
            failed: true,
            done: true,
        }
    }

    #[test]
    fn what_changed_is_said_once_in_words() {
        let idle = session(1, "coder", SessionStatus::Idle);
        let mut busy = idle.clone();
        busy.status = SessionStatus::Busy;
        let mut waiting = busy.clone();
        waiting.waiting = 1;
        let mut failed = busy.clone();
        failed.status = SessionStatus::Failed;
        failed.failure_reason = Some("OOMKilled\x1b[2J".into());
        assert_eq!(notice(&idle, &busy), None, "starting a turn is no news");
        assert_eq!(
            notice(&busy, &waiting).map(|n| n.event),
            Some(Event::Waiting)
        );
        assert_eq!(notice(&waiting, &waiting), None, "still waiting: said once");
        assert_eq!(notice(&busy, &idle).map(|n| n.event), Some(Event::Done));
        let said = notice(&busy, &failed).unwrap();
        assert_eq!(said.event, Event::Failed);
        assert_eq!(said.text, "task 1 failed: OOMKilled");
        assert_eq!(notice(&failed, &failed), None);
    }

    #[test]
    fn the_terminal_gets_a_bell_and_a_notification_that_cannot_escape() {
        let n = Notice {
            session: Uuid::nil(),
            title: "t".into(),
            event: Event::Waiting,
            text: "deploy; waits\x07 for you".into(),
        };
        let plain = Notify {
            config: config(),
            in_tmux: false,
        };
        let bytes = String::from_utf8(plain.terminal_bytes(&n)).unwrap();
        assert_eq!(
            bytes,
            "\x1b]9;agentdeck: waiting: deploy waits for you\x07\
             \x1b]777;notify;agentdeck: waiting;deploy waits for you\x07\x07"
        );
        let tmux = Notify {
            config: config(),
            in_tmux: true,
        };
        let bytes = String::from_utf8(tmux.terminal_bytes(&n)).unwrap();
        assert!(
            bytes.starts_with("\x1bPtmux;\x1b\x1b]9;agentdeck: waiting"),
            "{bytes:?}"
        );
        assert!(bytes.ends_with("\x1b\\\x07"), "{bytes:?}");
        let quiet = Notify {
            config: NotifyConfig {
                waiting: false,
                ..config()
            },
            in_tmux: false,
        };
        assert!(quiet.terminal_bytes(&n).is_empty(), "turned off: nothing");
    }
}
