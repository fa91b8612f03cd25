//! A new session's first minute, phase by phase: create → sandbox made → harness answers →
//! harness session open → first prompt delivered → first streamed text → turn done, and then a
//! second message on the warm session; p50/p90 over sessions created one after another.
//!
//! Everything is real: the core as `serve` runs it (`Core::open` over Postgres, its worker), the
//! local sandbox runtime, opencode, and LiteLLM's `mock-gpt` (which answers at once) from the
//! offline stack (`scripts/offline-stack.sh`). The gateway is called once before the first
//! session, so its own first-call cost (about 1.5 s, once per gateway process) is not counted.
//!
//! The times: each phase is the session's own `session.phase` event (stored when the core
//! entered it, timed by the database's clock, the same machine's); "delivered" is when the
//! first message was seen marked sent; "first text" is the first live delta; "done" the
//! phase `idle`. All from the moment `create_session` was called.
//!
//! `cargo bench --bench first_minute` (about 2 minutes): 12 sessions; FIRST_MINUTE_SESSIONS
//! changes it. Under `cargo test --all-targets` it runs 2 sessions as a smoke test that fails if
//! a phase is missing or a turn does not end. See BENCHMARKS.md.
//!
//! `FIRST_MINUTE_RUNTIME=kubernetes` runs the same on the test control plane
//! (`eval "$(scripts/test-cluster.sh up)"`: its kubelet runs the namespace `agentdeck`), the
//! warm agent's pool being agent-sandbox's SandboxWarmPool, reached through port-forwards as
//! from an operator's machine.

#[path = "support/mod.rs"]
mod support;

use agentdeck::core::live::{DeltaFeed, Live};
use agentdeck::core::{Core, CreateSession};
use agentdeck::model::{CoreKind, MessageRole, MessageStatus};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use uuid::Uuid;

/// How long one session may take, from create to the end of its first turn.
const TURN: Duration = Duration::from_secs(120);

/// The offline stack's gateway and opencode, started (and installed the first time) if needed.
struct Stack {
    gateway_url: String,
    opencode: String,
}

fn stack() -> Option<Stack> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/offline-stack.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("up")
        .output();
    let why = match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let gateway = text
                .lines()
                .find_map(|l| l.strip_prefix("export AGENTDECK_GATEWAY_URL="));
            let bin = text
                .lines()
                .find_map(|l| l.strip_prefix("export PATH="))
                .and_then(|p| p.split(':').next());
            match (gateway, bin) {
                (Some(gateway), Some(bin)) => {
                    return Some(Stack {
                        gateway_url: gateway.trim().to_string(),
                        opencode: format!("{}/opencode", bin.trim_matches('"')),
                    });
                }
                _ => "offline-stack.sh up printed no gateway or PATH".to_string(),
            }
        }
        Ok(out) => String::from_utf8_lossy(&out.stderr).to_string(),
        Err(e) => e.to_string(),
    };
    if std::env::var("AGENTDECK_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("first_minute needs the offline agent stack: {why}");
    }
    eprintln!("first_minute: SKIPPED, the offline agent stack is not available: {why}");
    None
}

/// The steps of a first minute, in order, as printed.
const STEPS: [&str; 7] = [
    "sandbox made",
    "harness answers",
    "harness session",
    "delivered",
    "first text",
    "done",
    "warm message",
];

/// One session's times from create, by step.
type Times = BTreeMap<&'static str, Duration>;

fn since(t0: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - t0).to_std().unwrap_or_default()
}

/// Waits for the first text of an answer after seq `after`, streamed or stored (a turn that
/// ends before its session's bus is followed is only stored); its time.
async fn first_text(
    core: &Core,
    session: Uuid,
    feed: &mut DeltaFeed,
    after: i64,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + TURN;
    let mut look = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            live = feed.next() => match live {
                Live::Delta(d) if d.seq > after => return Some(Instant::now()),
                _ => continue,
            },
            _ = look.tick() => {
                let stored = core.messages(session, after, 20).await.unwrap_or_default();
                if stored
                    .iter()
                    .any(|m| m.role == MessageRole::Assistant && !m.text().is_empty())
                {
                    return Some(Instant::now());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Waits until `session`'s message `seq` is marked sent; its time.
async fn delivered(core: &Core, session: Uuid, seq: i64) -> Option<Instant> {
    let deadline = Instant::now() + TURN;
    while Instant::now() < deadline {
        if let Ok(messages) = core.messages(session, seq - 1, 1).await
            && messages
                .first()
                .is_some_and(|m| m.seq == seq && m.status != MessageStatus::Pending)
        {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// The session's phases with when the core entered each (the first time).
async fn phases(core: &Core, session: Uuid) -> Vec<(String, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let events = core.events(session, after, 500).await.unwrap_or_default();
        let Some(last) = events.last() else { break };
        after = last.seq;
        for e in events.into_iter().filter(|e| e.kind == "session.phase") {
            if let Some(phase) = e.payload["phase"].as_str() {
                out.push((phase.to_string(), e.at));
            }
        }
    }
    out
}

async fn wait_idle(core: &Core, session: Uuid, after: usize) -> Option<DateTime<Utc>> {
    let deadline = Instant::now() + TURN;
    while Instant::now() < deadline {
        let all = phases(core, session).await;
        if let Some((_, at)) = all.iter().skip(after).find(|(p, _)| p == "idle") {
            return Some(*at);
        }
        if all.iter().any(|(p, _)| p == "failed") {
            let s = core.get_session(session).await.ok();
            panic!(
                "session {session} failed: {:?}",
                s.and_then(|s| s.failure_reason)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// One session of `agent`: its first minute; then a second message on it.
async fn one(core: &Core, agent: &str) -> Times {
    let wall0 = Utc::now();
    let t0 = Instant::now();
    let session = core
        .create_session(CreateSession {
            agent_id: Some(agent.into()),
            initial_prompt: Some("hello".into()),
            ..Default::default()
        })
        .await
        .expect("create a session");
    let id = session.id;
    let mut feed = core.watch_deltas(id);
    let (text, sent) = tokio::join!(first_text(core, id, &mut feed, 1), delivered(core, id, 1));
    let done = wait_idle(core, id, 0).await;
    let mut times = Times::new();
    let all = phases(core, id).await;
    let first = |name: &str| all.iter().find(|(p, _)| p == name).map(|(_, at)| *at);
    for (step, phase) in [
        ("sandbox made", "sandbox_pending"),
        ("harness answers", "harness_starting"),
        ("harness session", "harness_ready"),
    ] {
        match first(phase) {
            Some(at) => {
                times.insert(step, since(wall0, at));
            }
            None => panic!("session {id} never entered {phase}: {all:?}"),
        }
    }
    times.insert(
        "delivered",
        sent.expect("the first prompt to be sent")
            .duration_since(t0),
    );
    times.insert(
        "first text",
        text.expect("streamed text of the first turn")
            .duration_since(t0),
    );
    times.insert(
        "done",
        since(wall0, done.expect("the first turn to end within 2 minutes")),
    );

    // The same session, warm: a second message.
    let idles = all.len();
    let t1 = Instant::now();
    let asked = core
        .send_message(id, "hello again")
        .await
        .expect("send a second message");
    let text = first_text(core, id, &mut feed, asked.seq).await;
    wait_idle(core, id, idles).await;
    times.insert(
        "warm message",
        text.expect("streamed text of the second turn")
            .duration_since(t1),
    );
    let _ = core.end(id).await;
    times
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("first_minute: test");
        }
        return;
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let Some(stack) = stack() else { return };
    let n: usize = std::env::var("FIRST_MINUTE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full_size() { 12 } else { 2 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let db = BenchDb::postgres().await;
        let root = tempfile::tempdir().expect("a temp dir");
        let root_path = root.path().to_path_buf();
        // FIRST_MINUTE_KEEP=1 leaves the sandboxes' folders (and logs) to look at.
        let _root = if std::env::var("FIRST_MINUTE_KEEP").is_ok() {
            eprintln!("first_minute: keeping {}", root.keep().display());
            None
        } else {
            Some(root)
        };
        let command = format!(
            "command = [\"{}\", \"serve\", \"--hostname\", \"{{host}}\", \"--port\", \"{{port}}\"]",
            stack.opencode
        );
        let text = format!(
            "[agents.coder]\nmodel = \"litellm/mock-gpt\"\n{command}\n\
             [agents.pooled]\nmodel = \"litellm/mock-gpt\"\nwarm = 2\n{command}\n\
             [gateway]\nurl = \"{}\"\n[sessions]\nphase_timeout = \"90s\"\n",
            stack.gateway_url
        );
        let kubernetes = std::env::var("FIRST_MINUTE_RUNTIME").as_deref() == Ok("kubernetes");
        let text = if kubernetes {
            format!(
                "{text}[kubernetes]\nnamespace = \"agentdeck\"\nendpoint = \"port-forward\"\n\
                 bootstrap_program = \"{}\"\n",
                env!("CARGO_BIN_EXE_agentdeck")
            )
            .replace("[agents.coder]\n", "[agents.coder]\nimage = \"opencode:local\"\n")
            .replace("[agents.pooled]\n", "[agents.pooled]\nimage = \"opencode:local\"\n")
        } else {
            text
        };
        let mut config = config(&text, &db.url(), &root_path);
        config.local.root = root_path.join("sandboxes");
        config.local.program = Some(env!("CARGO_BIN_EXE_agentdeck").into());
        let runtime: Arc<dyn agentdeck::runtime::SandboxRuntime> = if kubernetes {
            let path = std::env::var("AGENTDECK_TEST_KUBECONFIG")
                .expect("AGENTDECK_TEST_KUBECONFIG: eval \"$(scripts/test-cluster.sh up)\"");
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("the kubeconfig");
            let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("a client configuration");
            Arc::new(
                agentdeck::runtime::kubernetes::KubernetesRuntime::with_client(
                    kube_config,
                    config.kubernetes.clone(),
                    false,
                )
                .expect("the Kubernetes runtime"),
            )
        } else {
            Arc::new(
                agentdeck::runtime::local::LocalRuntime::new(&config.local)
                    .expect("local runtime"),
            )
        };
        let where_ = if kubernetes {
            "test control plane"
        } else {
            "local runtime"
        };
        let harness =
            Arc::new(agentdeck::harness::opencode::Opencode::new().expect("opencode client"));
        let core = Core::open(config, runtime.clone(), harness)
            .await
            .expect("open the core");
        let worker = agentdeck::core::worker::spawn(core.clone(), CoreKind::Serve);
        warm_the_gateway(&stack.gateway_url).await;

        for (agent, how) in [("pooled", "warm (a pool of 2)"), ("coder", "cold")] {
            let mut all: Vec<Times> = Vec::new();
            for k in 0..n {
                // Each session on a quiet machine: the pool full again, none of it starting.
                pool_full(&core, "pooled", 2).await;
                let times = one(&core, agent).await;
                if !full_size() || std::env::var("FIRST_MINUTE_VERBOSE").is_ok() {
                    println!("first_minute: {how} session {}: {}", k + 1, line(&times));
                }
                all.push(times);
            }
            println!(
                "first_minute: {where_}, {how}, opencode + LiteLLM mock-gpt, {n} sessions one after another, from create:"
            );
            for q in [0.5, 0.9] {
                let mut out = Vec::new();
                for step in STEPS {
                    let mut v: Vec<Duration> =
                        all.iter().filter_map(|t| t.get(step).copied()).collect();
                    assert_eq!(v.len(), all.len(), "{step} missing in a session");
                    v.sort();
                    out.push(format!("{step} {:.2}s", quantile(&v, q).as_secs_f64()));
                }
                println!("  p{:.0}: {}", q * 100.0, out.join(" | "));
            }
        }
        worker.stop(Duration::from_secs(10)).await;
        // Sandboxes outlive the process that started them, and the ended sessions' may not be
        // destroyed yet (their end is a task): these are the benchmark's, removed with it.
        if let Err(e) = runtime.keep_warm(&[]).await {
            eprintln!("first_minute: cannot remove the warm sandboxes: {e}");
        }
        for listed in runtime.list().await.unwrap_or_default() {
            if let Err(e) = runtime.destroy(&listed.sandbox).await {
                eprintln!("first_minute: cannot remove sandbox {}: {e}", listed.sandbox.name);
            }
        }
    });
}

/// Waits until `agent`'s warm pool has `want` sandboxes ready and none starting.
async fn pool_full(core: &Core, agent: &str, want: usize) {
    let deadline = Instant::now() + TURN;
    while Instant::now() < deadline {
        if core
            .pool_health()
            .await
            .iter()
            .any(|p| p.agent == agent && p.ready >= want && p.starting == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{agent}'s warm pool was not full within {TURN:?}: {:?}",
        core.pool_health().await
    );
}

fn line(t: &Times) -> String {
    STEPS
        .iter()
        .filter_map(|s| t.get(s).map(|d| format!("{s} {:.2}s", d.as_secs_f64())))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One chat call, so that the gateway's first-call cost is not any session's (the offline
/// stack's gateway takes no key on loopback).
async fn warm_the_gateway(url: &str) {
    let _ = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": "warm up"}]
        }))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
}
