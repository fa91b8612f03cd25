//! The worker fleet on one Postgres: real `agentdeck worker` processes claiming tasks with
//! `FOR UPDATE SKIP LOCKED` and leases. Every task runs exactly once; a worker SIGKILLed in the
//! middle of a task has that task finished, once, by the other.

mod common;

use agentdeck::model::{NewSession, NewTask, TaskKind, TaskQuery, TaskStatus};
use agentdeck::store::Store;
use common::{TestDb, agentdeck, eventually};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const WORKER_CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "2s"
backoff = "100ms"
max_backoff = "500ms"
"#;

struct Worker {
    child: Child,
    name: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `agentdeck worker` on `url` and waits until it says it runs; returns it with the
/// name it goes by in `locked_by` / `completed_by`.
fn start_worker(root: &std::path::Path, url: &str) -> Worker {
    start_worker_with(root, url, "", &[])
}

/// [`start_worker`] with more configuration and environment.
fn start_worker_with(
    root: &std::path::Path,
    url: &str,
    more_config: &str,
    env: &[(&str, &str)],
) -> Worker {
    let config = root.join(format!("worker-{}.toml", Uuid::now_v7()));
    std::fs::write(&config, format!("{WORKER_CONFIG}\n{more_config}")).unwrap();
    let mut child = agentdeck(root)
        .arg("worker")
        .env("AGENTDECK_DATABASE_URL", url)
        .env("AGENTDECK_CONFIG", &config)
        .env("AGENTDECK_LOG", "warn")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start agentdeck worker");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let name = loop {
        let line = lines
            .next()
            .expect("worker exited before it started")
            .unwrap();
        if let Some(rest) = line.strip_prefix("agentdeck worker ") {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    // Keep draining its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Worker { child, name }
}

async fn echo_events(store: &Arc<dyn Store>, session: Uuid) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(session, after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(
            page.into_iter()
                .filter(|e| e.kind == "diag.echo")
                .map(|e| e.payload),
        );
    }
    out
}

async fn session(store: &Arc<dyn Store>) -> Uuid {
    store
        .insert_session(&NewSession {
            agent_id: "opencode".into(),
            team: "default".into(),
            title: "worker fleet".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_a_thousand_tasks_each_exactly_once() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let root = tempfile::tempdir().unwrap();
    let session = session(&store).await;
    let a = start_worker(root.path(), db.url());
    let b = start_worker(root.path(), db.url());

    let mut ids = Vec::new();
    for i in 0..1000 {
        let task =
            NewTask::new(TaskKind::DiagEcho, serde_json::json!({"i": i})).for_session(session);
        ids.push(store.enqueue_task(&task).await.unwrap().id);
    }
    eventually(
        Duration::from_secs(120),
        "all 1000 tasks to be done",
        || async {
            let counts = store.count_tasks().await.unwrap();
            (counts == vec![(TaskStatus::Done, 1000)]).then_some(())
        },
    )
    .await;

    let tasks = store.list_tasks(&TaskQuery::default()).await.unwrap();
    assert_eq!(tasks.len(), 1000);
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for t in &tasks {
        assert_eq!(t.attempts, 1, "task {} ran {} times", t.id, t.attempts);
        *by_worker
            .entry(t.completed_by.clone().unwrap())
            .or_default() += 1;
    }
    assert_eq!(by_worker.len(), 2, "both workers took part: {by_worker:?}");
    assert!(by_worker.contains_key(&a.name) && by_worker.contains_key(&b.name));

    // Each task's effect happened exactly once.
    let events = echo_events(&store, session).await;
    let mut finished: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e["stage"] == "finished") {
        *finished
            .entry(e["task"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(finished.len(), 1000);
    assert!(finished.values().all(|n| *n == 1));
    for id in ids {
        assert_eq!(finished.get(&id.to_string()), Some(&1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_is_finished_once_by_the_other() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let root = tempfile::tempdir().unwrap();
    let session = session(&store).await;
    let mut doomed = start_worker(root.path(), db.url());

    let task = store
        .enqueue_task(
            &NewTask::new(TaskKind::DiagEcho, serde_json::json!({"sleep_ms": 4000}))
                .for_session(session),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the first worker to start the task",
        || async {
            let events = echo_events(&store, session).await;
            events
                .iter()
                .any(|e| e["stage"] == "started" && e["worker"] == doomed.name.as_str())
                .then_some(())
        },
    )
    .await;
    let survivor = start_worker(root.path(), db.url());
    // SIGKILL: no goodbye, no lease released.
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();

    let done = eventually(
        Duration::from_secs(30),
        "the other worker to finish the task",
        || async {
            let t = store.get_task(task.id).await.unwrap().unwrap();
            (t.status == TaskStatus::Done).then_some(t)
        },
    )
    .await;
    assert_eq!(done.completed_by.as_deref(), Some(survivor.name.as_str()));
    assert_eq!(done.attempts, 2);
    assert!(
        done.last_error
            .unwrap_or_default()
            .contains("lease expired")
    );
    let events = echo_events(&store, session).await;
    let finished: Vec<_> = events.iter().filter(|e| e["stage"] == "finished").collect();
    assert_eq!(finished.len(), 1, "finished exactly once: {events:?}");
    assert_eq!(finished[0]["worker"], survivor.name.as_str());
}

/// What the tests' webhook receiver was sent: one entry per POST, with what it answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    delivery: String,
    event: String,
    signature: Option<String>,
    body: Vec<u8>,
    answered: u16,
}

/// A real HTTP receiver for webhooks: `/flaky` answers 503 to the first POST of each delivery,
/// `/refuses` always 400, everything else 200.
async fn webhook_receiver() -> (String, Arc<std::sync::Mutex<Vec<Received>>>) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let log: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
    let seen = log.clone();
    let app = axum::Router::new().fallback(
        move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let delivery = header("x-agentdeck-delivery").unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                let path = uri.path().to_string();
                let answered = match path.as_str() {
                    "/refuses" => StatusCode::BAD_REQUEST,
                    "/flaky"
                        if !seen
                            .iter()
                            .any(|r| r.path == path && r.delivery == delivery) =>
                    {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::OK,
                };
                seen.push(Received {
                    path,
                    delivery,
                    event: header("x-agentdeck-event").unwrap_or_default(),
                    signature: header("x-agentdeck-signature"),
                    body: body.to_vec(),
                    answered: answered.as_u16(),
                });
                (answered, "noted")
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

/// `serve`'s webhooks with a fleet of two workers on one Postgres: every notice reaches each
/// webhook that wants it exactly once (a 503 is retried; a 400 is given up at once, saying
/// why), a team's webhook hears only its team, and each POST is signed with its secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_hear_each_notice_once_from_a_fleet_of_two() {
    use agentdeck::model::{AskKind, NewAsk, Phase, SessionPatch, SessionStatus};
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let root = tempfile::tempdir().unwrap();
    let (receiver, log) = webhook_receiver().await;
    let hooks = format!(
        r#"
[[webhooks]]
name = "everything"
url = "{receiver}/flaky"
secret_env = "TEST_WEBHOOK_SECRET"

[[webhooks]]
name = "blue-done"
url = "{receiver}/blue"
team = "blue"
events = ["done"]

[[webhooks]]
name = "broken"
url = "{receiver}/refuses"
events = ["failed"]
"#
    );
    let secret = [("TEST_WEBHOOK_SECRET", "hunter2-webhook")];
    let _a = start_worker_with(root.path(), db.url(), &hooks, &secret);
    let _b = start_worker_with(root.path(), db.url(), &hooks, &secret);

    let new = |team: &str, title: &str| NewSession {
        agent_id: "opencode".into(),
        team: team.into(),
        title: title.into(),
        ..Default::default()
    };
    let red = store
        .insert_session(&new("red", "fix the build"))
        .await
        .unwrap();
    let blue = store
        .insert_session(&new("blue", "write docs"))
        .await
        .unwrap();
    let set = |id, status, phase| {
        let store = store.clone();
        async move {
            store
                .update_session(id, &SessionPatch::status(status, phase))
                .await
                .unwrap();
        }
    };
    set(red.id, SessionStatus::Busy, Phase::Ready).await;
    store
        .record_ask(
            red.id,
            &NewAsk {
                id: "per_1".into(),
                kind: AskKind::Permission,
                title: "bash".into(),
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    set(blue.id, SessionStatus::Busy, Phase::Ready).await;
    set(blue.id, SessionStatus::Idle, Phase::Ready).await;
    store
        .update_session(
            red.id,
            &SessionPatch {
                failure_reason: Some(Some("the pod was OOMKilled".into())),
                ..SessionPatch::status(SessionStatus::Failed, Phase::Failed)
            },
        )
        .await
        .unwrap();

    // everything: 3 notices, each refused once (503) then taken; blue-done: 1; broken: 1.
    let delivered = |path: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path && r.answered == 200)
            .cloned()
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(60), "every delivery", || async {
        (delivered("/flaky").len() >= 3 && !delivered("/blue").is_empty()).then_some(())
    })
    .await;
    let dead = eventually(
        Duration::from_secs(30),
        "the refused delivery to give up",
        || async {
            let tasks = store
                .list_tasks(&TaskQuery {
                    kind: Some(TaskKind::Webhook.as_str().into()),
                    statuses: Some(vec![TaskStatus::Dead]),
                    ..Default::default()
                })
                .await
                .unwrap();
            (!tasks.is_empty()).then_some(tasks)
        },
    )
    .await;
    // Let anything sent twice show before counting.
    eventually(
        Duration::from_secs(30),
        "no webhook task left to run",
        || async {
            let open = store
                .list_tasks(&TaskQuery {
                    kind: Some(TaskKind::Webhook.as_str().into()),
                    statuses: Some(vec![TaskStatus::Queued, TaskStatus::Running]),
                    ..Default::default()
                })
                .await
                .unwrap();
            open.is_empty().then_some(())
        },
    )
    .await;

    let everything = delivered("/flaky");
    let mut events: Vec<(String, String)> = everything
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["event"], r.event.as_str());
            (
                r.event.clone(),
                body["session"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.sort();
    let mut want = vec![
        ("waiting".to_string(), red.id.to_string()),
        ("done".to_string(), blue.id.to_string()),
        ("failed".to_string(), red.id.to_string()),
    ];
    want.sort();
    assert_eq!(events, want, "each notice once: {everything:#?}");
    let refused = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/flaky" && r.answered == 503)
        .count();
    assert_eq!(refused, 3, "each first try was refused and retried");
    // Signed with the secret (checked here with ring, independently of agentdeck's signer).
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hunter2-webhook");
    for r in &everything {
        let sig = r.signature.as_deref().expect("a signature");
        let hex = sig.strip_prefix("sha256=").expect("sha256=");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        ring::hmac::verify(&key, &r.body, &tag).expect("a valid signature");
    }
    for r in &everything {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        match r.event.as_str() {
            "waiting" => {
                assert_eq!(body["text"], "fix the build waits for you");
                assert_eq!(body["asks"][0]["title"], "bash");
            }
            "failed" => assert_eq!(body["text"], "fix the build failed: the pod was OOMKilled"),
            _ => assert_eq!(body["session"]["team"], "blue"),
        }
    }
    // The team's webhook heard only its team's turn, unsigned.
    let blue_heard = delivered("/blue");
    assert_eq!(blue_heard.len(), 1, "{blue_heard:#?}");
    assert_eq!(blue_heard[0].event, "done");
    assert!(blue_heard[0].signature.is_none());
    // The refusing receiver was tried once: a 400 is not retried.
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    let why = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("\"broken\" answered 400"), "{why}");
    let tried = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/refuses")
        .count();
    assert_eq!(tried, 1);
    // The secret is in no task and no log line of the store.
    let tasks = store.list_tasks(&TaskQuery::default()).await.unwrap();
    assert!(!format!("{tasks:?}").contains("hunter2"));
}
