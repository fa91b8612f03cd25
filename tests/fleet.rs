//! The fleet on one Postgres, with the real programs: two `agentdeck serve` processes, a cockpit
//! beside them, real opencode sandboxes (the local runtime, in one data dir, as processes of one
//! machine share it) and the offline stack's scripted model. The serves share the live sessions
//! and the cockpit holds nothing; a serve frozen (SIGSTOP) or killed (SIGKILL) in the middle of
//! a turn loses its sessions within its lease, the other serve carries the turn on, every
//! message of it is stored exactly once, and the frozen one, woken, writes nothing more. Text
//! streamed in one process is seen live by the others (the cockpit, the other serve's REST
//! event stream).

mod common;

use agentdeck::model::CoreKind;
use common::agent_api::{Api, Serve, start_serve_logged};
use common::{TestDb, eventually, free_port};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Short, so that takeovers happen within the test; a heartbeat is every third of it.
const FLEET: &str = "[worker]\nfleet_lease = \"3s\"\n";
/// Lease, heartbeat and a look at the shares, with room for a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(45);

/// The pid in a core's name (host:pid:tag).
fn pid_of(core: &str) -> i32 {
    core.split(':').nth(1).and_then(|p| p.parse().ok()).unwrap()
}

fn signal(pid: i32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Who follows each followed session now.
async fn owners(store: &Arc<dyn agentdeck::store::Store>) -> BTreeMap<Uuid, Option<String>> {
    store
        .followed_sessions("local")
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The session's messages, with what makes them one: seq, role, the harness's id, the text of
/// each part and each tool's input.
fn shape(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            json!({
                "seq": m["seq"], "role": m["role"], "status": m["status"],
                "harness": m["harness_message_id"],
                "parts": m["parts"].as_array().map(|ps| ps.iter().map(|p| json!({
                    "type": p["type"], "text": p["text"], "input": p["input"], "output": p["output"],
                    "status": p["status"],
                })).collect::<Vec<_>>()),
            })
        })
        .collect()
}

/// The transcript after a turn whose tool printed `ticks` lines: in order, each harness message
/// once, one tool call with all of its output, one answer.
fn assert_whole_once(messages: &[Value], marker: &str, ticks: usize) {
    common::agent_api::assert_in_order(messages);
    let mut harness_ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["harness_message_id"].as_str())
        .collect();
    let all = harness_ids.len();
    harness_ids.sort();
    harness_ids.dedup();
    assert_eq!(harness_ids.len(), all, "each harness message stored once");
    let tools: Vec<&Value> = messages
        .iter()
        .flat_map(|m| m["parts"].as_array().into_iter().flatten())
        .filter(|p| {
            p["type"] == "tool"
                && p["input"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(marker))
        })
        .collect();
    assert_eq!(tools.len(), 1, "one tool call: {tools:?}");
    assert_eq!(tools[0]["status"], "completed", "{:?}", tools[0]);
    let output = tools[0]["output"].as_str().unwrap_or("");
    for i in 1..=ticks {
        assert!(
            output.contains(&format!("{marker}-{i}\n")),
            "tick {i} in the output: {output:?}"
        );
    }
    let answers = messages
        .iter()
        .filter(|m| {
            m["role"] == "assistant"
                && m["parts"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p["text"]
                            .as_str()
                            .is_some_and(|t| t.contains(&format!("Output: {marker}-1")))
                    })
                })
        })
        .count();
    assert_eq!(answers, 1, "one answer to the turn");
}

/// Sends `session` a turn whose tool call runs for a while (`ticks` lines, a fifth of a second
/// apart), and waits until the tool call runs.
async fn start_long_turn(api: &Api, session: Uuid, marker: &str, ticks: usize) {
    let text = format!("run: for i in $(seq 1 {ticks}); do echo {marker}-$i; sleep 0.2; done");
    let (status, _) = api
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({ "text": text }),
        )
        .await;
    assert_eq!(status, 202);
    eventually(TAKEOVER, "the long tool call to run", || async {
        let messages = api.messages(&session.to_string()).await;
        messages
            .iter()
            .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
            .any(|p| {
                p["type"] == "tool"
                    && p["status"] == "running"
                    && p["input"]["command"]
                        .as_str()
                        .is_some_and(|c| c.contains(marker))
            })
            .then_some(())
    })
    .await;
}

/// Reads `event: delta` items of a session's event stream until their text holds `want`.
async fn sse_deltas(resp: reqwest::Response, want: &str) -> String {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let mut pending = String::new();
    let mut text = String::new();
    let mut kind = String::new();
    while let Some(chunk) = body.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = pending.find('\n') {
            let line = pending[..end].trim_end_matches('\r').to_string();
            pending.drain(..=end);
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:")
                && kind == "delta"
            {
                let delta: Value = serde_json::from_str(data.trim()).unwrap();
                text.push_str(delta["text"].as_str().unwrap_or(""));
                if text.contains(want) {
                    return text;
                }
            } else if line.is_empty() {
                kind.clear();
            }
        }
    }
    text
}

/// The fleet's roles, each held by one process at a time.
const ROLES: [&str; 4] = ["idle-reaper", "notifier", "reconciler", "warm-pools"];
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_share_the_sessions_and_carry_on_when_one_freezes_or_dies() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let root = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let mut serves: BTreeMap<i32, (Serve, Api, &str)> = BTreeMap::new();
    for (port, log) in [(port_a, "a.log"), (port_b, "b.log")] {
        let serve = start_serve_logged(root.path(), db.url(), &stack, port, FLEET, log);
        let pid = serve.0.id() as i32;
        serves.insert(pid, (serve, Api::answering(port).await, log));
    }

    // A cockpit beside them, on the same store (its worker, as the cockpit runs it): it must
    // stand aside. It is in this process, with stand-ins for the runtime and the harness that
    // it must never get to use.
    let cockpit = {
        let config = common::config_with(
            &format!("{FLEET}[agents.coder]\nmodel = \"litellm/scripted\"\ncommand = [\"true\"]\n"),
            db.url(),
            root.path(),
        );
        agentdeck::core::Core::with_store(
            config,
            db.open().await,
            Arc::new(common::fakes::InTestRuntime::default()),
            Arc::new(common::fakes::InTestHarness::default()),
        )
    };
    let cockpit_worker = agentdeck::core::worker::spawn(cockpit.clone(), CoreKind::Cockpit);

    // 1. Four sessions, answered; the serves follow two each, the cockpit none.
    let first = serves.values().next().map(|(_, api, _)| api).unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        let (status, created) = first
            .post(
                "/api/sessions",
                json!({"agent_id": "coder", "initial_prompt": format!("hello {n}")}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    for (n, id) in ids.iter().enumerate() {
        first
            .reply_containing(&id.to_string(), &format!("Scripted reply to: hello {n}"))
            .await;
    }
    let fleet = eventually(TAKEOVER, "the serves to share the sessions", || async {
        let fleet = cockpit.fleet().await.unwrap();
        let shares: Vec<i64> = fleet.working().map(|c| c.sessions).collect();
        (shares == [2, 2]).then_some(fleet)
    })
    .await;
    let me = fleet
        .cores
        .iter()
        .find(|c| c.id == cockpit.instance())
        .expect("the cockpit is a core");
    assert_eq!(me.kind, CoreKind::Cockpit);
    assert!(
        !me.fleet && me.sessions == 0 && me.roles.is_empty(),
        "the cockpit holds nothing: {me:?}"
    );
    assert!(fleet.working().all(|c| c.kind == CoreKind::Serve));
    assert_eq!(fleet.summary(), "fleet: 2 cores");
    let mut roles: Vec<String> = fleet.working().flat_map(|c| c.roles.clone()).collect();
    roles.sort();
    assert_eq!(roles, ROLES, "each role held once");
    let metrics = first
        .http
        .get(format!("{}/metrics", first.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shares: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("agentdeck_fleet_core_sessions{") && l.contains("kind=\"serve\""))
        .collect();
    assert_eq!(shares.len(), 2, "{metrics}");
    assert!(
        shares.iter().all(|l| l.ends_with("\"true\"} 2")),
        "{shares:?}"
    );
    assert!(metrics.contains("agentdeck_fleet_this_core{"), "{metrics}");
    // `doctor` says the same: each working core with its sessions and roles, and the cockpit
    // standing aside.
    let (doctor_root, url) = (root.path().join("doctor"), db.url().to_string());
    let doctor = tokio::task::spawn_blocking(move || {
        common::agentdeck(&doctor_root)
            .args(["doctor", "-o", "json"])
            .env("AGENTDECK_DATABASE_URL", &url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let checks: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor's JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&doctor.stdout),
            String::from_utf8_lossy(&doctor.stderr)
        )
    });
    let fleet_line = checks
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "fleet"))
        .and_then(|c| c["detail"].as_str())
        .unwrap_or_else(|| panic!("no fleet line: {checks}"))
        .to_string();
    assert!(
        fleet_line.starts_with("2 working: ")
            && fleet_line.matches("(serve: 2 sessions").count() == 2
            && fleet_line.ends_with("; 1 cockpit(s) standing aside"),
        "{fleet_line}"
    );
    for role in ROLES {
        assert_eq!(fleet_line.matches(role).count(), 1, "{role}: {fleet_line}");
    }

    // 1b. Live text reaches the processes that do not follow the session, as it streams: the
    // other serve's event stream (REST) and the cockpit.
    let streamed = ids[2];
    let owner = pid_of(owners(&store).await[&streamed].as_deref().unwrap());
    let onlooker = serves
        .iter()
        .find(|(pid, _)| **pid != owner)
        .map(|(_, (_, api, _))| api)
        .unwrap();
    let after = onlooker.get(&format!("/api/sessions/{streamed}")).await["last_event_seq"]
        .as_i64()
        .unwrap();
    let sse = onlooker
        .http
        .get(format!(
            "{}/api/sessions/{streamed}/events?after_seq={after}",
            onlooker.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    let mut cockpit_live = cockpit.watch_deltas(streamed);
    // The cockpit's watch is listening once a delta sent to it arrives (the owner's first
    // deltas may come before; the stored text has them).
    let (status, _) = onlooker
        .post(
            &format!("/api/sessions/{streamed}/messages"),
            json!({"text": "stream this answer word by word please"}),
        )
        .await;
    assert_eq!(status, 202);
    let want = "word by word please";
    let heard = tokio::time::timeout(TAKEOVER, async {
        let mut text = String::new();
        while !text.contains(want) {
            if let agentdeck::core::live::Live::Delta(d) = cockpit_live.next().await {
                assert_eq!(d.session, streamed);
                text.push_str(&d.text);
            }
        }
        text
    })
    .await
    .expect("the cockpit hears the streamed text");
    assert!(heard.contains(want), "{heard}");
    let rest = tokio::time::timeout(TAKEOVER, sse_deltas(sse, want))
        .await
        .expect("the other serve's event stream carries the streamed text");
    assert!(rest.contains(want), "{rest}");
    drop(cockpit_live);

    // 2. A serve frozen in the middle of a turn of a session it follows.
    let frozen_session = ids[0];
    let frozen_core = owners(&store).await[&frozen_session].clone().unwrap();
    let frozen = pid_of(&frozen_core);
    let other = *serves.keys().find(|p| **p != frozen).unwrap();
    let other_api = &serves[&other].1;
    start_long_turn(other_api, frozen_session, "freeze", 25).await;
    signal(frozen, libc::SIGSTOP);
    eventually(
        TAKEOVER,
        "the other serve to follow the frozen one's sessions",
        || async {
            let now = owners(&store).await;
            now.values()
                .all(|o| o.as_deref().is_some_and(|o| pid_of(o) == other))
                .then_some(())
        },
    )
    .await;
    let messages = other_api
        .reply_containing(&frozen_session.to_string(), "Output: freeze-1")
        .await;
    assert_whole_once(&messages, "freeze", 25);
    let stored = shape(&messages);

    // Woken, it finds its lease gone, takes a new epoch, and its stale pump writes nothing.
    signal(frozen, libc::SIGCONT);
    let log = root.path().join(serves[&frozen].2);
    eventually(
        TAKEOVER,
        "the woken serve to know its lease ran out",
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("fleet lease had run out")
                .then_some(())
        },
    )
    .await;
    // It takes its share again under its new epoch (two each); the transcript is as it was.
    eventually(TAKEOVER, "the shares to even out again", || async {
        let fleet = cockpit.fleet().await.unwrap();
        let shares: Vec<i64> = fleet.working().map(|c| c.sessions).collect();
        (shares == [2, 2]).then_some(())
    })
    .await;
    assert_eq!(
        shape(&other_api.messages(&frozen_session.to_string()).await),
        stored,
        "nothing written by the woken serve"
    );

    // 3. A serve killed in the middle of a turn of a session it follows.
    let killed_session = ids[1];
    let killed_core = owners(&store).await[&killed_session].clone().unwrap();
    let killed = pid_of(&killed_core);
    let survivor = *serves.keys().find(|p| **p != killed).unwrap();
    let survivor_api = &serves[&survivor].1;
    start_long_turn(survivor_api, killed_session, "kill", 25).await;
    signal(killed, libc::SIGKILL);
    let messages = survivor_api
        .reply_containing(&killed_session.to_string(), "Output: kill-1")
        .await;
    assert_whole_once(&messages, "kill", 25);
    let fleet = eventually(TAKEOVER, "the survivor to follow every session", || async {
        let fleet = cockpit.fleet().await.unwrap();
        let working: Vec<_> = fleet.working().collect();
        (working.len() == 1 && working[0].sessions == 4 && working[0].roles.len() == ROLES.len())
            .then_some(fleet.clone())
    })
    .await;
    assert!(
        !fleet.this_runs_fleet,
        "the cockpit still stands aside while a serve lives"
    );

    // The sessions end (their sandboxes go with them).
    for id in &ids {
        let resp = survivor_api
            .http
            .delete(format!("{}/api/sessions/{id}", survivor_api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
    for id in &ids {
        eventually(TAKEOVER, "the session to end", || async {
            let s = survivor_api.get(&format!("/api/sessions/{id}")).await;
            (s["status"] == "dead").then_some(())
        })
        .await;
    }

    // 4. With no serve left, the cockpit takes the fleet's work up (a laptop on its own).
    drop(serves);
    eventually(
        TAKEOVER,
        "the cockpit to take the fleet's work up",
        || async {
            let fleet = cockpit.fleet().await.unwrap();
            (fleet.summary() == "fleet: this cockpit").then_some(())
        },
    )
    .await;
    cockpit_worker.stop(Duration::from_secs(10)).await;
}
