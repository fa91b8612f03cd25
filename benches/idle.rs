//! What a control core costs when nothing happens: a `serve`'s worker (its heartbeat, its roles,
//! ingest following every live session, the task loop) over 1, 200 and 1000 live sessions on
//! Postgres, with no turn running and no command given; and what an idle cockpit that is a
//! client of `serve` costs on the wire.
//!
//! Not a criterion benchmark (nothing is timed per iteration): it prints, over a window of
//! wall time after the core has taken every session up and settled, the CPU the core used (this
//! process: it runs nothing else meanwhile), the CPU of the Postgres backends of its database
//! (from /proc), and the transactions Postgres committed for that database per second
//! (`pg_stat_database`). The core is the real one (`Core::with_store` over the real store, its
//! worker as `serve` runs it); the sandboxes are a stand-in runtime that answers at once and
//! harnesses whose buses stay silent (benches/support).
//!
//! The wire (`wire`): the real `agentdeck serve --no-worker` on Postgres with 10 idle sessions
//! of one team, and the real cockpit (`agentdeck --server http://127.0.0.1:PORT`, that team's
//! token) in tmux at 160x48, left alone once it shows them: on its sessions view, then with a
//! session's transcript open (its live-text stream too). Over a window of 60 s: the bytes on
//! every TCP connection between the two, each way, as the kernel counts them on serve's end
//! (`ss -ti`: TCP payload, `bytes_sent` / `bytes_received`, and segments, pure
//! acknowledgements included), and the requests serve answered meanwhile, by route (its
//! `/metrics`, read before and after the window on connections of their own).
//!
//! Run with `cargo bench --bench idle` (`-- core` or `-- wire` for one part); see
//! BENCHMARKS.md. Under `cargo test --all-targets` it runs once, at 20 sessions for 2 s, and the
//! wire part once for 2 s on the sessions view (skipped without tmux).

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::Core;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::tmux::Tmux;
use support::*;

/// Longer than Postgres's idle stats interval (10 s): what a backend did is in
/// `pg_stat_database` by then.
const SETTLE: Duration = Duration::from_secs(12);

struct Idle {
    sessions: usize,
    window: Duration,
    core_cpu: Duration,
    server_cpu: Duration,
    transactions_per_s: f64,
}

async fn measure(n: usize, window: Duration) -> Idle {
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
    for i in 0..n {
        live_session(&store, &format!("idle {i}")).await;
    }
    let core = Core::with_store(
        config("", &db.url, root.path()),
        store,
        Arc::new(InstantRuntime::default()),
        Arc::new(ScriptedHarness::new().0),
    );
    core.sync_agents().await.expect("sync agents");
    let worker = agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);
    // Every session taken up (a pump each), then a settle long enough for Postgres to count
    // what taking them up cost (a backend left idle reports its counts 10 s later).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fleet = core.fleet().await.expect("read the fleet");
        if fleet.working().map(|c| c.sessions).sum::<i64>() == n as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the core took up {} of {n} sessions in 120 s",
            fleet.working().map(|c| c.sessions).sum::<i64>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(SETTLE).await;

    let (cpu0, srv0, tx0) = (
        process_cpu(),
        server_cpu(&admin, &db.name).await,
        committed(&admin, &db.name).await,
    );
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu1, srv1) = (process_cpu(), server_cpu(&admin, &db.name).await);
    let window = started.elapsed();
    // The window's transactions are counted once their backends report them (as above).
    tokio::time::sleep(SETTLE).await;
    let tx1 = committed(&admin, &db.name).await;
    let counted = started.elapsed();
    worker.stop(Duration::from_secs(10)).await;
    admin.close().await;
    Idle {
        sessions: n,
        window,
        core_cpu: cpu1.saturating_sub(cpu0),
        server_cpu: srv1.saturating_sub(srv0),
        // (the statements reading the counters are the admin database's, not these; the
        // settle after the window is counted too: the core idles on through it)
        transactions_per_s: (tx1 - tx0) as f64 / counted.as_secs_f64(),
    }
}

fn share(used: Duration, of: Duration) -> f64 {
    100.0 * used.as_secs_f64() / of.as_secs_f64().max(f64::EPSILON)
}

/// Idle sessions of the cockpit's team, for the wire part.
const WIRE_SESSIONS: usize = 10;
const WIRE_TEAM: &str = "bench";

/// What the cockpit and serve sent each other over a window.
struct Wire {
    view: &'static str,
    window: Duration,
    connections: usize,
    counted: served::Counted,
    /// Requests serve answered in the window, by `METHOD route status`.
    requests: BTreeMap<String, u64>,
}

/// `n` idle sessions of [`WIRE_TEAM`] in the store at `url`, through the store API.
async fn seed_idle(url: &str, n: usize) {
    use agentdeck::model::{NewSession, Phase, SessionPatch, SessionStatus};
    let store = agentdeck::store::open(url).await.expect("open the store");
    store.migrate().await.expect("migrate");
    for i in 0..n {
        let s = store
            .insert_session(&NewSession {
                agent_id: "coder".into(),
                team: WIRE_TEAM.into(),
                title: format!("idle wire {i}"),
                ..Default::default()
            })
            .await
            .expect("insert a session");
        store
            .update_session(
                s.id,
                &SessionPatch::status(SessionStatus::Idle, Phase::Idle),
            )
            .await
            .expect("make the session idle");
    }
}

/// Waits (polling, at most `within`) until serve at `port` has answered `GET route` more than
/// `after` times.
fn wait_for_request(port: u16, route: &str, after: u64, within: Duration) {
    let started = Instant::now();
    while served::answered(port, route) <= after {
        assert!(
            started.elapsed() < within,
            "the cockpit did not ask serve for {route} within {within:?}: {:?}",
            served::requests(port)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serve on Postgres and a remote cockpit in tmux, left alone for `window` (with a transcript
/// open when `attached`); what passed between them.
fn measure_wire(rt: &tokio::runtime::Runtime, attached: bool, window: Duration) -> Wire {
    let db = rt.block_on(PgDb::create());
    rt.block_on(seed_idle(&db.url, WIRE_SESSIONS));
    let root = tempfile::tempdir().expect("a temp dir");
    let serve = served::Serve::start(&root.path().join("serve"), &db.url, WIRE_TEAM);
    let tmux = start_remote_cockpit(&serve, &root.path().join("cockpit"), attached);
    let pid = tmux.pane_pid();
    // What starting (or attaching) read is not idling: let it pass before the window.
    if full_size() {
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut wire = watch_wire(serve.port, window);
    wire.view = if attached { "a transcript" } else { "sessions" };
    let screen = tmux.screen();
    assert!(
        screen.contains("idle wire"),
        "the cockpit still shows its sessions after the window; its screen:\n{screen}"
    );
    drop(tmux);
    tmux::make_sure_ended(pid);
    drop(serve);
    drop(db);
    wire
}

/// The cockpit as a client of `serve` (its team's token) in a tmux pane, once it shows the
/// sessions and asked for serve's status once; with the first session's transcript open when
/// `attached`.
fn start_remote_cockpit(serve: &served::Serve, home: &std::path::Path, attached: bool) -> Tmux {
    let tmux = Tmux::start("agentdeck-bench-idle-wire", 160, 48);
    tmux.respawn(&format!(
        "exec env {} AGENTDECK_TOKEN={} {} --server {}",
        tmux::home_env(home),
        served::TOKEN,
        served::BINARY,
        serve.url()
    ));
    let title = format!(" Sessions ({WIRE_SESSIONS}) ");
    tmux.wait_for("its sessions", Duration::from_secs(60), |s| {
        s.contains(&title)
    });
    // Its first look at serve's status (the top bar's, every 5 s once connected).
    wait_for_request(serve.port, "/api/status", 0, Duration::from_secs(30));
    if attached {
        // Attached once the transcript read what the session's agent asks (its live text may
        // be followed already: the preview beside the list follows the selected session).
        let asks = "/api/sessions/{id}/questions";
        let before = served::answered(serve.port, asks);
        tmux.keys(&["Enter"]);
        wait_for_request(serve.port, asks, before, Duration::from_secs(30));
    }
    tmux
}

/// The bytes on every connection to `port` over `window` (looked at every second), and the
/// requests serve answered meanwhile (its `/metrics` read before and after, not counted).
fn watch_wire(port: u16, window: Duration) -> Wire {
    let before = served::requests(port);
    let mut wire = served::Wire::start(port);
    let started = Instant::now();
    while started.elapsed() < window {
        std::thread::sleep((window - started.elapsed()).min(Duration::from_secs(1)));
        wire.poll(port);
    }
    let window = started.elapsed();
    let requests = served::requests(port)
        .into_iter()
        .filter(|(what, _)| !what.contains("/metrics"))
        .map(|(what, n)| {
            let was = before.get(&what).copied().unwrap_or(0);
            (what, n - was)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Wire {
        view: "",
        window,
        connections: wire.connections(),
        counted: wire.total(),
        requests,
    }
}

fn per_s(bytes: u64, window: Duration) -> f64 {
    bytes as f64 / window.as_secs_f64().max(f64::EPSILON)
}

fn report_wire(w: &Wire) {
    // IPv4 (20 bytes) and TCP with timestamps (32) in front of every segment.
    const HEADERS: u64 = 52;
    let c = &w.counted;
    let requests: Vec<String> = w
        .requests
        .iter()
        .map(|(r, n)| format!("{n} × {r}"))
        .collect();
    println!(
        "idle wire: a remote cockpit on {} with {WIRE_SESSIONS} idle sessions, {:.1?}: serve → \
         cockpit {:.1} B/s, cockpit → serve {:.1} B/s, both {:.1} B/s of TCP payload ({} + {} \
         bytes); {} segments, {:.1} B/s with TCP/IP headers; {} connection(s); requests: {}",
        w.view,
        w.window,
        per_s(c.sent, w.window),
        per_s(c.received, w.window),
        per_s(c.sent + c.received, w.window),
        c.sent,
        c.received,
        c.segments,
        per_s(c.sent + c.received + c.segments * HEADERS, w.window),
        w.connections,
        if requests.is_empty() {
            "none".to_string()
        } else {
            requests.join(", ")
        },
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("idle: test");
        }
        return;
    }
    // `cargo bench --bench idle -- wire` (or `-- core`) runs one part (other arguments, a test
    // runner's, run both).
    let only = args.iter().skip(1).find(|a| *a == "core" || *a == "wire");
    let part = |name: &str| only.is_none_or(|o| o == name);
    let (sizes, window): (&[usize], _) = if full_size() {
        (&[1, 200, 1000], Duration::from_secs(20))
    } else {
        (&[20], Duration::from_secs(2))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for &n in sizes.iter().filter(|_| part("core")) {
        let idle = rt.block_on(measure(n, window));
        println!(
            "idle: {} live sessions, {:.1?} with nothing happening: the core {:.2}% of one core, \
             its Postgres backends {:.2}%, {:.1} transactions/s",
            idle.sessions,
            idle.window,
            share(idle.core_cpu, idle.window),
            share(idle.server_cpu, idle.window),
            idle.transactions_per_s,
        );
    }
    if !part("wire") {
        return;
    }
    if !tmux::installed() {
        eprintln!("idle: tmux is not installed; the wire part is skipped");
        return;
    }
    let (views, window): (&[bool], _) = if full_size() {
        (&[false, true], Duration::from_secs(60))
    } else {
        (&[false], Duration::from_secs(2))
    };
    for &attached in views {
        let wire = measure_wire(&rt, attached, window);
        // The change stream at least stays open all along.
        assert!(
            wire.connections >= 1,
            "no connection between the cockpit and serve was seen"
        );
        report_wire(&wire);
    }
}
