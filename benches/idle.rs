//! What a control core costs when nothing happens: a `serve`'s worker (its heartbeat, its roles,
//! ingest following every live session, the task loop) over 1, 200 and 1000 live sessions on
//! Postgres, with no turn running and no command given.
//!
//! Not a criterion benchmark (nothing is timed per iteration): it prints, over a window of
//! wall time after the core has taken every session up and settled, the CPU the core used (this
//! process: it runs nothing else meanwhile), the CPU of the Postgres backends of its database
//! (from /proc), and the transactions Postgres committed for that database per second
//! (`pg_stat_database`). The core is the real one (`Core::with_store` over the real store, its
//! worker as `serve` runs it); the sandboxes are a stand-in runtime that answers at once and
//! harnesses whose buses stay silent (benches/support).
//!
//! Run with `cargo bench --bench idle`; see BENCHMARKS.md. Under `cargo test --all-targets` it
//! runs once, at 20 sessions for 2 s.

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::Core;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("idle: test");
        }
        return;
    }
    let (sizes, window): (&[usize], _) = if full_size() {
        (&[1, 200, 1000], Duration::from_secs(20))
    } else {
        (&[20], Duration::from_secs(2))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for &n in sizes {
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
}
