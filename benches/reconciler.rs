//! The reconciler over 10k sessions: one pass (`Core::reconcile_once`, what the worker's
//! reconciler runs every 5 s while it holds the role), its wall time and the CPU time it costs.
//!
//! The store (Postgres, then SQLite) holds 10,000 sessions, seeded through the store API, their
//! statuses in turn creating, ready, idle, busy, suspended, dead, failed (so 3 in 7 are live);
//! every one has a sandbox on a stand-in runtime that answers every call at once (each sandbox
//! healthy) and lists all 10,000. A pass then reads every live session's health and looks up
//! the session of every listed sandbox; it changes nothing (no sandbox vanished, the ended
//! sessions' sandboxes are within their grace).
//!
//! CPU time is the process's (`getrusage`, every thread: the pass, the async runtime, sqlx and,
//! for SQLite, its database threads) around one pass; on Postgres the server's own CPU time for
//! the pass (its backends for this database, from /proc) is printed beside it. criterion times
//! the pass (wall); the CPU figures are printed at the end. Run with
//! `cargo bench --bench reconciler`; see BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::Core;
use agentdeck::model::{NewSession, Phase, SessionPatch, SessionStatus};
use agentdeck::runtime::{ListedSandbox, SandboxRef};
use agentdeck::store::Store;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// `n` sessions with sandboxes, statuses in turn; returns what the runtime lists.
async fn seed(store: &Arc<dyn Store>, n: usize) -> Vec<ListedSandbox> {
    let started = Instant::now();
    let listed: Vec<ListedSandbox> = futures::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let s = store
                    .insert_session(&NewSession {
                        agent_id: "opencode".into(),
                        team: ["red", "blue", "payments", "platform"][i % 4].into(),
                        title: format!("task {i}: fix the flaky test in module {}", i % 97),
                        ..Default::default()
                    })
                    .await
                    .expect("insert a session");
                let status = SessionStatus::ALL[i % SessionStatus::ALL.len()];
                let sandbox = format!("sbx-{}", s.id);
                let patch = SessionPatch {
                    runtime: Some(Some(STAND_IN.into())),
                    sandbox_ref: Some(Some(sandbox.clone())),
                    harness_session_id: Some(Some(HARNESS_SESSION.into())),
                    ..SessionPatch::status(status, phase_of(status))
                };
                store
                    .update_session(s.id, &patch)
                    .await
                    .expect("set the session's status");
                ListedSandbox {
                    sandbox: SandboxRef {
                        runtime: STAND_IN.into(),
                        name: sandbox,
                    },
                    session_id: Some(s.id),
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    eprintln!(
        "reconciler: seeded {n} sessions in {:.1?}",
        started.elapsed()
    );
    listed
}

struct Pass {
    wall: Duration,
    cpu: Duration,
    server: Option<Duration>,
}

fn reconciler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let n = if full_size() { 10_000 } else { 200 };
    let mut group = c.benchmark_group("reconciler_pass");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let mut report = Vec::new();
    for backend in ["postgres", "sqlite"] {
        let db = rt.block_on(async {
            if backend == "postgres" {
                BenchDb::postgres().await
            } else {
                BenchDb::sqlite()
            }
        });
        let root = tempfile::tempdir().expect("a temp dir");
        let (core, admin, runtime, listed) = rt.block_on(async {
            let store = db.open().await;
            let runtime = Arc::new(InstantRuntime::default());
            let listed = seed(&store, n).await;
            *runtime.listed.lock().expect("listed") = listed.clone();
            let core = Core::with_store(
                config("", &db.url(), root.path()),
                store,
                runtime.clone(),
                Arc::new(ScriptedHarness::new().0),
            );
            let admin = match &db {
                BenchDb::Pg(_) => Some(
                    sqlx::PgPool::connect(&pg_admin_url())
                        .await
                        .expect("connect to read the server's CPU time"),
                ),
                BenchDb::Sqlite(_) => None,
            };
            (core, admin, runtime, listed)
        });
        let db_name = match &db {
            BenchDb::Pg(pg) => pg.name.clone(),
            BenchDb::Sqlite(_) => String::new(),
        };
        let mut passes: Vec<Pass> = Vec::new();
        group.bench_function(format!("{backend}/{n}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let server0 = match &admin {
                            Some(a) => Some(server_cpu(a, &db_name).await),
                            None => None,
                        };
                        let cpu0 = process_cpu();
                        let t0 = Instant::now();
                        core.reconcile_once().await.expect("a reconciler pass");
                        let wall = t0.elapsed();
                        let cpu = process_cpu().saturating_sub(cpu0);
                        let server = match &admin {
                            Some(a) => Some(server_cpu(a, &db_name).await),
                            None => None,
                        };
                        passes.push(Pass {
                            wall,
                            cpu,
                            server: server.zip(server0).map(|(s, s0)| s.saturating_sub(s0)),
                        });
                        total += wall;
                    }
                    total
                })
            })
        });
        // The same pass with the runtime listing no sandbox: what looking up the session of
        // each listed sandbox costs is the difference.
        *runtime.listed.lock().expect("listed") = Vec::new();
        let unlisted: Vec<Duration> = rt.block_on(async {
            let mut out = Vec::new();
            for _ in 0..3 {
                let t0 = Instant::now();
                core.reconcile_once().await.expect("a reconciler pass");
                out.push(t0.elapsed());
            }
            out
        });
        *runtime.listed.lock().expect("listed") = listed;
        let k = passes.len().max(1) as u32;
        let wall: Duration = passes.iter().map(|p| p.wall).sum::<Duration>() / k;
        let cpu: Duration = passes.iter().map(|p| p.cpu).sum::<Duration>() / k;
        let server = passes
            .iter()
            .map(|p| p.server)
            .sum::<Option<Duration>>()
            .map(|s| s / k);
        let live = (0..n)
            .filter(|i| {
                matches!(
                    SessionStatus::ALL[i % SessionStatus::ALL.len()],
                    SessionStatus::Ready | SessionStatus::Idle | SessionStatus::Busy
                )
            })
            .count();
        report.push(format!(
            "reconciler {backend}: {n} sessions ({live} live), {n} sandboxes listed; mean of {} \
             passes: wall {wall:.1?}, process CPU {cpu:.1?} ({:.0}% of one core){}",
            passes.len(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            server.map_or(String::new(), |s| format!(", Postgres server CPU {s:.1?}")),
        ));
        report.push(format!(
            "reconciler {backend}: the same with no sandbox listed (live sessions' health only): \
             wall {:.1?} (mean of {})",
            unlisted.iter().sum::<Duration>() / unlisted.len().max(1) as u32,
            unlisted.len()
        ));
        rt.block_on(async {
            if let Some(a) = admin {
                a.close().await;
            }
        });
        drop(core);
        drop(db);
    }
    group.finish();
    for line in report {
        eprintln!("{line}");
    }
}

criterion_group!(benches, reconciler);
criterion_main!(benches);
