//! A fleet streaming at once into Postgres: N live sessions whose harnesses all stream turns at
//! the same time, followed by one control core, then by two sharing them.
//!
//! Each stand-in harness (benches/support, `BusHarness`: one bus per sandbox) streams what an
//! agent mid-turn sends: text deltas at 30 to 60 a second (fixed per session), a `bash` tool
//! call every 2 to 5 seconds (pending, running 0.2 s later, completed with 20 lines of output a
//! second after that), and every 15 seconds its message finishes and a new one starts. The
//! core is the real one (`Core::with_store` over the real Postgres store, its worker as `serve`
//! runs it: heartbeat, shares, one pump per session, the grouped writes).
//!
//! Measured over a window after a warm-up: the events the harnesses sent and the events stored
//! per second; **stored lag** (an event sent by its harness → its row committed, seen by an
//! observer process-part of its own: another store connection's change feed, whose notice for a
//! session's events says up to which seq they are stored); the CPU of this process (the cores,
//! and also the stand-in harnesses and the observer, which are light) and of the Postgres
//! backends of the database, per 1000 events stored; and the transactions committed per second.
//!
//! Not a criterion benchmark (it measures a steady state, not an iteration). Run with
//! `cargo bench --bench fleet_ingest` (about 4 minutes); see BENCHMARKS.md. Under
//! `cargo test --all-targets` it runs once, 10 sessions on one core and 6 on two for 2 s each, as
//! a smoke test that fails if events are lost.

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::{Change, Core};
use agentdeck::harness::HarnessEvent;
use agentdeck::model::{CoreKind, MessageRole, ToolStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

/// How often the stand-in harnesses are driven (each sends what is due since the last tick).
const TICK: Duration = Duration::from_millis(10);
/// A message finishes and the next starts this often.
const MESSAGE_EVERY: Duration = Duration::from_secs(15);

/// What one stand-in harness has sent and not yet seen stored: (its index in the stream, when).
#[derive(Default)]
struct Sent {
    /// The session's last event seq before the stream began: event k is stored as base + k.
    base: i64,
    pending: VecDeque<(i64, Instant)>,
}

/// The observed lags, and the events seen stored in the window.
#[derive(Default)]
struct Seen {
    lags: Vec<Duration>,
    stored_in_window: u64,
    resyncs: u64,
}

/// One session's stand-in harness, mid-turn.
struct Streamer {
    index: usize,
    /// The open message's id, and its text part's.
    m: String,
    text: String,
    bus: UnboundedSender<HarnessEvent>,
    log: Arc<Mutex<Sent>>,
    sent: i64,
    deltas_per_s: f64,
    deltas_sent: u64,
    tool_every: Duration,
    next_tool: Duration,
    tool: Option<(u32, Duration)>,
    tools: u32,
    message: u32,
    next_message: Duration,
}

const WORDS: [&str; 12] = [
    "the ", "test ", "passes ", "now ", "because ", "we ", "fixed ", "a ", "race ", "in ",
    "module ", "42, ",
];

impl Streamer {
    fn send(&mut self, event: HarnessEvent) {
        self.sent += 1;
        if let Ok(mut log) = self.log.lock() {
            log.pending.push_back((self.sent, Instant::now()));
        }
        let _ = self.bus.send(event);
    }

    fn start_message(&mut self) {
        self.m = format!("msg_{}_{}", self.index, self.message);
        self.text = format!("{}_text", self.m);
        let m = self.m.clone();
        self.send(message_updated(&m, MessageRole::Assistant, false));
        self.send(step_part(&m, &format!("{m}_start"), false));
        self.send(text_part(&m, &self.text.clone(), "", false));
    }

    /// Sends what is due at `t` since the stream began.
    fn tick(&mut self, t: Duration) {
        let due = (t.as_secs_f64() * self.deltas_per_s) as u64;
        while self.deltas_sent < due {
            let w = WORDS[(self.deltas_sent as usize * 7 + self.index) % WORDS.len()];
            self.deltas_sent += 1;
            let event = delta(&self.m, &self.text, w);
            self.send(event);
        }
        if t < self.next_tool && self.tool.is_none() && t < self.next_message {
            return;
        }
        let m = self.m.clone();
        if t >= self.next_tool {
            self.tools += 1;
            self.tool = Some((self.tools, self.next_tool));
            self.next_tool += self.tool_every;
            let p = format!("{m}_tool{}", self.tools);
            self.send(tool_part(&m, &p, ToolStatus::Pending, ""));
        }
        if let Some((n, since)) = self.tool {
            let p = format!("{m}_tool{n}");
            let age = t.saturating_sub(since);
            if age >= Duration::from_millis(1200) {
                let output: String = (0..20)
                    .map(|l| format!("test module{n}::case_{l} ... ok\n"))
                    .collect();
                self.send(tool_part(&m, &p, ToolStatus::Completed, &output));
                self.tool = None;
            } else if age >= Duration::from_millis(200) && age < Duration::from_millis(200) + TICK {
                self.send(tool_part(&m, &p, ToolStatus::Running, ""));
            }
        }
        if t >= self.next_message && self.tool.is_none() {
            self.send(message_updated(&m, MessageRole::Assistant, true));
            self.message += 1;
            self.next_message += MESSAGE_EVERY;
            self.start_message();
        }
    }
}

struct Run {
    sessions: usize,
    cores: usize,
    window: Duration,
    sent: u64,
    stored: u64,
    lags: Vec<Duration>,
    resyncs: u64,
    /// This process's CPU but the driver thread's: the cores'.
    cores_cpu: Duration,
    /// The stand-in harnesses' and the observer's.
    driver_cpu: Duration,
    server_cpu: Duration,
    transactions: i64,
    shares: Vec<i64>,
    unstored_at_end: usize,
}

async fn measure(n: usize, cores: usize, warmup: Duration, window: Duration) -> Run {
    agentdeck::net::ensure_crypto();
    let db = PgDb::create().await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg_admin_url())
        .await
        .expect("the admin database");
    let root = tempfile::tempdir().expect("a temp dir");
    let store = agentdeck::store::open(&db.url)
        .await
        .expect("open the store");
    store.migrate().await.expect("migrate");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(live_session(&store, &format!("streaming {i}")).await);
    }
    let harness = Arc::new(BusHarness::default());
    let buses: Vec<_> = ids.iter().map(|id| harness.bus(*id)).collect();
    let runtime = Arc::new(InstantRuntime::default());
    let mut running = Vec::new();
    let mut followers = Vec::new();
    for c in 0..cores {
        let store = if c == 0 {
            store.clone()
        } else {
            agentdeck::store::open(&db.url)
                .await
                .expect("open the store")
        };
        let core = Core::with_store(
            config("", &db.url, root.path()),
            store,
            runtime.clone(),
            harness.clone(),
        );
        core.sync_agents().await.expect("sync agents");
        running.push(agentdeck::core::worker::spawn(
            core.clone(),
            CoreKind::Serve,
        ));
        followers.push(core);
    }
    // Every session followed, shared among the cores, every bus subscribed.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let fleet = followers[0].fleet().await.expect("read the fleet");
        let shares: Vec<i64> = fleet.working().map(|c| c.sessions).collect();
        let shared = shares.len() == cores && shares.iter().all(|s| *s >= (n / cores) as i64 - 1);
        if shares.iter().sum::<i64>() == n as i64 && shared && harness.unclaimed() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sessions not taken up by {cores} cores in 180 s: {shares:?}, {} buses unclaimed",
            harness.unclaimed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let logs: Vec<Arc<Mutex<Sent>>> = ids.iter().map(|_| Arc::default()).collect();
    for (i, id) in ids.iter().enumerate() {
        let session = store
            .get_session(*id)
            .await
            .expect("read a session")
            .expect("the session");
        if let Ok(mut log) = logs[i].lock() {
            log.base = session.last_event_seq;
        }
    }

    // The stand-in harnesses and the observer run on a thread of their own, whose CPU is
    // measured apart: what remains of this process's is the cores'.
    let began = Instant::now() + Duration::from_millis(500);
    let (window_from, window_to) = (began + warmup, began + warmup + window);
    let driver = {
        let (url, ids, logs) = (db.url.clone(), ids.clone(), logs.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the driver's runtime")
                .block_on(drive(url, ids, buses, logs, began, window_from, window_to))
        })
    };
    tokio::time::sleep_until(window_from.into()).await;
    let (cpu0, srv0, tx0) = (
        process_cpu(),
        server_cpu(&admin, &db.name).await,
        committed(&admin, &db.name).await,
    );
    tokio::time::sleep_until(window_to.into()).await;
    let (cpu1, srv1) = (process_cpu(), server_cpu(&admin, &db.name).await);
    // Busy backends report their counts as they go idle, at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tx1 = committed(&admin, &db.name).await;
    let driven = tokio::task::spawn_blocking(move || driver.join())
        .await
        .expect("join the driver")
        .expect("the driver ran");
    let shares = followers[0]
        .fleet()
        .await
        .map(|f| f.working().map(|c| c.sessions).collect())
        .unwrap_or_default();
    for worker in running {
        worker.stop(Duration::from_secs(10)).await;
    }
    admin.close().await;
    Run {
        sessions: n,
        cores,
        window,
        sent: driven.sent,
        stored: driven.seen.stored_in_window,
        lags: driven.seen.lags,
        resyncs: driven.seen.resyncs,
        cores_cpu: cpu1.saturating_sub(cpu0).saturating_sub(driven.cpu),
        driver_cpu: driven.cpu,
        server_cpu: srv1.saturating_sub(srv0),
        transactions: tx1 - tx0,
        shares,
        unstored_at_end: driven.unstored,
    }
}

/// What the driver thread saw.
struct Driven {
    sent: u64,
    seen: Seen,
    unstored: usize,
    /// The driver thread's CPU over the window.
    cpu: Duration,
}

/// Streams from every stand-in harness until `window_to`, observing what is stored, then waits
/// (up to a minute) for the rest to be stored.
async fn drive(
    url: String,
    ids: Vec<Uuid>,
    buses: Vec<UnboundedSender<HarnessEvent>>,
    logs: Vec<Arc<Mutex<Sent>>>,
    began: Instant,
    window_from: Instant,
    window_to: Instant,
) -> Driven {
    // The observer: a store connection of its own, as another process would have.
    let observer = agentdeck::store::open(&url)
        .await
        .expect("the observer's store");
    let mut feed = observer.subscribe();
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watching = {
        let (logs, seen) = (logs.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(change) = feed.next().await {
                let (session, seq) = match change {
                    Change::Event { session, seq } => (session, seq),
                    Change::Resync => {
                        if let Ok(mut seen) = seen.lock() {
                            seen.resyncs += 1;
                        }
                        continue;
                    }
                    _ => continue,
                };
                let Some(&i) = index.get(&session) else {
                    continue;
                };
                let now = Instant::now();
                let (Ok(mut log), Ok(mut seen)) = (logs[i].lock(), seen.lock()) else {
                    continue;
                };
                let upto = seq - log.base;
                while log.pending.front().is_some_and(|(k, _)| *k <= upto) {
                    let Some((_, sent)) = log.pending.pop_front() else {
                        break;
                    };
                    if sent >= window_from && sent < window_to {
                        seen.lags.push(now - sent);
                    }
                    if now >= window_from && now < window_to {
                        seen.stored_in_window += 1;
                    }
                }
            }
        })
    };
    tokio::time::sleep_until(began.into()).await;
    let mut streamers: Vec<Streamer> = buses
        .into_iter()
        .enumerate()
        .map(|(i, bus)| Streamer {
            index: i,
            m: String::new(),
            text: String::new(),
            bus,
            log: logs[i].clone(),
            sent: 0,
            deltas_per_s: 30.0 + (i % 31) as f64,
            deltas_sent: 0,
            tool_every: Duration::from_millis(2000 + (i as u64 * 377) % 3000),
            next_tool: Duration::from_millis((i as u64 * 131) % 2000),
            tool: None,
            tools: 0,
            message: 0,
            next_message: MESSAGE_EVERY + Duration::from_millis((i as u64 * 53) % 5000),
        })
        .collect();
    for s in &mut streamers {
        s.start_message();
    }
    let mut sent_in_window = 0u64;
    let mut cpu_from = None;
    let mut next = began;
    while Instant::now() < window_to {
        next += TICK;
        tokio::time::sleep_until(next.into()).await;
        let t = began.elapsed();
        let before: i64 = streamers.iter().map(|s| s.sent).sum();
        for s in &mut streamers {
            s.tick(t);
        }
        if Instant::now() >= window_from {
            cpu_from.get_or_insert_with(thread_cpu);
            sent_in_window += (streamers.iter().map(|s| s.sent).sum::<i64>() - before) as u64;
        }
    }
    let cpu = thread_cpu().saturating_sub(cpu_from.unwrap_or_default());
    // Everything sent is stored in the end (a smoke run fails otherwise).
    let drain = Instant::now() + Duration::from_secs(60);
    let unstored = loop {
        let left: usize = logs
            .iter()
            .map(|l| l.lock().map(|l| l.pending.len()).unwrap_or(0))
            .sum();
        if left == 0 || Instant::now() > drain {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watching.abort();
    let seen = std::mem::take(&mut *seen.lock().expect("the observer's figures"));
    Driven {
        sent: sent_in_window,
        seen,
        unstored,
        cpu,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("fleet_ingest: test");
        }
        return;
    }
    let only: Option<usize> = std::env::var("FLEET_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok());
    let (runs, warmup, window): (Vec<(usize, usize)>, _, _) = if full_size() {
        let sizes = only.map_or(vec![100, 300, 1000], |n| vec![n]);
        let mut runs: Vec<(usize, usize)> = sizes.iter().map(|&n| (n, 1)).collect();
        runs.extend(sizes.iter().map(|&n| (n, 2)));
        (runs, Duration::from_secs(8), Duration::from_secs(20))
    } else {
        (
            vec![(10, 1), (6, 2)],
            Duration::from_millis(500),
            Duration::from_secs(2),
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for (n, cores) in runs {
        let mut run = rt.block_on(measure(n, cores, warmup, window));
        run.lags.sort();
        let secs = run.window.as_secs_f64();
        let per_k =
            |cpu: Duration| 1000.0 * cpu.as_secs_f64() * 1000.0 / (run.stored.max(1) as f64);
        println!(
            "fleet_ingest: {} sessions, {} core(s) (shares {:?}), {:.0?}: sent {:.0} events/s, \
             stored {:.0}/s; stored lag p50 {:.1?} p90 {:.1?} p99 {:.1?} max {:.1?} ({} samples); \
             CPU of the core(s) {:.0}% of a core ({:.1} ms per 1k events), of Postgres {:.0}% \
             ({:.1} ms per 1k), of the stand-in harnesses and observer {:.0}%; \
             {:.0} transactions/s; {} change-feed resyncs; {} unstored at the end",
            run.sessions,
            run.cores,
            run.shares,
            run.window,
            run.sent as f64 / secs,
            run.stored as f64 / secs,
            quantile(&run.lags, 0.5),
            quantile(&run.lags, 0.9),
            quantile(&run.lags, 0.99),
            run.lags.last().copied().unwrap_or_default(),
            run.lags.len(),
            100.0 * run.cores_cpu.as_secs_f64() / secs,
            per_k(run.cores_cpu),
            100.0 * run.server_cpu.as_secs_f64() / secs,
            per_k(run.server_cpu),
            100.0 * run.driver_cpu.as_secs_f64() / secs,
            run.transactions as f64 / secs,
            run.resyncs,
            run.unstored_at_end,
        );
        assert_eq!(
            run.unstored_at_end, 0,
            "every event the harnesses sent is stored in the end"
        );
    }
}
