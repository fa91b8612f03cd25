//! The real cockpit's memory with 10k and 100k sessions, and its start-to-first-frame at 10k.
//!
//! Not a criterion benchmark (memory is not a time): it prints what it measures. For each size
//! it seeds a SQLite store with that many sessions through the store API (statuses in turn,
//! no sandboxes, so the cockpit's worker finds nothing to do), then runs the `agentdeck`
//! binary built by this `cargo bench` (the bench profile) with no subcommand (the cockpit, its
//! worker included, as an operator runs it) against that file and the local runtime, in a
//! home of its own, under tmux at 160x48 on a tmux server of its own.
//!
//! - start-to-first-frame: from asking tmux to start the program in its pane to the first
//!   capture of the pane (polled every few ms) that shows a session row;
//! - loaded: to the first capture whose title says `Sessions (N)` (every page read);
//! - VmRSS and VmHWM from /proc/PID/status at the first frame, and once loaded and settled
//!   (VmRSS unchanged for a second).
//!
//! Several runs per size; medians are printed. Run with `cargo bench --bench cockpit_rss`; see
//! BENCHMARKS.md. Under `cargo test --all-targets` it runs once at 200 sessions (skipped if
//! tmux is not installed). The tmux server and the cockpit are stopped after each run.

#[path = "support/mod.rs"]
mod support;

use agentdeck::model::{NewSession, Phase, SessionPatch, SessionStatus};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_agentdeck");

fn phase_of(status: SessionStatus) -> Phase {
    match status {
        SessionStatus::Creating => Phase::SandboxPending,
        SessionStatus::Ready => Phase::Ready,
        SessionStatus::Idle => Phase::Idle,
        SessionStatus::Busy => Phase::Busy,
        SessionStatus::Suspended => Phase::Suspended,
        SessionStatus::Dead => Phase::Dead,
        SessionStatus::Failed => Phase::Failed,
    }
}

/// `n` sessions in a new SQLite store at `url`.
fn seed(url: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let store = agentdeck::store::open(url).await.expect("open the store");
        store.migrate().await.expect("migrate");
        for i in 0..n {
            let s = store
                .insert_session(&NewSession {
                    agent_id: ["coder", "reviewer", "triage"][i % 3].into(),
                    team: ["red", "blue", "payments", "platform"][i % 4].into(),
                    title: format!("task {i}: fix the flaky test in module {}", i % 97),
                    ..Default::default()
                })
                .await
                .expect("insert a session");
            let status = SessionStatus::ALL[i % SessionStatus::ALL.len()];
            if status != SessionStatus::Creating {
                let mut patch = SessionPatch::status(status, phase_of(status));
                if status == SessionStatus::Failed {
                    patch.failure_reason = Some(Some(
                        "sandbox failed: ImagePullBackOff: Back-off pulling".into(),
                    ));
                }
                store
                    .update_session(s.id, &patch)
                    .await
                    .expect("set the session's status");
            }
        }
    });
}

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
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
fn running(pid: u32) -> bool {
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

struct Run {
    first_frame: Duration,
    loaded: Duration,
    rss_first: u64,
    hwm_first: u64,
    rss_settled: u64,
    hwm_settled: u64,
}

/// One cockpit run against the store at `db` (in a home under `root`).
fn run_once(root: &Path, db: &str, n: usize, attempt: usize) -> Run {
    let tmux = Tmux {
        socket: format!("agentdeck-bench-{}-{attempt}", std::process::id()),
    };
    // The pane first holds a placeholder, so the tmux server's start is not timed.
    let placeholder = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "48",
            "-s",
            "cockpit",
            "sleep 600",
        ])
        .env("TERM", "xterm-256color")
        .status()
        .expect("start tmux");
    assert!(placeholder.success(), "tmux new-session failed");
    let home = root.display().to_string();
    let program = format!(
        "exec env HOME={home} XDG_CONFIG_HOME={home}/config XDG_DATA_HOME={home}/data \
         XDG_STATE_HOME={home}/state XDG_CACHE_HOME={home}/cache AGENTDECK_DATABASE_URL={db} \
         AGENTDECK_RUNTIME=local {BINARY}"
    );
    let started = Instant::now();
    let respawned = tmux
        .cmd()
        .args(["respawn-pane", "-k", "-t", "cockpit", &program])
        .status()
        .expect("start the cockpit");
    assert!(respawned.success(), "tmux respawn-pane failed");
    let loaded_title = format!(" Sessions ({n}) ");
    let mut first_frame = None;
    let mut pid = 0u32;
    let (mut rss_first, mut hwm_first) = (0, 0);
    let loaded = loop {
        let screen = tmux.run(&["capture-pane", "-p", "-t", "cockpit"]);
        if first_frame.is_none() && screen.contains("fix the flaky test") {
            first_frame = Some(started.elapsed());
            pid = tmux
                .run(&["display-message", "-p", "-t", "cockpit", "#{pane_pid}"])
                .trim()
                .parse()
                .expect("the pane's pid");
            (rss_first, hwm_first) = memory(pid);
        }
        if first_frame.is_some() && screen.contains(&loaded_title) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the cockpit did not show {n} sessions within 60 s; its screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "agentdeck", "pid {pid} is the cockpit");
    // Settled: VmRSS unchanged for a second (at most 10 s; a tenth of that in a smoke run).
    let still = if full_size() {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let mut last = memory(pid).0;
    let settle_from = Instant::now();
    let mut still_since = Instant::now();
    while still_since.elapsed() < still && settle_from.elapsed() < still * 10 {
        std::thread::sleep(Duration::from_millis(100));
        let now = memory(pid).0;
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let (rss_settled, hwm_settled) = memory(pid);
    drop(tmux);
    // The cockpit ends with its terminal; make sure of it (it is our own child's child).
    let gone = Instant::now();
    while running(pid) && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if running(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "agentdeck")
    {
        // SAFETY: signals the cockpit this run started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    Run {
        first_frame: first_frame.unwrap_or_default(),
        loaded,
        rss_first,
        hwm_first,
        rss_settled,
        hwm_settled,
    }
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    // A test runner that lists tests first (nextest) sees one test, not ignored.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("cockpit_rss: test");
        }
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("cockpit_rss: tmux is not installed; skipped");
        return;
    }
    let sizes: &[(usize, usize)] = if full_size() {
        &[(10_000, 7), (100_000, 3)]
    } else {
        &[(200, 1)]
    };
    for &(n, runs) in sizes {
        let root = tempfile::tempdir().expect("a temp dir");
        let db = format!("sqlite://{}", root.path().join("agentdeck.db").display());
        let seeding = Instant::now();
        seed(&db, n);
        eprintln!(
            "cockpit_rss: seeded {n} sessions in {:.1?}",
            seeding.elapsed()
        );
        let mut all = Vec::new();
        for attempt in 0..runs {
            let home = root.path().join(format!("home-{attempt}"));
            std::fs::create_dir_all(&home).expect("a home");
            let r = run_once(&home, &db, n, attempt);
            eprintln!(
                "cockpit_rss: {n} sessions, run {}: first frame {}, all loaded {}; \
                 at first frame VmRSS {} (VmHWM {}); loaded and settled VmRSS {} (VmHWM {})",
                attempt + 1,
                ms(r.first_frame),
                ms(r.loaded),
                mib(r.rss_first),
                mib(r.hwm_first),
                mib(r.rss_settled),
                mib(r.hwm_settled),
            );
            all.push(r);
        }
        println!(
            "cockpit_rss: {n} sessions, median of {runs} run(s): start to first frame {} \
             (min {}, max {}), all loaded {}; VmRSS at first frame {}, loaded and \
             settled {}; VmHWM {}",
            ms(median(all.iter().map(|r| r.first_frame).collect())),
            ms(all.iter().map(|r| r.first_frame).min().unwrap_or_default()),
            ms(all.iter().map(|r| r.first_frame).max().unwrap_or_default()),
            ms(median(all.iter().map(|r| r.loaded).collect())),
            mib(median(all.iter().map(|r| r.rss_first).collect())),
            mib(median(all.iter().map(|r| r.rss_settled).collect())),
            mib(median(all.iter().map(|r| r.hwm_settled).collect())),
        );
    }
}
