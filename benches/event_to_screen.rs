//! From a transcript event the harness commits to the moment it is drawn on the cockpit's
//! screen, on Postgres and on SQLite, with a cockpit running in the same process; and, on
//! Postgres, with the cockpit a core of its own (`postgres_remote`): its own store, connections
//! and listeners, no worker, as a cockpit in another process beside the `serve` that follows the
//! session (nothing passes between the two but Postgres: the change feed and the live text's
//! NOTIFY); and with the cockpit a client of the following core's REST API (`postgres_api`, as
//! `agentdeck --server URL`): the core serves its API on 127.0.0.1 (`api::serve`, a team's
//! token), the cockpit's deck is `deck::Remote`, so the path is harness → ingest → serve's
//! `/api/sessions/{id}/live` and `/api/changes` streams (and `GET …/messages` for what was
//! stored) → the cockpit's feeds → a frame. All four run in one `cargo bench` run, side by side.
//!
//! The core runs as the cockpit runs it: `Core::with_store` over the real store, its worker
//! (`core::worker::spawn`, whose ingest follows the session's harness). The harness is a
//! stand-in whose bus plays what the bench sends; the sandbox runtime is a stand-in that
//! answers at once. The cockpit side is the real `App` fed by the cockpit's own feeds
//! (`tui::spawn_feeds`: the store's change feed, re-reading what changed, and the live deltas)
//! into one channel, and a loop like the cockpit's: apply the burst of messages waiting, then
//! draw once if anything changed (`views::render` into ratatui's `TestBackend` at 160x48). The
//! session is attached, its transcript in follow mode.
//!
//! Each sample: the harness emits one event carrying a unique marker, stamped with
//! `Instant::now()` as it is put on the bus; the sample ends when a drawn frame's buffer holds
//! the marker. Three kinds of event:
//!
//! - `delta`: `message.part.delta`, text streamed into the open assistant message;
//! - `tool_part`: `message.part.updated` of a tool call (ingest writes tool parts at once);
//! - `text_part`: `message.part.updated` of a text part (ingest writes those with its next
//!   flush, at most 150 ms later; events are spaced randomly over 0-150 ms so that samples
//!   fall anywhere in that window).
//!
//! criterion reports means; the p50/p90/p99 of every sample (warm-up ones included) are
//! printed at the end. Run with `cargo bench --bench event_to_screen`; see BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::Core;
use agentdeck::deck::{Deck, Embedded};
use agentdeck::harness::HarnessEvent;
use agentdeck::model::{MessageRole, SessionQuery, ToolStatus};
use agentdeck::tui::actions::Keymap;
use agentdeck::tui::app::{App, Msg};
use agentdeck::tui::theme::Theme;
use agentdeck::tui::transcript::Transcript;
use agentdeck::tui::views;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

const WIDTH: u16 = 160;
const HEIGHT: u16 = 48;
/// The open assistant message and its parts.
const MESSAGE: &str = "msg_live";
const DELTA_PART: &str = "prt_streamed";
const TEXT_PART: &str = "prt_text";
const TOOL_PART: &str = "prt_tool";

/// The marker a frame must show, when it was sent, and who waits for it.
type Pending = Arc<Mutex<Option<(String, Instant, oneshot::Sender<Duration>)>>>;

/// Whether the terminal's buffer shows `marker` (which has no spaces). The transcript wraps
/// long lines at any char, so a marker may continue on the next row: rows are read as one
/// text without spaces and borders.
fn shows(term: &Terminal<TestBackend>, marker: &str) -> bool {
    let text: String = term
        .backend()
        .buffer()
        .content
        .iter()
        .map(|c| c.symbol())
        .filter(|s| !s.trim().is_empty() && *s != "│")
        .collect();
    text.contains(marker)
}

fn screen(term: &Terminal<TestBackend>) -> String {
    let buffer = term.backend().buffer();
    let width = usize::from(buffer.area.width);
    buffer
        .content
        .chunks(width.max(1))
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cockpit's loop, minus the terminal's input: a burst of messages applied, then one frame
/// if anything changed; a frame that shows the awaited marker reports how long it took.
async fn cockpit_loop(
    mut app: App,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    pending: Pending,
    last_screen: Arc<Mutex<String>>,
) {
    let mut term = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("a test terminal");
    let now = chrono::Utc::now;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for msg in batch {
            // Effects (loads the app asks for) are not needed here: the transcript is loaded
            // and kept current by the feeds.
            let _ = app.update(msg);
        }
        if app.dirty {
            app.dirty = false;
            term.draw(|f| views::render(f, &app, now()))
                .expect("draw a frame");
            let mut slot = pending.lock().expect("pending marker");
            if let Some((marker, _, _)) = slot.as_ref()
                && shows(&term, marker)
                && let Some((_, sent, tell)) = slot.take()
            {
                let _ = tell.send(sent.elapsed());
            }
            drop(slot);
            if let Ok(mut s) = last_screen.lock() {
                *s = screen(&term);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Delta,
    ToolPart,
    TextPart,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Delta => "delta",
            Kind::ToolPart => "tool_part",
            Kind::TextPart => "text_part",
        }
    }
    /// The event carrying `marker`.
    fn event(self, marker: &str) -> HarnessEvent {
        match self {
            Kind::Delta => delta(MESSAGE, DELTA_PART, &format!(" {marker}")),
            Kind::TextPart => text_part(
                MESSAGE,
                TEXT_PART,
                &format!("the tests pass now ({marker})"),
                false,
            ),
            Kind::ToolPart => tool_part(MESSAGE, TOOL_PART, ToolStatus::Running, "")
                .with_command(&format!("echo {marker}")),
        }
    }
    /// The pause before an event (not timed): spread over the ingest's flush period for text
    /// parts, short otherwise.
    fn gap(self, rng: &mut u64) -> Duration {
        *rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (*rng >> 33) % 1000;
        match self {
            Kind::TextPart => Duration::from_micros(r * 150),
            _ => Duration::from_micros(r * 3),
        }
    }
}

/// A tool event whose command (shown on the tool's folded line) is `command`.
trait WithCommand {
    fn with_command(self, command: &str) -> Self;
}

impl WithCommand for HarnessEvent {
    fn with_command(mut self, command: &str) -> Self {
        if let agentdeck::harness::Update::Part {
            part: agentdeck::model::Part::Tool { input, .. },
            ..
        } = &mut self.update
        {
            *input = serde_json::json!({ "command": command });
        }
        self.payload["part"]["state"]["input"] = serde_json::json!({ "command": command });
        self
    }
}

/// What the cockpit reads through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cockpit {
    /// The core that follows the session, in this process (`Embedded`).
    SameCore,
    /// A core of its own on the same database, as in another process beside `serve`: nothing
    /// passes between the two but Postgres (`Embedded` over that core).
    OtherCore,
    /// A client of the following core's REST API, as `agentdeck --server URL` is (`Remote`):
    /// the API served in this process on 127.0.0.1, over TCP and HTTP as from another one.
    Api,
}

impl Cockpit {
    /// The configuration that maps a token to the session's team (`live_session`'s), as an
    /// operator's token would be, for the API's client; none for the others.
    fn api_tokens(self) -> String {
        match self {
            Cockpit::Api => format!(
                "[[api.tokens]]\ntoken = \"{}\"\nteam = \"bench\"\n",
                served::TOKEN
            ),
            Cockpit::SameCore | Cockpit::OtherCore => String::new(),
        }
    }

    /// The cockpit's deck over `core` (the core that follows the session); for `Api`, the
    /// task serving the API and its port too.
    async fn deck(
        self,
        core: &Core,
        db: &BenchDb,
        root: &std::path::Path,
    ) -> (Arc<dyn Deck>, Option<(tokio::task::JoinHandle<()>, u16)>) {
        match self {
            Cockpit::SameCore => (Arc::new(Embedded::new(core.clone(), "bench")), None),
            Cockpit::OtherCore => {
                let own = Core::with_store(
                    config("", &db.url(), root),
                    db.open().await,
                    Arc::new(InstantRuntime::default()),
                    Arc::new(ScriptedHarness::new().0),
                );
                (Arc::new(Embedded::new(own, "bench")), None)
            }
            Cockpit::Api => {
                let (server, port) = serve_api(core).await;
                let remote = agentdeck::deck::Remote::connect(
                    &format!("http://127.0.0.1:{port}"),
                    Some(served::TOKEN.to_string()),
                    None,
                    Arc::new(config("", "", root)),
                )
                .await
                .expect("the cockpit connects to the API");
                (Arc::new(remote), Some((server, port)))
            }
        }
    }
}

/// Serves `core`'s REST API on a free port of 127.0.0.1 (as `agentdeck serve` does); the task
/// and the port.
async fn serve_api(core: &Core) -> (tokio::task::JoinHandle<()>, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1 for the API");
    let port = listener.local_addr().expect("the API's address").port();
    let core = core.clone();
    let server = tokio::spawn(async move {
        if let Err(e) = agentdeck::api::serve(core, listener, None, std::future::pending()).await {
            eprintln!("event_to_screen: the API stopped: {e}");
        }
    });
    (server, port)
}

/// Waits until the API has opened the cockpit's two streams (the change stream and the
/// session's live text), so that no sample is sent before someone listens: the server counts a
/// stream's request once its handler has subscribed and answered.
async fn streams_open(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = tokio::task::spawn_blocking(move || {
            served::answered(port, "/api/changes") > 0
                && served::answered(port, "/api/sessions/{id}/live") > 0
        })
        .await
        .unwrap_or(false);
        if open {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cockpit did not open its streams on the API within 15 s: {:?}",
            served::requests(port)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cockpit attached to a live session whose harness is the bench's.
struct Rig {
    bus: mpsc::UnboundedSender<HarnessEvent>,
    pending: Pending,
    last_screen: Arc<Mutex<String>>,
    next_marker: u64,
    _attached: tokio::sync::watch::Sender<Option<Uuid>>,
    worker: Option<agentdeck::core::worker::WorkerHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _root: tempfile::TempDir,
}

impl Rig {
    async fn start(db: &BenchDb, cockpit: Cockpit) -> Rig {
        agentdeck::net::ensure_crypto();
        let root = tempfile::tempdir().expect("a temp dir");
        let store = db.open().await;
        let session = live_session(&store, "event to screen").await;
        let (harness, bus) = ScriptedHarness::new();
        let subscribed = harness.subscribed.clone();
        let core = Core::with_store(
            config(&cockpit.api_tokens(), &db.url(), root.path()),
            store,
            Arc::new(InstantRuntime::default()),
            Arc::new(harness),
        );
        core.sync_agents().await.expect("sync agents");
        let worker =
            agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);

        let mut tasks = Vec::new();
        let (deck, api) = cockpit.deck(&core, db, root.path()).await;
        let api_port = api.map(|(server, port)| {
            tasks.push(server);
            port
        });
        let mut app = App::new(
            Keymap::new(false),
            Theme::default_theme(),
            deck.agents(),
            deck.describe(),
            deck.runtime_kind(),
        );
        let sessions = deck
            .list(&SessionQuery::default())
            .await
            .expect("list sessions");
        let _ = app.update(Msg::Sessions(sessions));
        app.transcript = Some(Transcript::new(session));
        let (tx, rx) = mpsc::unbounded_channel();
        let (attached_tx, attached_rx) = tokio::sync::watch::channel(Some(session));
        tasks.extend(agentdeck::tui::spawn_feeds(&deck, tx.clone(), attached_rx));
        let messages = deck.messages(session, 0, 1000).await.expect("messages");
        let _ = tx.send(Msg::Messages {
            session,
            messages,
            complete: true,
        });
        let pending: Pending = Arc::new(Mutex::new(None));
        let last_screen = Arc::new(Mutex::new(String::new()));
        tasks.push(tokio::spawn(cockpit_loop(
            app,
            rx,
            pending.clone(),
            last_screen.clone(),
        )));
        tokio::time::timeout(Duration::from_secs(15), subscribed.notified())
            .await
            .expect("the worker's ingest follows the session's harness within 15 s");
        if let Some(port) = api_port {
            streams_open(port).await;
        }

        let mut rig = Rig {
            bus,
            pending,
            last_screen,
            next_marker: 0,
            _attached: attached_tx,
            worker: Some(worker),
            tasks,
            _root: root,
        };
        // An open assistant message with the three parts the samples change.
        for e in [
            busy(),
            message_updated(MESSAGE, MessageRole::Assistant, false),
            text_part(MESSAGE, DELTA_PART, "Looking at the test:", false),
            text_part(MESSAGE, TEXT_PART, "…", false),
        ] {
            rig.bus.send(e).expect("bus open");
        }
        rig.sample(Kind::ToolPart).await;
        rig
    }

    /// One event with a fresh marker; how long until a frame showed it.
    async fn sample(&mut self, kind: Kind) -> Duration {
        self.next_marker += 1;
        let marker = format!("mk{:07}z", self.next_marker);
        let event = kind.event(&marker);
        let (tell, told) = oneshot::channel();
        let sent = Instant::now();
        *self.pending.lock().expect("pending marker") = Some((marker.clone(), sent, tell));
        self.bus.send(event).expect("bus open");
        match tokio::time::timeout(Duration::from_secs(10), told).await {
            Ok(Ok(took)) => took,
            _ => panic!(
                "{} event with {marker} not on screen within 10 s; the last frame:\n{}",
                kind.name(),
                self.last_screen
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default()
            ),
        }
    }

    async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(w) = self.worker.take() {
            w.stop(Duration::from_secs(5)).await;
        }
    }
}

fn event_to_screen(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut report = Vec::new();
    for (backend, cockpit) in [
        ("postgres", Cockpit::SameCore),
        ("postgres_remote", Cockpit::OtherCore),
        ("postgres_api", Cockpit::Api),
        ("sqlite", Cockpit::SameCore),
    ] {
        let db = rt.block_on(async {
            if backend.starts_with("postgres") {
                BenchDb::postgres().await
            } else {
                BenchDb::sqlite()
            }
        });
        let mut rig = rt.block_on(Rig::start(&db, cockpit));
        let mut group = c.benchmark_group(format!("event_to_screen_{backend}"));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500));
        let mut rng = 0x5eed_u64;
        for kind in [Kind::Delta, Kind::ToolPart, Kind::TextPart] {
            group.measurement_time(match kind {
                Kind::Delta => Duration::from_secs(2),
                Kind::ToolPart => Duration::from_secs(4),
                Kind::TextPart => Duration::from_secs(20),
            });
            let mut samples: Vec<Duration> = Vec::new();
            group.bench_function(kind.name(), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            tokio::time::sleep(kind.gap(&mut rng)).await;
                            let took = rig.sample(kind).await;
                            samples.push(took);
                            total += took;
                        }
                        total
                    })
                })
            });
            samples.sort();
            report.push(format!(
                "event_to_screen {backend} {:<9}: {:>5} samples  p50 {:>8.2?}  p90 {:>8.2?}  \
                 p99 {:>8.2?}  max {:>8.2?}",
                kind.name(),
                samples.len(),
                quantile(&samples, 0.5),
                quantile(&samples, 0.9),
                quantile(&samples, 0.99),
                samples.last().copied().unwrap_or_default(),
            ));
        }
        group.finish();
        rt.block_on(rig.stop());
        drop(db);
    }
    for line in report {
        eprintln!("{line}");
    }
}

criterion_group!(benches, event_to_screen);
criterion_main!(benches);
