//! The real cockpit's memory with 10k and 100k sessions, and its start-to-first-frame, on the
//! store itself (direct) and as a client of `agentdeck serve` (remote), side by side.
//!
//! Not a criterion benchmark (memory is not a time): it prints what it measures. For each size
//! it seeds a SQLite store with that many sessions through the store API (statuses in turn,
//! no sandboxes, so the cockpit's worker finds nothing to do), starts `agentdeck serve
//! --no-worker` on that file (a home of its own, a token that sees every team), then runs the
//! `agentdeck` binary built by this `cargo bench` (the bench profile) with no subcommand, in a
//! home of its own, under tmux at 160x48 on a tmux server of its own, in turn:
//!
//! - direct: the cockpit on the file and the local runtime, its worker included, as an
//!   operator with the store's credentials runs it;
//! - remote: `--server http://127.0.0.1:PORT` with the token in `AGENTDECK_TOKEN`, reading
//!   everything through serve's REST API (`GET /api/sessions`, 1000 a page).
//!
//! For each run:
//!
//! - start-to-first-frame: from asking tmux to start the program in its pane to the first
//!   capture of the pane (polled every few ms) that shows a session row;
//! - loaded: to the first capture whose top bar counts all N sessions and whose list is no
//!   longer loading (every page read; the ended ones are hidden from the list);
//! - VmRSS and VmHWM of the cockpit's process (never serve's) from /proc/PID/status at the
//!   first frame, and once loaded and settled (VmRSS unchanged for a second).
//!
//! Several runs per size and cockpit; medians are printed, and serve's own memory after them.
//! Run with `cargo bench --bench cockpit_rss`; see BENCHMARKS.md. Under `cargo test
//! --all-targets` it runs once of each at 200 sessions (skipped if tmux is not installed). The
//! tmux server and the cockpit are stopped after each run, serve after each size.

#[path = "support/mod.rs"]
mod support;

use agentdeck::model::{NewSession, Phase, SessionPatch, SessionStatus};
use std::path::Path;
use std::time::{Duration, Instant};
use support::served::BINARY;
use support::tmux::Tmux;
use support::*;

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

/// Which cockpit a run starts.
#[derive(Clone, Copy)]
enum Cockpit<'a> {
    /// On the store itself (`AGENTDECK_DATABASE_URL`), its worker included.
    Direct { db: &'a str },
    /// A client of the `serve` at `url` (`--server`, the token in `AGENTDECK_TOKEN`).
    Remote { url: &'a str },
}

impl Cockpit<'_> {
    fn name(self) -> &'static str {
        match self {
            Cockpit::Direct { .. } => "direct",
            Cockpit::Remote { .. } => "remote",
        }
    }

    /// The pane's command line, in a home of its own under `home`.
    fn program(self, home: &Path) -> String {
        let env = tmux::home_env(home);
        match self {
            Cockpit::Direct { db } => format!(
                "exec env {env} AGENTDECK_DATABASE_URL={db} AGENTDECK_RUNTIME=local {BINARY}"
            ),
            Cockpit::Remote { url } => format!(
                "exec env {env} AGENTDECK_TOKEN={} {BINARY} --server {url}",
                served::TOKEN
            ),
        }
    }
}

struct Run {
    first_frame: Duration,
    loaded: Duration,
    rss_first: u64,
    hwm_first: u64,
    rss_settled: u64,
    hwm_settled: u64,
}

/// One cockpit run (in a home under `root`) until it shows all `n` sessions and its memory
/// settled.
fn run_once(root: &Path, cockpit: Cockpit, n: usize, attempt: usize) -> Run {
    let tmux = Tmux::start(
        &format!("agentdeck-bench-{}-{attempt}", cockpit.name()),
        160,
        48,
    );
    let started = Instant::now();
    tmux.respawn(&cockpit.program(root));
    // Every page read: the top bar counts all `n`, and the list's title is no longer
    // "loading" (the seeded ended sessions are hidden: it counts them apart).
    let all_counted = format!(" agentdeck {n} sessions ");
    let all_read = |screen: &str| {
        screen.contains(&all_counted)
            && screen.contains(" Sessions (")
            && !screen.contains("loading…")
    };
    let mut first_frame = None;
    let mut pid = 0u32;
    let (mut rss_first, mut hwm_first) = (0, 0);
    let loaded = loop {
        let screen = tmux.screen();
        if first_frame.is_none() && screen.contains("fix the flaky test") {
            first_frame = Some(started.elapsed());
            pid = tmux.pane_pid();
            (rss_first, hwm_first) = tmux::memory(pid);
        }
        if first_frame.is_some() && all_read(&screen) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!(
                "the {} cockpit did not show {n} sessions within 60 s; its screen:\n{screen}",
                cockpit.name()
            );
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "agentdeck", "pid {pid} is the cockpit");
    let (rss_settled, hwm_settled) = settled_memory(pid);
    drop(tmux);
    // The cockpit ends with its terminal; make sure of it (it is our own child's child).
    tmux::make_sure_ended(pid);
    Run {
        first_frame: first_frame.unwrap_or_default(),
        loaded,
        rss_first,
        hwm_first,
        rss_settled,
        hwm_settled,
    }
}

/// VmRSS and VmHWM of `pid` once VmRSS stayed the same for a second (at most 10 s; a tenth of
/// that in a smoke run).
fn settled_memory(pid: u32) -> (u64, u64) {
    let still = if full_size() {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let mut last = tmux::memory(pid).0;
    let settle_from = Instant::now();
    let mut still_since = Instant::now();
    while still_since.elapsed() < still && settle_from.elapsed() < still * 10 {
        std::thread::sleep(Duration::from_millis(100));
        let now = tmux::memory(pid).0;
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    tmux::memory(pid)
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

fn report_run(cockpit: &str, n: usize, attempt: usize, r: &Run, pages: u64) {
    let read = if pages > 0 {
        format!(" ({pages} × GET /api/sessions)")
    } else {
        String::new()
    };
    eprintln!(
        "cockpit_rss: {cockpit}, {n} sessions, run {}: first frame {}, all loaded {}{read}; \
         at first frame VmRSS {} (VmHWM {}); loaded and settled VmRSS {} (VmHWM {})",
        attempt + 1,
        ms(r.first_frame),
        ms(r.loaded),
        mib(r.rss_first),
        mib(r.hwm_first),
        mib(r.rss_settled),
        mib(r.hwm_settled),
    );
}

/// The medians of `runs`; the median settled VmRSS, for comparing.
fn report(cockpit: &str, n: usize, all: &[Run]) -> u64 {
    let of = |f: fn(&Run) -> Duration| all.iter().map(f).collect::<Vec<_>>();
    let kib = |f: fn(&Run) -> u64| median(all.iter().map(f).collect());
    let firsts = of(|r| r.first_frame);
    println!(
        "cockpit_rss: {cockpit}, {n} sessions, median of {} run(s): start to first frame {} \
         (min {}, max {}), all loaded {} (min {}, max {}); VmRSS at first frame {}, loaded \
         and settled {}; VmHWM {}",
        all.len(),
        ms(median(firsts.clone())),
        ms(firsts.iter().copied().min().unwrap_or_default()),
        ms(firsts.iter().copied().max().unwrap_or_default()),
        ms(median(of(|r| r.loaded))),
        ms(of(|r| r.loaded).into_iter().min().unwrap_or_default()),
        ms(of(|r| r.loaded).into_iter().max().unwrap_or_default()),
        mib(kib(|r| r.rss_first)),
        mib(kib(|r| r.rss_settled)),
        mib(kib(|r| r.hwm_settled)),
    );
    kib(|r| r.rss_settled)
}

/// `runs` runs of each cockpit over a store of `n` sessions, in turn (direct, remote, direct,
/// …) so that both see the same load; `serve` runs throughout, as a server does.
fn measure(n: usize, runs: usize) {
    let root = tempfile::tempdir().expect("a temp dir");
    let db = format!("sqlite://{}", root.path().join("agentdeck.db").display());
    let seeding = Instant::now();
    seed(&db, n);
    eprintln!(
        "cockpit_rss: seeded {n} sessions in {:.1?}",
        seeding.elapsed()
    );
    // Every team's sessions: the remote cockpit lists what the direct one does.
    let serve = served::Serve::start(&root.path().join("serve"), &db, agentdeck::api::ALL_TEAMS);
    let url = serve.url();
    let (mut direct, mut remote) = (Vec::new(), Vec::new());
    for attempt in 0..runs {
        for (cockpit, all) in [
            (Cockpit::Direct { db: &db }, &mut direct),
            (Cockpit::Remote { url: &url }, &mut remote),
        ] {
            let home = root
                .path()
                .join(format!("home-{}-{attempt}", cockpit.name()));
            std::fs::create_dir_all(&home).expect("a home");
            // The pages a remote cockpit read (1000 a request), to tell a start that read the
            // list twice from one that read it once.
            let pages_before = served::answered(serve.port, "/api/sessions");
            let r = run_once(&home, cockpit, n, attempt);
            let pages = served::answered(serve.port, "/api/sessions") - pages_before;
            report_run(cockpit.name(), n, attempt, &r, pages);
            all.push(r);
        }
    }
    let direct_rss = report("direct", n, &direct);
    let remote_rss = report("remote", n, &remote);
    let (serve_rss, serve_hwm) = tmux::memory(serve.pid());
    // What the remote cockpits asked for, all runs together (where a remote start's time goes).
    let asked: Vec<String> = served::requests(serve.port)
        .into_iter()
        .filter(|(what, _)| !what.contains("/healthz") && !what.contains("/metrics"))
        .map(|(what, count)| format!("{count} × {what}"))
        .collect();
    println!(
        "cockpit_rss: {n} sessions: remote / direct settled VmRSS {:.2}; serve (not counted \
         above) VmRSS {} (VmHWM {}); serve answered, over {runs} remote run(s): {}",
        remote_rss as f64 / direct_rss.max(1) as f64,
        mib(serve_rss),
        mib(serve_hwm),
        asked.join(", "),
    );
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
    if !tmux::installed() {
        eprintln!("cockpit_rss: tmux is not installed; skipped");
        return;
    }
    let sizes: &[(usize, usize)] = if full_size() {
        &[(10_000, 7), (100_000, 3)]
    } else {
        &[(200, 1)]
    };
    for &(n, runs) in sizes {
        measure(n, runs);
    }
}
