//! Processes and process groups: spawning a sandbox's agent in a session (and group) of its
//! own, reading `/proc/<pid>/stat`, and stopping a whole group (SIGTERM, then SIGKILL).

use super::launch::Launch;
use crate::runtime::RuntimeError;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How often a stopping group is looked at.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a group has to go after SIGKILL before we give up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How a run of the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
    /// Not our child (adopted from an earlier agentdeck): the status cannot be read.
    Unknown,
}

impl ExitInfo {
    pub fn from_status(status: ExitStatus) -> ExitInfo {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitInfo::Code(code),
            (None, Some(signal)) => ExitInfo::Signal(signal),
            (None, None) => ExitInfo::Unknown,
        }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitInfo::Code(code) => write!(f, "exit code {code}"),
            ExitInfo::Signal(signal) => write!(f, "killed by signal {signal}"),
            ExitInfo::Unknown => write!(
                f,
                "exited (status unknown: it was started by an earlier agentdeck)"
            ),
        }
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: R, S, D, Z, X …
    pub state: char,
    /// Field 5.
    pub pgid: i32,
    /// Field 22: clock ticks after boot.
    pub start_time: u64,
}

impl ProcStat {
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process is there, is not a zombie, and (when known) started when we recorded.
pub fn is_alive(pid: i32, start_time: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some(stat) => !stat.is_dead() && start_time.is_none_or(|t| t == stat.start_time),
        // No /proc (not Linux): ask the kernel whether the pid exists.
        None if !Path::new("/proc/self/stat").exists() => signal(pid, 0),
        None => false,
    }
}

/// Whether a process from an old record may be taken over: alive, started when recorded,
/// leading its own group, and started by agentdeck for this session (its environment says so).
/// A sandbox's folder is writable by its agent, so its record is not trusted on its own.
pub fn is_adoptable(pid: i32, start_time: u64, session_id: &str) -> bool {
    let Some(stat) = proc_stat(pid) else {
        return false;
    };
    if stat.is_dead() || stat.start_time != start_time || stat.pgid != pid {
        return false;
    }
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("AGENTDECK_SESSION_ID={session_id}");
    environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
}

/// Sends `sig` to one process; true when it was delivered.
fn signal(pid: i32, sig: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid is positive so this never
    // addresses a group or every process.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Sends `sig` to every process of group `pgid`; true when some process got it.
fn signal_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg(2) has no memory-safety preconditions; pgid > 1 never means "our own
    // group" (0) or init's.
    unsafe { libc::killpg(pgid, sig) == 0 }
}

/// Whether any live (non-zombie) process is left in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if !signal_group(pgid, 0) {
        return false;
    }
    // The kernel also counts zombies; look for a member that is not one.
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .any(|s| s.pgid == pgid && !s.is_dead())
}

/// The group's leader is no longer the process we started (its pid was reused by a process of
/// its own group): signalling the group would hit a stranger.
fn leader_replaced(pgid: i32, start_time: Option<u64>) -> bool {
    match (proc_stat(pgid), start_time) {
        (Some(stat), Some(t)) => stat.start_time != t && stat.pgid == pgid,
        _ => false,
    }
}

async fn wait_until_gone(pgid: i32, deadline: Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// Stops the whole process group led by `pgid`: SIGTERM, then SIGKILL after `grace`.
/// A group that is already gone is fine.
pub async fn stop_group(
    pgid: i32,
    start_time: Option<u64>,
    grace: Duration,
) -> Result<(), RuntimeError> {
    if leader_replaced(pgid, start_time) {
        tracing::warn!(pgid, "process group leader was replaced; not signalling it");
        return Ok(());
    }
    if !signal_group(pgid, libc::SIGTERM) {
        return Ok(());
    }
    tracing::debug!(pgid, "sent SIGTERM to the sandbox's process group");
    if wait_until_gone(pgid, Instant::now() + grace).await {
        return Ok(());
    }
    tracing::info!(
        pgid,
        ?grace,
        "process group still running after SIGTERM; sending SIGKILL"
    );
    signal_group(pgid, libc::SIGKILL);
    if wait_until_gone(pgid, Instant::now() + KILL_WAIT).await {
        Ok(())
    } else {
        Err(RuntimeError::Transient(format!(
            "process group {pgid} is still running after SIGKILL"
        )))
    }
}

/// Sends SIGKILL to what is left of a group whose leader has exited (its children).
pub fn kill_leftovers(pgid: i32) {
    if group_alive(pgid) && signal_group(pgid, libc::SIGKILL) {
        tracing::info!(pgid, "killed processes left over in the sandbox's group");
    }
}

/// A started agent process.
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
    pub start_time: Option<u64>,
}

/// Starts the agent: in the working folder, in a session and process group of its own, with
/// stdin from /dev/null and stdout and stderr appended to `log`, and only `launch.env`.
pub fn spawn(launch: &Launch, workdir: &Path, log: &Path) -> Result<Spawned, RuntimeError> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| {
                RuntimeError::Failed(format!("cannot open the log file {}: {e}", log.display()))
            })
    };
    let stdout = open_log()?;
    let stderr = open_log()?;
    let mut command = Command::new(&launch.program);
    command
        .arg0(&launch.argv[0])
        .args(&launch.argv[1..])
        .current_dir(workdir)
        .env_clear()
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent; it makes the
    // child a session and group leader, so the group can be signalled as one and a terminal's
    // hangup or Ctrl-C does not reach it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        RuntimeError::Failed(format!("cannot start {}: {e}", launch.program.display()))
    })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| RuntimeError::Failed("the agent process vanished as it started".into()))?;
    // The start time is set at fork and survives exec, so it can be read now.
    let start_time = proc_stat(pid).map(|s| s.start_time);
    Ok(Spawned {
        child,
        pid,
        start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        let stat = parse_stat(text).expect("parses");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgid, 4242);
        assert_eq!(stat.start_time, 987654);
        assert!(parse_stat("12 (x) S 1").is_none());
    }

    #[test]
    fn our_own_process_is_alive_and_readable() {
        let pid = std::process::id() as i32;
        let stat = proc_stat(pid).expect("own stat");
        assert!(is_alive(pid, Some(stat.start_time)));
        assert!(!is_alive(pid, Some(stat.start_time + 1)));
    }

    #[test]
    fn exits_read_as_people_write_them() {
        assert_eq!(ExitInfo::Code(1).to_string(), "exit code 1");
        assert_eq!(ExitInfo::Signal(9).to_string(), "killed by signal 9");
    }
}
