//! Harness event ingest into Postgres, in events per second, beside a raw batched insert of
//! the same rows into the same table in the same run.
//!
//! - `ingest/core_pump`: the core's ingest (run by the worker, which holds the session under
//!   its fleet lease, every write fenced by it) follows a live session whose harness is a stand-in playing one scripted turn of
//!   opencode-like bus events per iteration, all at once (a burst: message updates, step parts,
//!   reasoning and text parts with their streamed deltas, tool calls pending → running →
//!   completed, then `session.idle`). Timed from the first event sent to the moment the change
//!   feed says the last of them is stored (every raw event in the `events` table, the messages
//!   and parts written, the session idle).
//! - `ingest/raw_unnest_insert`: the same rows (kind, payload) inserted into `events` by a plain
//!   sqlx loop, 200 rows per `INSERT … SELECT FROM unnest(…)` (the batch size ingest uses),
//!   sequence numbers made by the client.
//!
//! Run with `cargo bench --bench ingest`; see BENCHMARKS.md. Needs Postgres (a database of its
//! own is created and dropped; AGENTDECK_TEST_PG names the server, as for the tests).

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::{Change, Core};
use agentdeck::harness::HarnessEvent;
use agentdeck::model::{MessageRole, MessageStatus, NewMessage, Part, ToolStatus};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use uuid::Uuid;

/// Raw events per statement in the baseline: the batch ingest uses at most.
const RAW_BATCH: usize = 200;

/// One turn of an opencode agent, as its bus reports it: our user message echoed, busy, then
/// `steps` assistant messages (a reasoning part on the first; in each a text part streamed in
/// `deltas` deltas and three tool calls), then idle.
fn turn(t: usize, steps: usize, deltas: usize) -> Vec<HarnessEvent> {
    let mut out = Vec::new();
    let user = format!("msg_{t}_user");
    out.push(message_updated(&user, MessageRole::User, false));
    out.push(text_part(
        &user,
        &format!("prt_{t}_user"),
        "please fix the flaky test in module 42",
        false,
    ));
    out.push(busy());
    let words = [
        "the ", "sandbox ", "test ", "passes ", "now ", "because ", "we ", "fixed ", "a ", "race ",
        "in ", "module ", "42, ", "and ", "then ", "checked ",
    ];
    for step in 0..steps {
        let m = format!("msg_{t}_a{step}");
        out.push(message_updated(&m, MessageRole::Assistant, false));
        out.push(step_part(&m, &format!("prt_{t}_{step}_start"), false));
        if step == 0 {
            let r = format!("prt_{t}_{step}_reasoning");
            out.push(text_part(&m, &r, "", true));
            let mut full = String::new();
            for d in 0..deltas / 4 {
                let w = words[d % words.len()];
                full.push_str(w);
                out.push(delta(&m, &r, w));
            }
            out.push(text_part(&m, &r, &full, true));
        }
        let x = format!("prt_{t}_{step}_text");
        out.push(text_part(&m, &x, "", false));
        let mut full = String::new();
        for d in 0..deltas {
            let w = words[(d * 7 + step) % words.len()];
            full.push_str(w);
            out.push(delta(&m, &x, w));
        }
        out.push(text_part(&m, &x, &full, false));
        for tool in 0..3 {
            let p = format!("prt_{t}_{step}_tool{tool}");
            let output: String = (0..20)
                .map(|l| format!("test module{tool}::case_{l} ... ok\n"))
                .collect();
            out.push(tool_part(&m, &p, ToolStatus::Pending, ""));
            out.push(tool_part(&m, &p, ToolStatus::Running, ""));
            out.push(tool_part(&m, &p, ToolStatus::Completed, &output));
        }
        out.push(message_updated(&m, MessageRole::Assistant, false));
        out.push(message_updated(&m, MessageRole::Assistant, false));
        out.push(step_part(&m, &format!("prt_{t}_{step}_finish"), true));
        out.push(message_updated(&m, MessageRole::Assistant, true));
    }
    out.push(idle());
    out
}

/// The session followed by the core's ingest, and what it takes to play turns into it.
struct Pumped {
    core: Core,
    store: Arc<dyn agentdeck::store::Store>,
    bus: tokio::sync::mpsc::UnboundedSender<HarnessEvent>,
    feed: agentdeck::core::ChangeFeed,
    session: Uuid,
    turns: usize,
    worker: agentdeck::core::worker::WorkerHandle,
    _root: tempfile::TempDir,
}

impl Pumped {
    async fn start(db: &BenchDb) -> Pumped {
        agentdeck::net::ensure_crypto();
        let root = tempfile::tempdir().expect("a temp dir");
        let store = db.open().await;
        let session = live_session(&store, "ingest bench").await;
        let (harness, bus) = ScriptedHarness::new();
        let subscribed = harness.subscribed.clone();
        let core = Core::with_store(
            config("", &db.url(), root.path()),
            store.clone(),
            Arc::new(InstantRuntime::default()),
            Arc::new(harness),
        );
        core.sync_agents().await.expect("sync agents");
        let feed = core.subscribe();
        let worker =
            agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("the core's ingest follows the session's harness within 10 s");
        Pumped {
            core,
            store,
            bus,
            feed,
            session,
            turns: 0,
            worker,
            _root: root,
        }
    }

    /// Plays one turn and waits until all of it is stored; returns the time from the first
    /// event sent to the last one stored.
    async fn play(&mut self, events: Vec<HarnessEvent>) -> Duration {
        // Our operator's message, stored before it was sent (as the core does): the harness
        // echoes it first and ingest links the echo to it.
        self.store
            .append_message(
                self.session,
                &NewMessage {
                    role: MessageRole::User,
                    status: MessageStatus::Pending,
                    parts: vec![Part::text("please fix the flaky test in module 42")],
                    harness_message_id: None,
                },
            )
            .await
            .expect("store the user's message");
        let before = self
            .store
            .get_session(self.session)
            .await
            .expect("read the session")
            .map_or(0, |s| s.last_event_seq);
        // Every harness event, plus two entries of the session's history (busy, then idle).
        let target = before + events.len() as i64 + 2;
        // Notices from before this turn (the user's message) are not this turn's.
        while self.feed.try_next().is_some() {}
        let started = Instant::now();
        for e in events {
            self.bus
                .send(e)
                .expect("the stand-in harness's bus is open");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let change = tokio::time::timeout_at(deadline, self.feed.next())
                .await
                .expect("the turn is stored within 60 s")
                .expect("the change feed is open");
            match change {
                Change::Event { session, seq } if session == self.session && seq >= target => {
                    break;
                }
                Change::Resync => {
                    let s = self.store.get_session(self.session).await;
                    if s.ok().flatten().is_some_and(|s| s.last_event_seq >= target) {
                        break;
                    }
                }
                _ => {}
            }
        }
        self.turns += 1;
        started.elapsed()
    }

    async fn stop(self) {
        self.worker.stop(Duration::from_secs(5)).await;
        drop(self.core);
    }
}

/// The baseline: the same rows into the same table, 200 per statement, plain sqlx.
async fn raw_insert(
    pool: &sqlx::PgPool,
    session: Uuid,
    next_seq: &mut i64,
    rows: &[(String, String)],
) -> Duration {
    let started = Instant::now();
    for chunk in rows.chunks(RAW_BATCH) {
        let kinds: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let payloads: Vec<&str> = chunk.iter().map(|(_, p)| p.as_str()).collect();
        sqlx::query(
            "INSERT INTO events (session_id, seq, kind, payload) \
             SELECT $1, $2 + e.ord, e.kind, e.payload::jsonb \
             FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS e(kind, payload, ord)",
        )
        .bind(session)
        .bind(*next_seq)
        .bind(&kinds)
        .bind(&payloads)
        .execute(pool)
        .await
        .expect("raw insert");
        *next_seq += chunk.len() as i64;
    }
    started.elapsed()
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (steps, deltas) = if full_size() { (3, 120) } else { (1, 10) };
    let per_turn = turn(0, steps, deltas).len();
    let db = rt.block_on(BenchDb::postgres());
    let mut pumped = rt.block_on(Pumped::start(&db));
    let (pool, raw_session) = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&db.url())
            .await
            .expect("connect for the baseline");
        let s = pumped
            .store
            .insert_session(&agentdeck::model::NewSession {
                agent_id: "opencode".into(),
                team: "bench".into(),
                title: "raw insert baseline".into(),
                ..Default::default()
            })
            .await
            .expect("the baseline's session");
        (pool, s.id)
    });
    let rows: Vec<(String, String)> = turn(0, steps, deltas)
        .into_iter()
        .map(|e| (format!("harness.{}", e.kind), e.payload.to_string()))
        .collect();
    let mut next_seq = 0i64;

    let mut group = c.benchmark_group("ingest");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(per_turn as u64));
    let mut pump_samples: Vec<Duration> = Vec::new();
    group.bench_function("core_pump", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events = turn(pumped.turns + 1, steps, deltas);
                    let took = pumped.play(events).await;
                    pump_samples.push(took);
                    total += took;
                }
                total
            })
        })
    });
    let mut raw_samples: Vec<Duration> = Vec::new();
    group.bench_function("raw_unnest_insert", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let took = raw_insert(&pool, raw_session, &mut next_seq, &rows).await;
                    raw_samples.push(took);
                    total += took;
                }
                total
            })
        })
    });
    group.finish();

    let rate = |samples: &[Duration]| {
        let total: Duration = samples.iter().sum();
        (samples.len() * per_turn) as f64 / total.as_secs_f64().max(1e-9)
    };
    let (pump, raw) = (rate(&pump_samples), rate(&raw_samples));
    let mut sorted = pump_samples.clone();
    sorted.sort();
    eprintln!(
        "ingest: {per_turn} events a turn; core pump {pump:.0} events/s over {} turns (turn p50 \
         {:.1?}, max {:.1?}); raw batched insert {raw:.0} events/s over {} batches of turns; \
         ingest / raw = {:.2}",
        pump_samples.len(),
        quantile(&sorted, 0.5),
        sorted.last().copied().unwrap_or_default(),
        raw_samples.len(),
        pump / raw.max(1e-9),
    );

    rt.block_on(async {
        pool.close().await;
        pumped.stop().await;
    });
    drop(db);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
