//! One full cockpit frame, rendered into ratatui's `TestBackend` at 160x48 through
//! `agentdeck::tui::views::render`, the same call the cockpit's loop makes.
//!
//! - the sessions view at 100, 10k and 100k sessions (and 100k with a filter on);
//! - the transcript view of an attached session of 20k messages, about 1M rendered lines
//!   (text, reasoning, folded tool calls, and now and then a very long line), in follow mode
//!   (at the bottom), scrolled to the middle, at the bottom while text streams in (one live
//!   delta per frame), and after a resize (every frame at a new width).
//!
//! The budget is 2 ms per frame; see BENCHMARKS.md. Run with `cargo bench --bench frames`.
//! Under `cargo test --all-targets` (or nextest) each benchmark runs once, on small data.

use agentdeck::core::ingest::LiveDelta;
use agentdeck::model::{
    Message, MessageRole, MessageStatus, Part, Phase, Session, SessionStatus, ToolStatus,
};
use agentdeck::tui::actions::Keymap;
use agentdeck::tui::app::{App, Msg};
use agentdeck::tui::sessions::SortKey;
use agentdeck::tui::theme::Theme;
use agentdeck::tui::transcript::Transcript;
use agentdeck::tui::views;
use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::hint::black_box;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WIDTH: u16 = 160;
const HEIGHT: u16 = 48;
/// The attached session in the transcript benches.
const ATTACHED: u128 = 7;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}

/// A small deterministic generator (no dependency, same data every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the",
    "session",
    "sandbox",
    "agent",
    "transcript",
    "compile",
    "error",
    "warning",
    "fixed",
    "test",
    "passes",
    "fails",
    "module",
    "function",
    "returns",
    "value",
    "cargo",
    "build",
    "src",
    "lib.rs",
    "main.rs",
    "because",
    "then",
    "and",
    "a",
    "of",
    "to",
    "in",
    "is",
    "was",
    "we",
    "should",
    "check",
    "pod",
    "restart",
    "OOMKilled",
    "ImagePullBackOff",
    "—",
    "naïve",
    "café",
];

/// Words to at least `min` characters, plus up to `spread` more.
fn sentence(rng: &mut Lcg, min: usize, spread: u64) -> String {
    let chars = min
        + if spread > 0 {
            rng.below(spread) as usize
        } else {
            0
        };
    let mut s = String::with_capacity(chars + 16);
    while s.len() < chars {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

fn session(i: u64) -> Session {
    let t = now() - chrono::Duration::seconds(i as i64 * 7);
    let status = SessionStatus::ALL[(i % SessionStatus::ALL.len() as u64) as usize];
    Session {
        id: Uuid::from_u128(i as u128),
        agent_id: ["coder", "reviewer", "triage"][(i % 3) as usize].into(),
        team: ["red", "blue", "payments", "platform"][(i % 4) as usize].into(),
        title: format!("task {i}: fix the flaky test in module {}", i % 97),
        status,
        phase: if status == SessionStatus::Failed {
            Phase::Failed
        } else {
            Phase::Ready
        },
        phase_detail: None,
        runtime: Some("local".into()),
        sandbox_ref: Some(format!("sbx-{i}")),
        harness_session_id: None,
        failure_reason: (status == SessionStatus::Failed)
            .then(|| "sandbox failed: ImagePullBackOff: Back-off pulling image".into()),
        env_keys: vec![],
        last_message_seq: 0,
        last_event_seq: 0,
        waiting: 0,
        parent_id: None,
        fork_seq: None,
        created_at: t,
        updated_at: t,
        last_activity_at: t,
        idle_deadline: (status == SessionStatus::Idle)
            .then(|| now() + chrono::Duration::minutes(9)),
        stopped_at: None,
        command_seq: 0,
        usage: Default::default(),
        budget_usd: None,
        server: None,
    }
}

fn app(sessions: u64) -> App {
    let mut app = App::new(
        Keymap::new(false),
        Theme::default_theme(),
        vec![],
        "sqlite:///home/op/.local/share/agentdeck/agentdeck.db".into(),
        "local".into(),
    );
    // (the preview has benchmarks of its own)
    app.preview_on = false;
    app.update(Msg::Sessions((1..=sessions).map(session).collect()));
    app
}

/// The list of `sessions` with the preview on, beside it (160 columns): the selected session's
/// last 20 messages read, the last one still streaming.
fn previewed_app(sessions: u64) -> App {
    let mut app = app(sessions);
    app.preview_on = true;
    app.sessions.select(Uuid::from_u128(ATTACHED));
    app.update(Msg::Tick);
    let mut rng = Lcg(7);
    let messages: Vec<Message> = (1..=PREVIEWED)
        .map(|s| {
            let mut m = message(&mut rng, s);
            if s == PREVIEWED {
                m.status = MessageStatus::Pending;
            }
            m
        })
        .collect();
    app.update(Msg::Messages {
        session: Uuid::from_u128(ATTACHED),
        messages,
        complete: true,
    });
    assert!(
        app.preview
            .as_ref()
            .is_some_and(|p| p.messages().len() == PREVIEWED as usize),
        "the preview holds its messages"
    );
    app
}

/// How many messages the previewed session has read (the cockpit reads its last 20).
const PREVIEWED: i64 = 20;

/// Message `seq` of the big transcript: about 50 lines at 158 columns with tools folded.
fn message(rng: &mut Lcg, seq: i64) -> Message {
    let user = seq % 10 == 1;
    let mut parts = Vec::new();
    if user {
        let lines: Vec<String> = (0..1 + rng.below(4))
            .map(|_| sentence(rng, 20, 100))
            .collect();
        parts.push(Part::text(lines.join("\n")));
    } else {
        if seq % 3 == 0 {
            let lines: Vec<String> = (0..3 + rng.below(5))
                .map(|_| sentence(rng, 40, 120))
                .collect();
            parts.push(Part::Reasoning {
                text: lines.join("\n"),
            });
        }
        // 40-60 lines of prose and code, some wider than the terminal; now and then an empty
        // line, a tab, or one very long line (a minified file, a log dump).
        let n = 40 + rng.below(21);
        let mut text = String::new();
        for l in 0..n {
            match rng.below(20) {
                0 => {}
                1 => text.push_str("\tindented with a tab"),
                2 => text.push_str(&sentence(rng, 200, 200)),
                // markdown as agents write it: list items, emphasis, inline code
                3 => {
                    text.push_str("- ");
                    text.push_str(&sentence(rng, 10, 100));
                }
                4 => {
                    text.push_str("**Note** the `value`: ");
                    text.push_str(&sentence(rng, 10, 100));
                }
                _ => text.push_str(&sentence(rng, 10, 120)),
            }
            if l + 1 < n {
                text.push('\n');
            }
        }
        // a heading, a code block and a table on every fifth answer
        if seq % 5 == 0 {
            text.push_str("\n\n## What changed\n\n```rust\n");
            for _ in 0..5 + rng.below(6) {
                text.push_str("    let value = compute(\"input\", 42); // ");
                text.push_str(&sentence(rng, 10, 60));
                text.push('\n');
            }
            text.push_str("```\n\n| file | lines |\n|---|--:|\n");
            for k in 0..4 {
                text.push_str(&format!("| src/module{k}.rs | {} |\n", rng.below(500)));
            }
        }
        if seq % 500 == 0 {
            text.push('\n');
            text.push_str(&sentence(rng, 50_000, 0));
        }
        parts.push(Part::text(text));
        if seq % 2 == 0 {
            let output: Vec<String> = (0..5 + rng.below(20))
                .map(|_| sentence(rng, 30, 100))
                .collect();
            parts.push(Part::Tool {
                call_id: format!("call-{seq}"),
                tool: "bash".into(),
                status: if seq % 50 == 0 {
                    ToolStatus::Error
                } else {
                    ToolStatus::Completed
                },
                input: serde_json::json!({"command": format!("cargo test -p module{}", seq % 97)}),
                output: Some(output.join("\n")),
                error: None,
                started_at: Some(now() - chrono::Duration::seconds(100_000 - seq)),
                ended_at: Some(now() - chrono::Duration::seconds(99_990 - seq)),
            });
        }
    }
    let t = now() - chrono::Duration::seconds(100_000 - seq);
    Message {
        id: Uuid::from_u128(1_000_000 + seq as u128),
        session_id: Uuid::from_u128(ATTACHED),
        seq,
        role: if user {
            MessageRole::User
        } else {
            MessageRole::Assistant
        },
        status: MessageStatus::Complete,
        parts,
        error: None,
        harness_message_id: None,
        usage: None,
        diffs: Vec::new(),
        created_at: t,
        updated_at: t,
    }
}

const MESSAGES: i64 = 20_000;

/// An app attached to a session of `messages` messages, merged the way the cockpit pages them
/// in from the store (1000 at a time); the last one is still streaming.
fn attached_app(messages: i64) -> App {
    let mut app = app(100);
    app.sessions.select_index(usize::MAX);
    app.transcript = Some(Transcript::new(Uuid::from_u128(ATTACHED)));
    let mut rng = Lcg(42);
    let mut seq = 1;
    while seq <= messages {
        let page: Vec<Message> = (seq..(seq + 1000).min(messages + 1))
            .map(|s| {
                let mut m = message(&mut rng, s);
                if s == messages {
                    m.status = MessageStatus::Pending;
                }
                m
            })
            .collect();
        seq += page.len() as i64;
        app.update(Msg::Messages {
            session: Uuid::from_u128(ATTACHED),
            messages: page,
            complete: seq > messages,
        });
    }
    app
}

fn terminal(width: u16) -> Terminal<TestBackend> {
    Terminal::new(TestBackend::new(width, HEIGHT)).unwrap_or_else(|e| panic!("{e}"))
}

fn frame(term: &mut Terminal<TestBackend>, app: &App) {
    term.draw(|f| views::render(f, black_box(app), now()))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `cargo bench` passes `--bench`; without it (`cargo test --all-targets`, nextest) criterion
/// runs each benchmark once as a test, so the data is kept small there.
fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sessions(c: &mut Criterion) {
    let mut group = c.benchmark_group("sessions");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let size = |n: u64| if full_size() { n } else { n.min(1000) };
    let mut term = terminal(WIDTH);
    for n in [100u64, 10_000, 100_000] {
        // built only when this benchmark runs (a filter may skip it)
        let mut app = None;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let app = app.get_or_insert_with(|| self::app(size(n)));
            b.iter(|| frame(&mut term, app))
        });
    }
    let mut app = None;
    group.bench_function("100000_filtered", |b| {
        let app = app.get_or_insert_with(|| {
            let mut app = self::app(size(100_000));
            app.sessions.set_filter("status:failed team:payments");
            app.sessions.select_index(1000);
            app
        });
        b.iter(|| frame(&mut term, app))
    });
    let mut app = None;
    group.bench_function("100000_sorted_by_activity", |b| {
        let app = app.get_or_insert_with(|| {
            let mut app = self::app(size(100_000));
            app.sessions.set_sort(SortKey::Activity);
            app.sessions.select_index(1000);
            app
        });
        b.iter(|| frame(&mut term, app))
    });
    // A session does something (its activity moves it to the top), then a frame: the update
    // path under a sort key, which moves one entry and never re-sorts.
    let mut app = None;
    group.bench_function("100000_sorted_by_activity_change_each_frame", |b| {
        let (app, tick) = app.get_or_insert_with(|| {
            let mut app = self::app(size(100_000));
            app.sessions.set_sort(SortKey::Activity);
            app.sessions.select_index(1000);
            (app, 0u64)
        });
        let n = size(100_000);
        b.iter(|| {
            *tick += 1;
            let mut s = session(1 + (*tick * 7919) % n);
            s.last_activity_at = now() + chrono::Duration::seconds(*tick as i64);
            app.update(Msg::Session(Box::new(s)));
            frame(&mut term, app)
        })
    });
    // Typing in the `/` filter at 100k sorted by activity: "flaky 4" a key at a time, then
    // taken back a key at a time, over and over; a frame after each key. The first key
    // filters every session; the next ones look only at what the last one showed; taking a
    // key back shows what that filter showed before.
    let mut app = None;
    group.bench_function("100000_typing_a_filter", |b| {
        let (app, step) = app.get_or_insert_with(|| {
            let mut app = self::app(size(100_000));
            app.sessions.set_sort(SortKey::Activity);
            app.update(Msg::Key(KeyEvent::new(
                KeyCode::Char('/'),
                KeyModifiers::NONE,
            )));
            (app, 0usize)
        });
        let typed: Vec<char> = "flaky 4".chars().collect();
        b.iter(|| {
            let at = *step % (2 * typed.len());
            *step += 1;
            let key = match typed.get(at) {
                Some(&c) => KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE),
                None => KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE),
            };
            app.update(Msg::Key(key));
            frame(&mut term, app)
        })
    });
    // The preview on (issue 19: within the 2 ms of the list's frame): still, then a live delta
    // into the previewed message before each frame.
    let mut app = None;
    group.bench_function("100000_with_preview", |b| {
        let app = app.get_or_insert_with(|| previewed_app(size(100_000)));
        b.iter(|| frame(&mut term, app))
    });
    let mut app = None;
    group.bench_function("100000_with_preview_streaming", |b| {
        let app = app.get_or_insert_with(|| previewed_app(size(100_000)));
        b.iter(|| {
            app.update(Msg::Delta(LiveDelta {
                session: Uuid::from_u128(ATTACHED),
                seq: PREVIEWED,
                part: 0,
                text: "and more ".into(),
            }));
            frame(&mut term, app)
        })
    });
    group.finish();
}

/// The attached transcript, built once for all the transcript benchmarks that run.
struct Attached {
    app: App,
    messages: i64,
    lines: usize,
}

fn attached(state: &mut Option<Attached>) -> &mut Attached {
    state.get_or_insert_with(|| {
        let messages = if full_size() { MESSAGES } else { 500 };
        let started = Instant::now();
        let app = attached_app(messages);
        let built = started.elapsed();
        let inner = WIDTH - 2;
        let started = Instant::now();
        let lines = app.transcript.as_ref().map_or(0, |t| {
            t.window(inner, &app.theme, usize::from(HEIGHT)).total
        });
        eprintln!(
            "transcript: {messages} messages, {lines} lines at {inner} columns; built (merged \
             page by page) in {built:.2?}, first frame's layout {:.2?}",
            started.elapsed()
        );
        Attached {
            app,
            messages,
            lines,
        }
    })
}

fn transcript(c: &mut Criterion) {
    let mut group = c.benchmark_group("transcript_1M");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut state = None;
    let mut term = terminal(WIDTH);

    group.bench_function("follow", |b| {
        let a = attached(&mut state);
        if let Some(t) = a.app.transcript.as_mut() {
            t.follow = true;
        }
        b.iter(|| frame(&mut term, &a.app))
    });

    group.bench_function("middle", |b| {
        let a = attached(&mut state);
        if let Some(t) = a.app.transcript.as_mut() {
            t.follow = false;
            t.scroll = a.lines / 2;
        }
        b.iter(|| frame(&mut term, &a.app))
    });

    // A live delta into the last message (which has a 50k-character line), then a frame.
    group.bench_function("follow_streaming", |b| {
        let a = attached(&mut state);
        if let Some(t) = a.app.transcript.as_mut() {
            t.follow = true;
        }
        let seq = a.messages;
        b.iter(|| {
            a.app.update(Msg::Delta(LiveDelta {
                session: Uuid::from_u128(ATTACHED),
                seq,
                part: 0,
                text: "and more ".into(),
            }));
            frame(&mut term, &a.app)
        })
    });

    // Every frame at another width: the worst case, a resize (or wrap toggled) each frame.
    // The frame counts what it shows; the rest is counted between frames (below).
    let mut narrow = terminal(WIDTH - 1);
    let mut wide = true;
    group.bench_function("resize_every_frame", |b| {
        let a = attached(&mut state);
        b.iter(|| {
            wide = !wide;
            frame(if wide { &mut term } else { &mut narrow }, &a.app)
        })
    });

    // The same scrolled to the middle: where line N falls is an estimate until counted.
    group.bench_function("resize_every_frame_middle", |b| {
        let a = attached(&mut state);
        if let Some(t) = a.app.transcript.as_mut() {
            t.follow = false;
            t.scroll = a.lines / 2;
        }
        b.iter(|| {
            wide = !wide;
            frame(if wide { &mut term } else { &mut narrow }, &a.app)
        })
    });

    // A resize's whole cost: its frame, then every count made exact in the 1 ms slices the
    // cockpit's loop runs between frames.
    group.bench_function("resize_then_settle", |b| {
        let a = attached(&mut state);
        if let Some(t) = a.app.transcript.as_mut() {
            t.follow = true;
        }
        b.iter(|| {
            wide = !wide;
            frame(if wide { &mut term } else { &mut narrow }, &a.app);
            while !a.app.settle(Duration::from_millis(1)) {}
        })
    });
    group.finish();
}

criterion_group!(benches, sessions, transcript);
criterion_main!(benches);
