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
    let config = root.join("worker.toml");
    std::fs::write(&config, WORKER_CONFIG).unwrap();
    let mut child = agentdeck(root)
        .arg("worker")
        .env("AGENTDECK_DATABASE_URL", url)
        .env("AGENTDECK_CONFIG", &config)
        .env("AGENTDECK_LOG", "warn")
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
