//! The real cockpit in a terminal: a tmux server of the bench's own (its own socket, killed when
//! dropped) whose one pane runs the `agentdeck` binary, and what `/proc` says of a process.

use std::process::Command;
use std::time::{Duration, Instant};

/// Whether tmux can be run here (the benches that need it skip themselves without it).
pub fn installed() -> bool {
    Command::new("tmux").arg("-V").output().is_ok()
}

/// A tmux server of our own (its own socket), killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A server on socket `name` with one session, `cockpit`, of `width` x `height`, whose pane
    /// holds a placeholder: the program is started later with [`Tmux::respawn`], so that the
    /// tmux server's own start is never timed.
    pub fn start(name: &str, width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("{name}-{}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let placeholder = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-x",
                &w,
                "-y",
                &h,
                "-s",
                "cockpit",
                "sleep 600",
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("start tmux");
        assert!(placeholder.success(), "tmux new-session failed");
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Replaces the pane's program with `program` (a shell command line).
    pub fn respawn(&self, program: &str) {
        let respawned = self
            .cmd()
            .args(["respawn-pane", "-k", "-t", "cockpit", program])
            .status()
            .expect("start the cockpit");
        assert!(respawned.success(), "tmux respawn-pane failed");
    }

    /// What the pane shows now.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "cockpit"])
    }

    /// Types `keys` (tmux key names: `Enter`, `q`, …) into the pane.
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "cockpit"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The pid of the pane's program (the program itself when started with `exec`).
    pub fn pane_pid(&self) -> u32 {
        self.run(&["display-message", "-p", "-t", "cockpit", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("the pane's pid")
    }

    /// Polls the pane every few ms until `done` holds for its screen; the screen then, or a
    /// panic that shows the last screen after `within`.
    pub fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if started.elapsed() > within {
                panic!("the cockpit did not show {what} within {within:?}; its screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let socket = self.run(&["display-message", "-p", "#{socket_path}"]);
        let _ = self
            .cmd()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
        // tmux leaves its socket file behind
        let socket = socket.trim();
        if !socket.is_empty() {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// `env`'s arguments for a home of its own under `home` (no real home, no settings of the
/// developer running the bench: a `--server` or token of theirs must not reach the program).
pub fn home_env(home: &std::path::Path) -> String {
    let home = home.display();
    // (`env` takes its -u options before the assignments)
    format!(
        "-u AGENTDECK_SERVER -u AGENTDECK_TOKEN -u AGENTDECK_CONFIG -u AGENTDECK_CA_FILE \
         -u AGENTDECK_DATABASE_URL HOME={home} XDG_CONFIG_HOME={home}/config \
         XDG_DATA_HOME={home}/data XDG_STATE_HOME={home}/state XDG_CACHE_HOME={home}/cache"
    )
}

/// VmRSS and VmHWM of `pid`, in KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Whether `pid` is still running (a process that ended but was not reaped yet is not).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Waits (at most 5 s) for the `agentdeck` process `pid` to end, then kills it if it did not:
/// the cockpit ends with its terminal, but a bench must never leave one behind.
pub fn make_sure_ended(pid: u32) {
    let gone = Instant::now();
    while running(pid) && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if running(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "agentdeck")
    {
        // SAFETY: signals the cockpit this bench started (checked by its name above).
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}
