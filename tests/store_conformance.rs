//! One conformance suite for both stores: every test runs on a fresh database of the real
//! Postgres at 127.0.0.1:5432 and on a fresh SQLite file.

mod common;

use agentdeck::model::{
    AgentRecord, AskKind, AskStatus, CoreKind, Fence, Fork, LiveDelta, MessagePatch, MessageRole,
    MessageStatus, NewAsk, NewEvent, NewMessage, NewSession, NewTask, NoticeKind, Part, Phase,
    SessionCreation, SessionPatch, SessionQuery, SessionStatus, TaskKind, TaskQuery, TaskStatus,
    Transition,
};
use agentdeck::store::{Change, ChangeFeed, Store, StoreError};
use common::{TestDb, eventually};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn new_session(agent: &str, team: &str) -> NewSession {
    NewSession {
        id: None,
        agent_id: agent.into(),
        team: team.into(),
        title: format!("{agent} for {team}"),
        env: BTreeMap::new(),
        budget_usd: None,
    }
}

fn user(text: &str) -> NewMessage {
    NewMessage {
        role: MessageRole::User,
        status: MessageStatus::Pending,
        parts: vec![Part::text(text)],
        harness_message_id: None,
    }
}

/// Waits for a change matching `pred` on `feed`.
async fn expect_change(feed: &mut ChangeFeed, what: &str, pred: impl Fn(&Change) -> bool) {
    let found = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(change) = feed.next().await {
            if pred(&change) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no change feed notice for {what}");
}

async fn sessions_round_trip(db: TestDb) {
    let store = db.open().await;
    let mut env = BTreeMap::new();
    env.insert("API_TOKEN".to_string(), "s3cret".to_string());
    env.insert("A".to_string(), "1".to_string());
    let created = store
        .insert_session(&NewSession {
            env,
            ..new_session("coder", "red")
        })
        .await
        .unwrap();
    assert_eq!(created.status, SessionStatus::Creating);
    assert_eq!(created.phase, Phase::CreatingSandbox);
    assert_eq!(created.env_keys, vec!["A", "API_TOKEN"]);
    assert_eq!(created.last_message_seq, 0);
    let json = serde_json::to_string(&created).unwrap();
    assert!(
        !json.contains("s3cret"),
        "env values must not travel with the session: {json}"
    );
    assert_eq!(
        store.session_env(created.id).await.unwrap()["API_TOKEN"],
        "s3cret"
    );

    let got = store.get_session(created.id).await.unwrap().unwrap();
    assert_eq!(got, created);
    assert!(store.get_session(Uuid::now_v7()).await.unwrap().is_none());

    let updated = store
        .update_session(
            created.id,
            &SessionPatch {
                sandbox_ref: Some(Some("ns/sbx".into())),
                runtime: Some(Some("kubernetes".into())),
                ..SessionPatch::status(SessionStatus::Ready, Phase::Ready).detail("up")
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.status, SessionStatus::Ready);
    assert_eq!(updated.phase_detail.as_deref(), Some("up"));
    assert_eq!(updated.sandbox_ref.as_deref(), Some("ns/sbx"));
    assert!(updated.updated_at >= created.updated_at);
    // A change of status or phase is in the session's history, written with it.
    let history = store.list_events(created.id, 0, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].seq, history[0].kind.as_str()),
        (1, "session.phase")
    );
    assert_eq!(history[0].payload["phase"], "ready");
    assert_eq!(history[0].payload["detail"], "up");
    assert_eq!(updated.last_event_seq, 1);

    // Clearing a field with Some(None).
    let cleared = store
        .update_session(
            created.id,
            &SessionPatch {
                phase_detail: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.phase_detail, None);
    assert_eq!(cleared.sandbox_ref.as_deref(), Some("ns/sbx"));

    // Compare-and-set on status.
    let err = store
        .update_session(
            created.id,
            &SessionPatch::status(SessionStatus::Creating, Phase::Resuming)
                .only_if(&[SessionStatus::Suspended]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("is ready")),
        "{err}"
    );

    // A session's own transition does not overwrite a command on its way: a turn that starts
    // while a suspend is in transition is refused (naming it), and applies once it is not.
    store
        .update_session(
            created.id,
            &SessionPatch::status(SessionStatus::Idle, Phase::Suspending),
        )
        .await
        .unwrap();
    let err = store
        .update_session(created.id, &Transition::TurnStarted.patch())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("is idle (suspending)")),
        "{err}"
    );
    let kept = store.get_session(created.id).await.unwrap().unwrap();
    assert_eq!(
        (kept.status, kept.phase),
        (SessionStatus::Idle, Phase::Suspending)
    );
    store
        .update_session(
            created.id,
            &SessionPatch::status(SessionStatus::Idle, Phase::Idle),
        )
        .await
        .unwrap();
    let busy = store
        .update_session(created.id, &Transition::TurnStarted.patch())
        .await
        .unwrap();
    assert_eq!(
        (busy.status, busy.phase),
        (SessionStatus::Busy, Phase::Busy)
    );

    let err = store
        .update_session(Uuid::now_v7(), &SessionPatch::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

async fn sessions_filter_and_page(db: TestDb) {
    let store = db.open().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let team = if i % 2 == 0 { "red" } else { "blue" };
        let agent = if i < 4 { "coder" } else { "reviewer" };
        ids.push(
            store
                .insert_session(&new_session(agent, team))
                .await
                .unwrap()
                .id,
        );
    }
    store
        .update_session(
            ids[6],
            &SessionPatch::status(SessionStatus::Failed, Phase::Failed),
        )
        .await
        .unwrap();

    let all = store.list_sessions(&SessionQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );

    let red = store
        .list_sessions(&SessionQuery {
            teams: Some(vec!["red".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(red.len(), 4);
    assert!(red.iter().all(|s| s.team == "red"));

    let failed_reviewers = store
        .list_sessions(&SessionQuery {
            agent_id: Some("reviewer".into()),
            statuses: Some(vec![SessionStatus::Failed]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        failed_reviewers.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[6]]
    );

    // Paging by id: three pages of 3, 3, 1 cover everything once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_sessions(&SessionQuery {
                before,
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(page.iter().map(|s| s.id));
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen, all.iter().map(|s| s.id).collect::<Vec<_>>());

    let counts = store.count_sessions().await.unwrap();
    assert!(counts.contains(&(SessionStatus::Creating, 6)), "{counts:?}");
    assert!(counts.contains(&(SessionStatus::Failed, 1)), "{counts:?}");
}

async fn message_seqs_have_no_gaps_or_races(db: TestDb) {
    let store = db.open().await;
    let session = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let other = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    // 40 concurrent writers on one session (and a few on another).
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let id = if i % 8 == 7 { other.id } else { session.id };
        handles.push(tokio::spawn(async move {
            store.append_message(id, &user(&format!("m{i}"))).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let messages = store.list_messages(session.id, 0, 1000).await.unwrap();
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=35).collect::<Vec<_>>()
    );
    let others = store.list_messages(other.id, 0, 1000).await.unwrap();
    assert_eq!(
        others.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=5).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .get_session(session.id)
            .await
            .unwrap()
            .unwrap()
            .last_message_seq,
        35
    );

    // Paging after a seq.
    let page = store.list_messages(session.id, 30, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![31, 32, 33]
    );

    // Updating a message's parts and status.
    let tool = Part::Tool {
        call_id: "c1".into(),
        tool: "bash".into(),
        status: agentdeck::model::ToolStatus::Completed,
        input: serde_json::json!({"command": "ls"}),
        output: Some("a\nb".into()),
        error: None,
        started_at: Some(chrono::DateTime::UNIX_EPOCH),
        ended_at: None,
    };
    let updated = store
        .update_message(
            session.id,
            2,
            &MessagePatch {
                status: Some(MessageStatus::Failed),
                parts: Some(vec![Part::text("edited"), tool.clone()]),
                error: Some(Some("harness refused".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.status, MessageStatus::Failed);
    assert_eq!(updated.parts[1], tool);
    let again = store.list_messages(session.id, 1, 1).await.unwrap();
    assert_eq!(again[0], updated);
    assert!(
        store
            .update_message(session.id, 999, &MessagePatch::default())
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .append_message(Uuid::now_v7(), &user("x"))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn event_batches_get_contiguous_seqs(db: TestDb) {
    let store = db.open().await;
    let session = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for b in 0..5 {
                let batch: Vec<NewEvent> = (0..(w * 100 + 3))
                    .map(|i| {
                        NewEvent::new("harness.delta", serde_json::json!({"w": w, "b": b, "i": i}))
                    })
                    .collect();
                let events = store.append_events(session.id, &batch).await.unwrap();
                // a batch is one contiguous run, in the order given
                for pair in events.windows(2) {
                    assert_eq!(pair[1].seq, pair[0].seq + 1);
                }
                assert_eq!(
                    events
                        .iter()
                        .map(|e| e.payload["i"].as_i64().unwrap())
                        .collect::<Vec<_>>(),
                    (0..events.len() as i64).collect::<Vec<_>>()
                );
                seqs.extend(events.iter().map(|e| e.seq));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    let total = all.len() as i64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(session.id, after, 250).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        read.extend(page);
    }
    assert_eq!(read.len() as i64, total);
    assert_eq!(
        store
            .get_session(session.id)
            .await
            .unwrap()
            .unwrap()
            .last_event_seq,
        total
    );
    assert!(
        store
            .append_events(session.id, &[])
            .await
            .unwrap()
            .is_empty()
    );

    // The latest events of one kind, oldest first, however many others came after them.
    for n in 0..5 {
        store
            .update_session(
                session.id,
                &SessionPatch::status(SessionStatus::Ready, Phase::Ready).detail(format!("p{n}")),
            )
            .await
            .unwrap();
    }
    let noise: Vec<NewEvent> = (0..300)
        .map(|i| NewEvent::new("harness.delta", serde_json::json!({"i": i})))
        .collect();
    store.append_events(session.id, &noise).await.unwrap();
    let latest = store
        .latest_events(session.id, "session.phase", 3)
        .await
        .unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|e| e.payload["detail"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["p2", "p3", "p4"]
    );
    assert!(latest.windows(2).all(|w| w[0].seq < w[1].seq));
}

async fn tasks_lease_retry_and_dead_letter(db: TestDb) {
    let store = db.open().await;
    let lease = Duration::from_secs(30);
    let none = Duration::ZERO;

    // Dedupe: a second enqueue with the same key returns the queued task.
    let a = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({"n": 1})).dedupe("one"))
        .await
        .unwrap();
    let b = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({"n": 2})).dedupe("one"))
        .await
        .unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(b.payload["n"], 1);

    let claimed = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, a.id);
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.locked_by.as_deref(), Some("w1"));
    assert!(
        store
            .claim_task("w2", "local", lease, none)
            .await
            .unwrap()
            .is_none(),
        "nothing else is due"
    );
    // While it runs, the same key may be queued again.
    let c = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})).dedupe("one"))
        .await
        .unwrap();
    assert_ne!(c.id, a.id);

    assert!(
        !store.complete_task(a.id, "w2").await.unwrap(),
        "only the holder completes"
    );
    assert!(store.renew_lease(a.id, "w1", lease).await.unwrap());
    assert!(store.complete_task(a.id, "w1").await.unwrap());
    let done = store.get_task(a.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Done);
    assert_eq!(done.completed_by.as_deref(), Some("w1"));
    assert!(!store.renew_lease(a.id, "w1", lease).await.unwrap());

    // Failure → queued again after the backoff → dead after the last attempt.
    let t = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})).max_attempts(2))
        .await
        .unwrap();
    let _ = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap(); // c
    let got = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, t.id);
    let status = store
        .fail_task(t.id, "w1", "boom", Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!(status, Some(TaskStatus::Queued));
    assert!(
        store
            .claim_task("w1", "local", lease, none)
            .await
            .unwrap()
            .is_none(),
        "backoff holds it back"
    );
    let waiting = store.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(waiting.last_error.as_deref(), Some("boom"));
    assert!(waiting.run_at > chrono::Utc::now() + chrono::Duration::minutes(50));

    let t2 = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})).max_attempts(2))
        .await
        .unwrap();
    let got = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, t2.id);
    assert_eq!(
        store
            .fail_task(t2.id, "w1", "once", none, false)
            .await
            .unwrap(),
        Some(TaskStatus::Queued)
    );
    let got = store
        .claim_task("w2", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.id, got.attempts), (t2.id, 2));
    assert_eq!(
        store
            .fail_task(t2.id, "w2", "twice", none, false)
            .await
            .unwrap(),
        Some(TaskStatus::Dead)
    );
    assert_eq!(
        store
            .fail_task(t2.id, "w2", "again", none, false)
            .await
            .unwrap(),
        None,
        "no longer held"
    );

    // A permanent failure dead-letters at once.
    let t3 = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})))
        .await
        .unwrap();
    store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .fail_task(t3.id, "w1", "no such thing", none, true)
            .await
            .unwrap(),
        Some(TaskStatus::Dead)
    );

    let dead = store
        .list_tasks(&TaskQuery {
            statuses: Some(vec![TaskStatus::Dead]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        dead.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![t2.id, t3.id]
    );
}

async fn expired_leases_are_taken_over(db: TestDb) {
    let store = db.open().await;
    let short = Duration::from_millis(300);
    let t = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})).max_attempts(2))
        .await
        .unwrap();
    let first = store
        .claim_task("crashed", "local", short, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, t.id);
    assert!(
        store
            .claim_task("other", "local", short, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = store
        .claim_task("other", "local", Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.id, second.attempts, second.locked_by.as_deref()),
        (t.id, 2, Some("other"))
    );
    assert!(
        second
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("crashed"),
        "{:?}",
        second.last_error
    );
    assert!(
        !store.complete_task(t.id, "crashed").await.unwrap(),
        "the old holder lost it"
    );
    assert!(!store.renew_lease(t.id, "crashed", short).await.unwrap());

    // With no attempts left, an expired lease dead-letters the task.
    let lease = Duration::from_millis(200);
    let _ = store
        .fail_task(t.id, "other", "x", Duration::ZERO, false)
        .await; // attempts 2 of 2 → dead
    let u = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})).max_attempts(1))
        .await
        .unwrap();
    store
        .claim_task("crashed", "local", lease, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store
            .claim_task("other", "local", lease, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get_task(u.id).await.unwrap().unwrap().status,
        TaskStatus::Dead
    );
}

async fn change_feed_reaches_other_processes(db: TestDb) {
    let writer = db.open().await;
    // A second store on the same database stands for another process (a serve beside a cockpit).
    let reader = db.open().await;
    let mut local = writer.subscribe();
    let mut remote = reader.subscribe();

    let s = writer
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let id = s.id;
    expect_change(&mut local, "session insert (local)", |c| {
        *c == Change::Session(id)
    })
    .await;
    expect_change(&mut remote, "session insert (remote)", |c| {
        *c == Change::Session(id)
    })
    .await;

    writer.append_message(id, &user("hi")).await.unwrap();
    expect_change(&mut remote, "message", |c| {
        *c == Change::Message {
            session: id,
            seq: 1,
        }
    })
    .await;

    writer
        .append_events(
            id,
            &[
                NewEvent::new("a", serde_json::json!({})),
                NewEvent::new("b", serde_json::json!({})),
            ],
        )
        .await
        .unwrap();
    expect_change(
        &mut remote,
        "events",
        |c| matches!(c, Change::Event { session, seq: 2 } if *session == id),
    )
    .await;

    writer
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})))
        .await
        .unwrap();
    expect_change(&mut remote, "task", |c| *c == Change::Task).await;

    writer
        .update_session(
            id,
            &SessionPatch::status(SessionStatus::Ready, Phase::Ready),
        )
        .await
        .unwrap();
    expect_change(&mut remote, "session update", |c| *c == Change::Session(id)).await;

    writer.sync_agents(&[agent("coder")]).await.unwrap();
    expect_change(&mut remote, "agents", |c| *c == Change::Agents).await;
}

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        name: id.to_uppercase(),
        harness: "opencode".into(),
        model: "litellm/mock-gpt".into(),
        spec: serde_json::json!({"idle_timeout": "30m"}),
        present: true,
        updated_at: chrono::Utc::now(),
    }
}

async fn agents_sync_marks_absent(db: TestDb) {
    let store = db.open().await;
    store.sync_agents(&[agent("a"), agent("b")]).await.unwrap();
    let mut b2 = agent("b");
    b2.model = "other".into();
    store.sync_agents(&[b2]).await.unwrap();
    let agents = store.list_agents().await.unwrap();
    assert_eq!(agents.len(), 2);
    assert!(!agents[0].present, "a left the config");
    assert!(agents[1].present);
    assert_eq!(agents[1].model, "other");
    store.sync_agents(&[agent("a")]).await.unwrap();
    let agents = store.list_agents().await.unwrap();
    assert!(agents[0].present && !agents[1].present);
}

/// The fleet's leases: a core holds roles and sessions at the epoch its heartbeat returns; one
/// that stops renewing loses them within its lease, its fenced writes are refused from then on
/// (nothing of them is stored), others take over, and when it comes back it has a new epoch.
async fn roles_and_sessions_are_held_under_a_lease(db: TestDb) {
    let one = db.open().await;
    let two = db.open().await;
    let short = Duration::from_secs(1);
    let long = Duration::from_secs(60);
    let e1 = one
        .heartbeat("p1", CoreKind::Serve, true, short)
        .await
        .unwrap();
    assert_eq!(
        one.heartbeat("p1", CoreKind::Serve, true, short)
            .await
            .unwrap(),
        e1,
        "a renewal keeps the epoch"
    );
    let e2 = two
        .heartbeat("p2", CoreKind::Worker, true, long)
        .await
        .unwrap();
    assert!(one.take_role("idle-reaper", "p1", e1).await.unwrap());
    assert!(
        one.take_role("idle-reaper", "p1", e1).await.unwrap(),
        "kept"
    );
    assert!(!two.take_role("idle-reaper", "p2", e2).await.unwrap());
    assert!(
        two.take_role("reconciler", "p2", e2).await.unwrap(),
        "roles are independent"
    );

    // A live session, followed by p1.
    let session = one
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let live = SessionPatch {
        runtime: Some(Some("local".into())),
        sandbox_ref: Some(Some("sbx".into())),
        harness_session_id: Some(Some("ses_1".into())),
        ..SessionPatch::status(SessionStatus::Idle, Phase::Ready)
    };
    one.update_session(session.id, &live).await.unwrap();
    assert_eq!(
        two.followed_sessions("local").await.unwrap(),
        vec![(session.id, None)]
    );
    assert_eq!(
        one.take_sessions("p1", e1, &[session.id]).await.unwrap(),
        vec![session.id]
    );
    assert!(
        two.take_sessions("p2", e2, &[session.id])
            .await
            .unwrap()
            .is_empty(),
        "held by a live core"
    );
    assert_eq!(
        two.followed_sessions("local").await.unwrap(),
        vec![(session.id, Some("p1".to_string()))]
    );
    let cores = two.list_cores().await.unwrap();
    assert_eq!(cores.len(), 2, "{cores:?}");
    assert_eq!((cores[0].id.as_str(), cores[0].sessions), ("p1", 1));
    assert_eq!(cores[0].roles, vec!["idle-reaper"]);
    assert_eq!(
        (cores[1].id.as_str(), cores[1].roles.clone()),
        ("p2", vec!["reconciler".to_string()])
    );

    let fence = Fence::Session {
        id: session.id,
        core: "p1".into(),
        epoch: e1,
    };
    let p1_writes = one.fenced(fence.clone());
    let event = || NewEvent::new("harness.x", serde_json::json!({}));
    p1_writes
        .append_events(session.id, &[event()])
        .await
        .unwrap();
    let role_writes = one.fenced(Fence::Role {
        name: "idle-reaper".into(),
        core: "p1".into(),
        epoch: e1,
    });
    role_writes
        .update_session(session.id, &SessionPatch::default())
        .await
        .unwrap();

    // p1 stops renewing (frozen): within its lease, p2 can take what it held.
    eventually(Duration::from_secs(10), "p1's lease to run out", || {
        let two = two.clone();
        async move {
            two.take_role("idle-reaper", "p2", e2)
                .await
                .unwrap()
                .then_some(())
        }
    })
    .await;
    let events_before = one.list_events(session.id, 0, 100).await.unwrap().len();
    let refused = p1_writes
        .append_events(session.id, &[event()])
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Fenced(_)), "{refused:?}");
    assert!(refused.to_string().contains("no longer holds"), "{refused}");
    for write in [
        p1_writes
            .update_message(session.id, 1, &MessagePatch::default())
            .await
            .err(),
        p1_writes
            .update_session(session.id, &SessionPatch::default())
            .await
            .err(),
        p1_writes
            .append_message(session.id, &user("stale"))
            .await
            .err(),
        role_writes
            .update_session(session.id, &SessionPatch::default())
            .await
            .err(),
    ] {
        assert!(matches!(write, Some(StoreError::Fenced(_))), "{write:?}");
    }
    assert_eq!(
        one.list_events(session.id, 0, 100).await.unwrap().len(),
        events_before,
        "nothing of a refused write is stored"
    );
    assert!(
        one.list_messages(session.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        two.take_sessions("p2", e2, &[session.id]).await.unwrap(),
        vec![session.id]
    );

    // p1 wakes: a new epoch, under which it holds nothing; its old fence stays void.
    let again = one
        .heartbeat("p1", CoreKind::Serve, true, long)
        .await
        .unwrap();
    assert_ne!(again, e1, "a lease that ran out starts a new epoch");
    assert!(matches!(
        p1_writes.append_events(session.id, &[event()]).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(
        one.take_sessions("p1", again, &[session.id])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!one.take_role("idle-reaper", "p1", again).await.unwrap());

    // p2 leaves cleanly: what it held is free at once.
    two.leave("p2").await.unwrap();
    assert!(one.take_role("idle-reaper", "p1", again).await.unwrap());
    assert_eq!(
        one.take_sessions("p1", again, &[session.id]).await.unwrap(),
        vec![session.id]
    );
    let cores = one.list_cores().await.unwrap();
    assert_eq!(
        cores.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["p1"]
    );
}

fn ask(id: &str, kind: AskKind) -> NewAsk {
    NewAsk {
        id: id.to_string(),
        kind,
        title: "bash".into(),
        detail: serde_json::json!({"patterns": ["rm -rf /tmp/x"], "metadata": {"command": "rm -rf /tmp/x"}}),
    }
}

/// The human in the loop: an ask is recorded once, counted on its session while it waits, and
/// answered once; the second answer is refused naming the first, a reopened ask waits again,
/// and one the agent gave up on is refused as such.
async fn asks_are_answered_once(db: TestDb) {
    let store = db.open().await;
    let session = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let waiting = |id| {
        let store = store.clone();
        async move { store.get_session(id).await.unwrap().unwrap().waiting }
    };
    assert!(
        store
            .record_ask(session.id, &ask("per_1", AskKind::Permission))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_ask(session.id, &ask("per_1", AskKind::Permission))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_ask(session.id, &ask("que_2", AskKind::Question))
            .await
            .unwrap()
    );
    assert_eq!(waiting(session.id).await, 2);
    let pending = store.list_asks(session.id, true).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|a| (a.id.as_str(), a.kind, a.status))
            .collect::<Vec<_>>(),
        [
            ("per_1", AskKind::Permission, AskStatus::Pending),
            ("que_2", AskKind::Question, AskStatus::Pending)
        ]
    );
    assert_eq!(pending[0].detail["metadata"]["command"], "rm -rf /tmp/x");

    let reply = serde_json::json!({"reply": "reject"});
    let answered = store
        .answer_ask(
            session.id,
            "per_1",
            &reply,
            Some("not on prod"),
            "cockpit:alice",
        )
        .await
        .unwrap();
    assert_eq!(answered.status, AskStatus::Answered);
    assert_eq!(answered.answer, Some(reply.clone()));
    assert_eq!(answered.message.as_deref(), Some("not on prod"));
    assert_eq!(answered.answered_by.as_deref(), Some("cockpit:alice"));
    assert!(answered.answered_at.is_some());
    assert_eq!(waiting(session.id).await, 1);
    let err = store
        .answer_ask(
            session.id,
            "per_1",
            &serde_json::json!({"reply": "once"}),
            None,
            "api:bob",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("already answered") && m.contains("cockpit:alice") && m.contains("reject")),
        "{err}"
    );
    let err = store
        .answer_ask(session.id, "per_nope", &reply, None, "api:bob")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // Reopened only by whoever answered (the harness did not take that answer).
    store
        .reopen_ask(session.id, "per_1", "api:bob")
        .await
        .unwrap();
    assert_eq!(waiting(session.id).await, 1);
    store
        .reopen_ask(session.id, "per_1", "cockpit:alice")
        .await
        .unwrap();
    assert_eq!(waiting(session.id).await, 2);
    assert_eq!(store.list_asks(session.id, true).await.unwrap().len(), 2);

    // Settled without us: gone, or answered in the harness itself.
    assert!(
        store
            .settle_ask(session.id, "que_2", AskStatus::Gone, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .settle_ask(session.id, "que_2", AskStatus::Gone, None)
            .await
            .unwrap()
    );
    let err = store
        .answer_ask(
            session.id,
            "que_2",
            &serde_json::json!({"reject": true}),
            None,
            "api:bob",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("no longer waits")),
        "{err}"
    );
    let once = serde_json::json!({"reply": "once"});
    assert!(
        store
            .settle_ask(session.id, "per_1", AskStatus::Answered, Some(&once))
            .await
            .unwrap()
    );
    assert_eq!(waiting(session.id).await, 0);
    let all = store.list_asks(session.id, false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].answered_by.as_deref(), Some("agent"));
    assert_eq!(all[0].answer, Some(once));
    assert!(store.list_asks(session.id, true).await.unwrap().is_empty());

    let err = store
        .record_ask(Uuid::now_v7(), &ask("per_3", AskKind::Permission))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// Many sessions' statuses in one read: those the store knows, whatever else is asked (more
/// ids than SQLite binds in one statement).
async fn statuses_of_many_sessions(db: TestDb) {
    let store = db.open().await;
    let a = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let b = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    store
        .update_session(
            b.id,
            &SessionPatch::status(SessionStatus::Dead, Phase::Dead),
        )
        .await
        .unwrap();
    let mut ids: Vec<Uuid> = (0..1200).map(|_| Uuid::now_v7()).collect();
    ids.insert(700, b.id);
    ids.push(a.id);
    let mut found = store.session_statuses(&ids).await.unwrap();
    found.sort();
    let mut want = vec![(a.id, SessionStatus::Creating), (b.id, SessionStatus::Dead)];
    want.sort();
    assert_eq!(found, want);
    assert!(store.session_statuses(&[]).await.unwrap().is_empty());
}

/// A fork is made whole or not at all: its row linked to its parent, the parent's messages up
/// to the fork point copied in order (before any first message), its task.
async fn a_fork_is_made_with_its_history(db: TestDb) {
    let store = db.open().await;
    let parent = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let id = Uuid::now_v7();
    let creation = SessionCreation {
        session: NewSession {
            id: Some(id),
            ..new_session("coder", "red")
        },
        created: NewEvent::new(
            "session.created",
            serde_json::json!({"forked_from": parent.id}),
        ),
        first_message: Some(user("and now?")),
        task: NewTask::new(TaskKind::Provision, serde_json::json!({})).for_session(id),
        fork: Some(Fork {
            parent: parent.id,
            at_seq: 2,
            history: vec![user("first"), user("second")],
        }),
    };
    db.refuse_tasks(true).await;
    assert!(store.create_session(&creation).await.is_err());
    assert!(
        store.get_session(id).await.unwrap().is_none(),
        "no half-made fork"
    );
    db.refuse_tasks(false).await;
    let fork = store.create_session(&creation).await.unwrap();
    assert_eq!((fork.parent_id, fork.fork_seq), (Some(parent.id), Some(2)));
    assert_eq!(fork.last_message_seq, 3);
    let texts: Vec<String> = store
        .list_messages(id, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.text())
        .collect();
    assert_eq!(texts, ["first", "second", "and now?"]);
    let forks = store
        .list_sessions(&SessionQuery {
            parent: Some(parent.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(forks.iter().map(|s| s.id).collect::<Vec<_>>(), [id]);
    assert_eq!(
        store.get_session(id).await.unwrap().unwrap().parent_id,
        Some(parent.id)
    );
}

async fn deleting_nothing_is_harmless(db: TestDb) {
    // Migrations are idempotent: running them again on a migrated store changes nothing.
    let store: Arc<dyn Store> = db.open().await;
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(
        store
            .list_sessions(&SessionQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A session's creation and each command on it are one transaction with the task that carries
/// them out: when the task cannot be written, nothing is (no session without its provisioning,
/// no session left "restarting" with nothing to restart it), and trying again works.
async fn commands_are_all_or_nothing(db: TestDb) {
    let store = db.open().await;
    let id = Uuid::now_v7();
    let creation = SessionCreation {
        session: NewSession {
            id: Some(id),
            ..new_session("coder", "red")
        },
        created: NewEvent::new("session.created", serde_json::json!({"by": "test"})),
        first_message: Some(user("hello")),
        task: NewTask::new(TaskKind::Provision, serde_json::json!({}))
            .for_session(id)
            .dedupe(format!("provision:{id}")),
        fork: None,
    };
    let tasks_of = |kind: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_tasks(&TaskQuery::default())
                .await
                .unwrap()
                .into_iter()
                .filter(|t| t.session_id == Some(id) && t.kind == kind)
                .count()
        }
    };

    db.refuse_tasks(true).await;
    let err = store.create_session(&creation).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(
        store.get_session(id).await.unwrap().is_none(),
        "no half-made session"
    );
    db.refuse_tasks(false).await;
    let session = store.create_session(&creation).await.unwrap();
    assert_eq!(session.status, SessionStatus::Creating);
    assert_eq!(session.last_message_seq, 1);
    assert_eq!(
        store.list_messages(id, 0, 10).await.unwrap()[0].text(),
        "hello"
    );
    let events = store.list_events(id, 0, 10).await.unwrap();
    assert_eq!(events[0].kind, "session.created");
    assert_eq!(session.last_event_seq, events.last().unwrap().seq);
    assert_eq!(tasks_of("session.provision").await, 1);

    let restart = SessionPatch {
        status: Some(SessionStatus::Creating),
        phase: Some(Phase::Restarting),
        only_if_status: Some(vec![SessionStatus::Creating, SessionStatus::Idle]),
        ..Default::default()
    };
    let task = NewTask::new(TaskKind::Restart, serde_json::json!({}))
        .for_session(id)
        .dedupe(format!("restart:{id}"));
    db.refuse_tasks(true).await;
    let err = store
        .command_session(id, &restart, &task)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let unchanged = store.get_session(id).await.unwrap().unwrap();
    assert_eq!(
        unchanged.phase, session.phase,
        "the phase did not move without its task"
    );
    assert_eq!(
        unchanged.last_event_seq, session.last_event_seq,
        "nor its history"
    );
    db.refuse_tasks(false).await;
    let (moved, queued) = store.command_session(id, &restart, &task).await.unwrap();
    assert_eq!(moved.phase, Phase::Restarting);
    assert_eq!(queued.session_id, Some(id));
    assert_eq!(tasks_of("session.restart").await, 1);
    let last = store.list_events(id, 0, 10).await.unwrap();
    assert_eq!(last.last().unwrap().kind, "session.phase");

    // A message and the task that delivers it: both or neither.
    let deliver = NewTask::new(TaskKind::Deliver, serde_json::json!({}))
        .for_session(id)
        .dedupe(format!("deliver:{id}"));
    let before = store.list_messages(id, 0, 100).await.unwrap().len();
    db.refuse_tasks(true).await;
    let err = store
        .append_message_with_task(id, &user("again"), &deliver)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(
        store.list_messages(id, 0, 100).await.unwrap().len(),
        before,
        "no message that nothing would deliver"
    );
    db.refuse_tasks(false).await;
    let (message, queued) = store
        .append_message_with_task(id, &user("again"), &deliver)
        .await
        .unwrap();
    assert_eq!(message.text(), "again");
    assert_eq!(queued.kind, "session.deliver");
    assert_eq!(tasks_of("session.deliver").await, 1);

    // A command the session's status does not allow changes nothing and queues nothing.
    let resume = SessionPatch {
        phase: Some(Phase::Resuming),
        only_if_status: Some(vec![SessionStatus::Suspended]),
        ..Default::default()
    };
    let resume_task = NewTask::new(TaskKind::Resume, serde_json::json!({})).for_session(id);
    let err = store
        .command_session(id, &resume, &resume_task)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(tasks_of("session.resume").await, 0);
    let missing = store
        .command_session(Uuid::now_v7(), &resume, &resume_task)
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
}

/// Two commands of one session racing: a suspend whose task has started, then a restart. The
/// session's tasks run one at a time and in order, the overtaken suspend can land nothing, and
/// a command that has not started is superseded by a newer one.
async fn commands_of_one_session_run_in_order_and_never_land_stale(db: TestDb) {
    let store = db.open().await;
    let lease = Duration::from_secs(30);
    let none = Duration::ZERO;
    let id = Uuid::now_v7();
    let created = store
        .create_session(&SessionCreation {
            session: NewSession {
                id: Some(id),
                ..new_session("coder", "red")
            },
            created: NewEvent::new("session.created", serde_json::json!({})),
            first_message: None,
            task: NewTask::new(TaskKind::Provision, serde_json::json!({})).for_session(id),
            fork: None,
        })
        .await
        .unwrap();
    assert_eq!(created.command_seq, 0);
    let provision = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(provision.command, Some(0), "creating is the first command");
    store
        .update_session(
            id,
            &SessionPatch {
                only_if_command: Some(0),
                ..SessionPatch::status(SessionStatus::Idle, Phase::Ready)
            },
        )
        .await
        .unwrap();
    assert!(store.complete_task(provision.id, "w1").await.unwrap());

    let command = |status: Option<SessionStatus>, phase: Phase, kind: TaskKind| {
        let store = store.clone();
        async move {
            store
                .command_session(
                    id,
                    &SessionPatch {
                        status,
                        phase: Some(phase),
                        new_command: true,
                        ..Default::default()
                    },
                    &NewTask::new(kind, serde_json::json!({}))
                        .for_session(id)
                        .dedupe(format!("{kind}:{id}")),
                )
                .await
                .unwrap()
        }
    };
    let (suspending, suspend) = command(None, Phase::Suspending, TaskKind::Suspend).await;
    assert_eq!(suspending.command_seq, 1);
    assert_eq!(suspend.command, Some(1));
    let running = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.id, suspend.id);

    // The restart comes while the suspend runs: its task waits for the session's running one.
    let (restarting, restart) = command(
        Some(SessionStatus::Creating),
        Phase::Restarting,
        TaskKind::Restart,
    )
    .await;
    assert_eq!(restarting.command_seq, 2);
    assert_eq!(restart.command, Some(2));
    assert!(
        store
            .claim_task("w2", "local", lease, none)
            .await
            .unwrap()
            .is_none(),
        "a session runs one task at a time"
    );
    // The overtaken suspend lands nothing: the session stays as the restart left it.
    let stale = SessionPatch {
        only_if_command: running.command,
        ..SessionPatch::status(SessionStatus::Suspended, Phase::Suspended)
    };
    let err = store.update_session(id, &stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let now = store.get_session(id).await.unwrap().unwrap();
    assert_eq!(
        (now.status, now.phase),
        (SessionStatus::Creating, Phase::Restarting)
    );
    assert!(store.complete_task(running.id, "w1").await.unwrap());
    let next = store
        .claim_task("w2", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, restart.id, "then the restart");

    // A command that has not started is superseded by a newer one, and never runs.
    let (_, end) = command(None, Phase::Ending, TaskKind::End).await;
    let (_, resume) = command(
        Some(SessionStatus::Creating),
        Phase::Resuming,
        TaskKind::Resume,
    )
    .await;
    let end = store.get_task(end.id).await.unwrap().unwrap();
    assert_eq!(end.status, TaskStatus::Done);
    assert_eq!(end.completed_by.as_deref(), Some("superseded"));
    assert!(store.complete_task(next.id, "w2").await.unwrap());
    let last = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((last.id, last.command), (resume.id, Some(4)));

    // Tasks that are no commands (deliveries) keep their order too, one at a time; one backing
    // off after a failure does not hold a later one up.
    assert!(store.complete_task(last.id, "w1").await.unwrap());
    let deliver = |n: i32| {
        let store = store.clone();
        async move {
            store
                .enqueue_task(
                    &NewTask::new(TaskKind::Deliver, serde_json::json!({"n": n})).for_session(id),
                )
                .await
                .unwrap()
        }
    };
    let first = deliver(1).await;
    let second = deliver(2).await;
    let other = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})))
        .await
        .unwrap();
    let a = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.id, first.id);
    let b = store
        .claim_task("w2", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.id, other.id,
        "another session's (or no session's) task is not held up"
    );
    assert!(
        store
            .claim_task("w2", "local", lease, none)
            .await
            .unwrap()
            .is_none()
    );
    store
        .fail_task(
            a.id,
            "w1",
            "harness unreachable",
            Duration::from_secs(60),
            false,
        )
        .await
        .unwrap();
    let c = store
        .claim_task("w2", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.id, second.id, "a retry due later holds nothing up");
}

/// Text Postgres's text and jsonb refuse (NUL, from an agent's `cat` of a binary file) is kept,
/// and reads back as it was written; so is the character its encoding uses.
async fn text_with_nul_is_kept_as_sent(db: TestDb) {
    let store = db.open().await;
    let odd = "ELF\0\u{1}\u{E000}0 and \u{E000}\u{E000} end\0";
    let session = store
        .insert_session(&NewSession {
            title: odd.to_string(),
            ..new_session("coder", "red")
        })
        .await
        .unwrap();
    assert_eq!(session.title, odd);
    let message = store
        .append_message(
            session.id,
            &NewMessage {
                role: MessageRole::Assistant,
                status: MessageStatus::Pending,
                parts: vec![Part::text(odd)],
                harness_message_id: Some("msg_1".to_string()),
            },
        )
        .await
        .unwrap();
    let updated = store
        .update_message(
            session.id,
            message.seq,
            &MessagePatch {
                parts: Some(vec![Part::text(format!("{odd}{odd}"))]),
                error: Some(Some(odd.to_string())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.text(), format!("{odd}{odd}"));
    let read = &store.list_messages(session.id, 0, 10).await.unwrap()[0];
    assert_eq!(read.text(), format!("{odd}{odd}"));
    assert_eq!(read.error.as_deref(), Some(odd));
    let events = store
        .append_events(
            session.id,
            &[NewEvent::new(
                "harness.x",
                serde_json::json!({odd: [odd, "\\u0000"]}),
            )],
        )
        .await
        .unwrap();
    let read = store.list_events(session.id, 0, 10).await.unwrap();
    assert_eq!(read[0].payload, serde_json::json!({odd: [odd, "\\u0000"]}));
    assert_eq!(events[0].payload, read[0].payload);
    let patched = store
        .update_session(
            session.id,
            &SessionPatch {
                phase_detail: Some(Some(format!("agent error: {odd}"))),
                failure_reason: Some(Some(odd.to_string())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.phase_detail, Some(format!("agent error: {odd}")));
    assert_eq!(patched.failure_reason.as_deref(), Some(odd));
    assert!(
        store
            .record_ask(
                session.id,
                &NewAsk {
                    title: odd.to_string(),
                    detail: serde_json::json!({"cmd": odd}),
                    ..ask("a1", AskKind::Permission)
                },
            )
            .await
            .unwrap()
    );
    let asked = &store.list_asks(session.id, true).await.unwrap()[0];
    assert_eq!(
        (asked.title.as_str(), &asked.detail["cmd"]),
        (odd, &serde_json::json!(odd))
    );
}

/// Reads the feed up to the notice of `session` and says whether a task notice came before it
/// (notices are sent in commit order, so this needs no waiting for something not to happen).
async fn task_notice_before(feed: &mut ChangeFeed, session: Uuid) -> bool {
    let mut seen = false;
    let reached = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(change) = feed.next().await {
            match change {
                Change::Task => seen = true,
                Change::Session(id) if id == session => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(reached, Ok(true), "no notice of session {session}");
    seen
}

/// An idle worker's statements wake nobody (they once woke every worker, its own included, in
/// a loop of 2,000 transactions a second): no task notice for a claim that finds nothing, a
/// claim, a renewed lease or a reclaim that changes nothing; one when a task is queued or ends.
async fn an_idle_worker_wakes_nobody(db: TestDb) {
    let store = db.open().await;
    let lease = Duration::from_secs(30);
    let none = Duration::ZERO;
    let mut feed = store.subscribe();
    let marker = || {
        let store = store.clone();
        async move {
            store
                .insert_session(&new_session("coder", "red"))
                .await
                .unwrap()
                .id
        }
    };
    for _ in 0..5 {
        assert!(
            store
                .claim_task("w1", "local", lease, none)
                .await
                .unwrap()
                .is_none()
        );
    }
    let m = marker().await;
    assert!(
        !task_notice_before(&mut feed, m).await,
        "empty claims notify"
    );

    let task = store
        .enqueue_task(&NewTask::new(TaskKind::DiagEcho, serde_json::json!({})))
        .await
        .unwrap();
    let m = marker().await;
    assert!(
        task_notice_before(&mut feed, m).await,
        "a queued task wakes the workers"
    );

    let claimed = store
        .claim_task("w1", "local", lease, none)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, task.id);
    assert!(store.renew_lease(task.id, "w1", lease).await.unwrap());
    assert!(
        store
            .claim_task("w2", "local", lease, none)
            .await
            .unwrap()
            .is_none()
    );
    let m = marker().await;
    assert!(
        !task_notice_before(&mut feed, m).await,
        "a claim or a renewal notifies"
    );

    assert!(store.complete_task(task.id, "w1").await.unwrap());
    let m = marker().await;
    assert!(
        task_notice_before(&mut feed, m).await,
        "an ended task may free its session's next"
    );
}

/// Live text across processes: on Postgres, deltas published by one process reach another that
/// watches their session, whole and in order, and no other session's watcher; the embedded store
/// has one process, which shows its own (nothing is sent, nothing heard).
async fn live_text_reaches_the_watchers_of_its_session(db: TestDb) {
    let sender = db.open().await;
    let watcher = db.open().await;
    let session = Uuid::now_v7();
    let other = Uuid::now_v7();
    let delta = |session: Uuid, text: &str| LiveDelta {
        session,
        seq: 2,
        part: 1,
        text: text.to_string(),
    };
    let mut watch = watcher.watch_deltas(session);
    let mut elsewhere = watcher.watch_deltas(other);
    if db.url().starts_with("sqlite") {
        sender
            .publish_deltas("p1", &[delta(session, "hello")])
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), watch.next())
                .await
                .is_err(),
            "the embedded store sends nothing"
        );
        return;
    }
    // The watcher's LISTEN is in place once something sent arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for n in 1.. {
        sender
            .publish_deltas("p1", &[delta(session, &format!("ping {n}"))])
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), watch.next())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watch never heard its session"
        );
    }
    while tokio::time::timeout(Duration::from_millis(100), watch.next())
        .await
        .is_ok()
    {}
    let long = "x".repeat(20_000);
    let sent = vec![
        delta(session, "Hello"),
        delta(other, "not for you"),
        delta(session, " world"),
        delta(session, &long),
    ];
    sender.publish_deltas("p1", &sent).await.unwrap();
    let mut heard = String::new();
    while heard.len() < "Hello world".len() + long.len() {
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the deltas arrive")
            .expect("none missed");
        assert_eq!((batch.origin.as_str(), batch.session), ("p1", session));
        for d in batch.as_ref().clone().into_deltas() {
            heard.push_str(&d.text);
        }
    }
    assert_eq!(heard, format!("Hello world{long}"));
    let theirs = tokio::time::timeout(Duration::from_secs(5), elsewhere.next())
        .await
        .expect("the other session's delta arrives")
        .expect("none missed");
    assert_eq!(theirs.session, other);
    assert_eq!(theirs.deltas.len(), 1);
}

/// Ingest's grouped writes: the writes of several sessions commit together, each session's raw
/// events get contiguous seqs after its own last, message parts and statuses land; a write whose
/// session fence does not hold is refused and writes nothing, and a write that cannot be made
/// (a message that does not exist) fails alone, the others still written.
async fn ingest_writes_of_many_sessions_commit_together_and_fail_alone(db: TestDb) {
    let store = db.open().await;
    let epoch = store
        .heartbeat("c1", CoreKind::Serve, true, Duration::from_secs(60))
        .await
        .unwrap();
    let live = SessionPatch {
        runtime: Some(Some("local".into())),
        sandbox_ref: Some(Some("sbx".into())),
        harness_session_id: Some(Some("ses".into())),
        ..SessionPatch::status(SessionStatus::Idle, Phase::Ready)
    };
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    for team in ["a", "b", "c", "d"] {
        let s = store
            .insert_session(&new_session("coder", team))
            .await
            .unwrap();
        store.update_session(s.id, &live).await.unwrap();
        store
            .append_events(
                s.id,
                &[NewEvent::new("before", serde_json::json!({"n": 0}))],
            )
            .await
            .unwrap();
        let m = store
            .append_message(
                s.id,
                &NewMessage {
                    role: MessageRole::Assistant,
                    status: MessageStatus::Pending,
                    parts: vec![],
                    harness_message_id: Some(format!("msg_{team}")),
                },
            )
            .await
            .unwrap();
        ids.push(s.id);
        seqs.push(m.seq);
    }
    let mut before = Vec::new();
    for id in &ids {
        before.push(store.list_events(*id, 0, 100).await.unwrap().len() as i64);
    }
    // c1 holds a, b and d; nobody holds c.
    let held = store
        .take_sessions("c1", epoch, &[ids[0], ids[1], ids[3]])
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let fence = |id: Uuid| {
        Some(Fence::Session {
            id,
            core: "c1".into(),
            epoch,
        })
    };
    let write = |i: usize, seq: i64, text: &str, done: bool| agentdeck::store::IngestWrite {
        session: ids[i],
        fence: fence(ids[i]),
        events: (1..=3)
            .map(|n| NewEvent::new("harness.delta", serde_json::json!({"n": n, "t": text})))
            .collect(),
        messages: vec![(
            seq,
            MessagePatch {
                parts: Some(vec![Part::text(text)]),
                status: done.then_some(MessageStatus::Complete),
                ..Default::default()
            },
        )],
    };
    let writes = vec![
        write(0, seqs[0], "streamed a", false),
        write(1, seqs[1], "finished b", true),
        write(2, seqs[2], "not held", false),
        write(3, seqs[3] + 40, "no such message", false),
    ];
    let results = store.write_ingest(&writes).await;
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert!(
        matches!(results[2], Err(StoreError::Fenced(_))),
        "an unheld session is refused: {:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(StoreError::NotFound { .. })),
        "a missing message fails its write: {:?}",
        results[3]
    );
    for (i, expect) in [
        (0, Some(("streamed a", MessageStatus::Pending))),
        (1, Some(("finished b", MessageStatus::Complete))),
        (2, None),
        (3, None),
    ] {
        let events = store.list_events(ids[i], 0, 100).await.unwrap();
        let messages = store.list_messages(ids[i], 0, 100).await.unwrap();
        match expect {
            Some((text, status)) => {
                assert_eq!(
                    events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                    (1..=before[i] + 3).collect::<Vec<_>>(),
                    "session {i}: its events follow its own last, in order"
                );
                assert_eq!(events[before[i] as usize + 2].payload["n"], 3);
                assert_eq!(messages[0].parts, vec![Part::text(text)]);
                assert_eq!(messages[0].status, status);
            }
            None => {
                assert_eq!(
                    events.len() as i64,
                    before[i],
                    "session {i}: nothing of a refused write is kept"
                );
                assert!(messages[0].parts.is_empty());
            }
        }
    }
    // A second group goes on from where each session is.
    let results = store
        .write_ingest(&[write(0, seqs[0], "more of a", false)])
        .await;
    assert!(results[0].is_ok());
    let events = store.list_events(ids[0], 0, 100).await.unwrap();
    assert_eq!(events.last().map(|e| e.seq), Some(before[0] + 6));
}

/// A session belongs to the runtime that made its sandbox: its tasks wait for a worker of that
/// runtime (a worker of another would act on a sandbox it cannot reach, or make a new one on its
/// own runtime), and only cores of that runtime follow its events. A task of a session with no
/// sandbox yet, or of no session, is anyone's.
async fn a_sessions_work_waits_for_its_own_runtime(db: TestDb) {
    let store = db.open().await;
    let lease = Duration::from_secs(30);
    let none = Duration::ZERO;
    let local = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    store
        .update_session(
            local.id,
            &SessionPatch {
                runtime: Some(Some("local".into())),
                sandbox_ref: Some(Some("sbx".into())),
                harness_session_id: Some(Some("ses".into())),
                ..SessionPatch::status(SessionStatus::Idle, Phase::Ready)
            },
        )
        .await
        .unwrap();
    let fresh = store
        .insert_session(&new_session("coder", "blue"))
        .await
        .unwrap();
    let task = |id: Uuid| NewTask {
        session_id: Some(id),
        ..NewTask::new(TaskKind::DiagEcho, serde_json::json!({}))
    };
    store.enqueue_task(&task(local.id)).await.unwrap();
    assert!(
        store
            .claim_task("k8s", "kubernetes", lease, none)
            .await
            .unwrap()
            .is_none_or(|t| t.session_id != Some(local.id)),
        "a worker of another runtime does not take a local session's task"
    );
    store.enqueue_task(&task(fresh.id)).await.unwrap();
    let taken = store
        .claim_task("k8s", "kubernetes", lease, none)
        .await
        .unwrap()
        .expect("a session with no sandbox yet is anyone's");
    assert_eq!(taken.session_id, Some(fresh.id));
    let taken = store
        .claim_task("w", "local", lease, none)
        .await
        .unwrap()
        .expect("the local worker takes the local session's task");
    assert_eq!(taken.session_id, Some(local.id));
    assert!(
        store
            .followed_sessions("kubernetes")
            .await
            .unwrap()
            .is_empty(),
        "a Kubernetes core follows no local session"
    );
    assert_eq!(
        store.followed_sessions("local").await.unwrap(),
        vec![(local.id, None)]
    );
}

/// What a person should hear of is recorded by the change itself, whoever writes it: an ask
/// (waiting), a failure, a turn's end (busy to idle with nobody awaited); nothing else. Handing
/// notices on enqueues their tasks and deletes them in one write, once.
async fn notices_come_with_their_change_and_are_handed_on_once(db: TestDb) {
    let store = db.open().await;
    let red = store
        .insert_session(&new_session("coder", "red"))
        .await
        .unwrap();
    let blue = store
        .insert_session(&new_session("coder", "blue"))
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
    // Coming up, and a turn starting: nothing to say.
    set(red.id, SessionStatus::Ready, Phase::Ready).await;
    set(red.id, SessionStatus::Busy, Phase::Ready).await;
    assert!(store.list_notices(10).await.unwrap().is_empty());
    // The agent asks: waiting. Its turn ends while it still waits: not "done".
    store
        .record_ask(red.id, &ask("per_1", AskKind::Permission))
        .await
        .unwrap();
    set(red.id, SessionStatus::Idle, Phase::Ready).await;
    // Answered, a new turn that ends: done.
    store
        .settle_ask(red.id, "per_1", AskStatus::Answered, None)
        .await
        .unwrap();
    set(red.id, SessionStatus::Busy, Phase::Ready).await;
    set(red.id, SessionStatus::Idle, Phase::Ready).await;
    // A failure, said once however often it is written.
    set(blue.id, SessionStatus::Failed, Phase::Failed).await;
    set(blue.id, SessionStatus::Failed, Phase::Failed).await;
    let notices = store.list_notices(10).await.unwrap();
    let seen: Vec<_> = notices
        .iter()
        .map(|n| (n.session_id, n.team.as_str(), n.event))
        .collect();
    assert_eq!(
        seen,
        vec![
            (red.id, "red", NoticeKind::Waiting),
            (red.id, "red", NoticeKind::Done),
            (blue.id, "blue", NoticeKind::Failed),
        ]
    );
    assert!(notices.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(store.list_notices(2).await.unwrap(), notices[..2].to_vec());

    // The first two handed on with a task each; the third stays.
    let task = |n: usize| {
        NewTask::new(
            TaskKind::Webhook,
            serde_json::json!({"notice": notices[n].id}),
        )
        .dedupe(format!("notice:{}:hook", notices[n].id))
    };
    store
        .hand_on_notices(notices[1].id, &[task(0), task(1)])
        .await
        .unwrap();
    assert_eq!(store.list_notices(10).await.unwrap(), notices[2..].to_vec());
    let tasks = store
        .list_tasks(&TaskQuery {
            kind: Some(TaskKind::Webhook.as_str().into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t.session_id.is_none()));
    // Nothing wants the last one: it is only deleted.
    store.hand_on_notices(notices[2].id, &[]).await.unwrap();
    assert!(store.list_notices(10).await.unwrap().is_empty());

    // A notifier whose role was taken over writes nothing, and the notice stays.
    set(blue.id, SessionStatus::Ready, Phase::Ready).await;
    set(blue.id, SessionStatus::Busy, Phase::Ready).await;
    set(blue.id, SessionStatus::Idle, Phase::Ready).await;
    let left = store.list_notices(10).await.unwrap();
    assert_eq!(left.len(), 1);
    let stale = store.fenced(Fence::Role {
        name: "notifier".into(),
        core: "gone".into(),
        epoch: 1,
    });
    let err = stale
        .hand_on_notices(left[0].id, &[task(2)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert_eq!(store.list_notices(10).await.unwrap(), left);
}

/// A message's usage, written once or again, counts once on its session (a new figure
/// replaces the old); a price nobody knows is counted apart; a session's budget is kept; a
/// team's spend since a time and the totals by team and agent add up.
async fn usage_is_summed_on_its_session_once(db: TestDb) {
    use agentdeck::model::Usage;
    let store = db.open().await;
    let red = store
        .insert_session(&NewSession {
            budget_usd: Some(5.0),
            ..new_session("coder", "red")
        })
        .await
        .unwrap();
    assert_eq!(red.budget_usd, Some(5.0));
    let other = store
        .insert_session(&new_session("coder", "blue"))
        .await
        .unwrap();
    let assistant = || NewMessage {
        role: MessageRole::Assistant,
        status: MessageStatus::Pending,
        parts: vec![Part::text("…")],
        harness_message_id: None,
    };
    let used = |input, output, cost| MessagePatch {
        usage: Some(Usage {
            input,
            output,
            reasoning: 2,
            cache_read: 10,
            cache_write: 0,
            cost,
        }),
        ..Default::default()
    };
    let one = store.append_message(red.id, &assistant()).await.unwrap();
    let two = store.append_message(red.id, &assistant()).await.unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    store
        .update_message(red.id, one.seq, &used(100, 20, Some(0.25)))
        .await
        .unwrap();
    // Written again as the harness says it again: no double count.
    store
        .update_message(red.id, one.seq, &used(100, 20, Some(0.25)))
        .await
        .unwrap();
    store
        .update_message(red.id, two.seq, &used(50, 5, None))
        .await
        .unwrap();
    let s = store.get_session(red.id).await.unwrap().unwrap();
    assert_eq!(
        (
            s.usage.input,
            s.usage.output,
            s.usage.reasoning,
            s.usage.cache_read
        ),
        (150, 25, 4, 20)
    );
    assert!((s.usage.cost - 0.25).abs() < 1e-9, "{:?}", s.usage);
    assert_eq!(s.usage.unpriced, 1);
    assert_eq!(s.usage.cost_text(), "$0.25 + unknown");
    // The price became known: the figure replaces the old one.
    store
        .update_message(red.id, two.seq, &used(50, 5, Some(0.5)))
        .await
        .unwrap();
    let s = store.get_session(red.id).await.unwrap().unwrap();
    assert!((s.usage.cost - 0.75).abs() < 1e-9, "{:?}", s.usage);
    assert_eq!(s.usage.unpriced, 0);
    assert_eq!(s.budget_spent().map(|b| (b * 100.0).round()), Some(15.0));
    let got = store.list_messages(red.id, 0, 10).await.unwrap();
    assert_eq!(got[1].usage.and_then(|u| u.cost), Some(0.5));
    assert_eq!(got[0].usage.map(|u| u.tokens()), Some(132));

    let blue_msg = store.append_message(other.id, &assistant()).await.unwrap();
    store
        .update_message(other.id, blue_msg.seq, &used(1, 1, Some(1.0)))
        .await
        .unwrap();
    let spent = store.team_spend("red", before).await.unwrap();
    assert!((spent - 0.75).abs() < 1e-9, "{spent}");
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(store.team_spend("red", later).await.unwrap(), 0.0);
    let totals = store.usage_totals().await.unwrap();
    let teams: Vec<_> = totals
        .iter()
        .map(|t| (t.team.as_str(), t.sessions, (t.usage.cost * 100.0).round()))
        .collect();
    assert_eq!(teams, vec![("blue", 1, 100.0), ("red", 1, 75.0)]);

    // An operator raises the budget; lifts it.
    let raised = store
        .update_session(
            red.id,
            &SessionPatch {
                budget_usd: Some(Some(20.0)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(raised.budget_usd, Some(20.0));
    let lifted = store
        .update_session(
            red.id,
            &SessionPatch {
                budget_usd: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(lifted.budget_usd, None);
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::TestDb::postgres().await).await }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::TestDb::sqlite()).await }
            )+
        }
    };
}

conformance!(
    sessions_round_trip,
    sessions_filter_and_page,
    message_seqs_have_no_gaps_or_races,
    event_batches_get_contiguous_seqs,
    tasks_lease_retry_and_dead_letter,
    expired_leases_are_taken_over,
    change_feed_reaches_other_processes,
    agents_sync_marks_absent,
    roles_and_sessions_are_held_under_a_lease,
    deleting_nothing_is_harmless,
    commands_are_all_or_nothing,
    asks_are_answered_once,
    statuses_of_many_sessions,
    a_fork_is_made_with_its_history,
    commands_of_one_session_run_in_order_and_never_land_stale,
    text_with_nul_is_kept_as_sent,
    an_idle_worker_wakes_nobody,
    live_text_reaches_the_watchers_of_its_session,
    ingest_writes_of_many_sessions_commit_together_and_fail_alone,
    a_sessions_work_waits_for_its_own_runtime,
    notices_come_with_their_change_and_are_handed_on_once,
    usage_is_summed_on_its_session_once,
);

/// On Postgres, a batch of raw events moves its session's event counter without announcing a
/// change of the session (the events' own notice says it; cockpits re-read a session on its
/// notice, and a streaming fleet appends events several times a second per session), while any
/// other update of the session is announced. Notices come in commit order, so a marker written
/// after the events shows that none was sent for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_event_batches_are_not_session_changes() {
    let db = TestDb::postgres().await;
    let store = db.open().await;
    let a = store
        .insert_session(&new_session("coder", "a"))
        .await
        .unwrap();
    let mut feed = store.subscribe();
    // Markers are sessions created after subscribing: their notices can only come after
    // everything committed before them (the listener may still be handing over notices of
    // writes made before the subscription, such as `a`'s creation, so an update of an older
    // session cannot mark a point in the feed).
    let warm_up = store
        .insert_session(&new_session("coder", "warm-up"))
        .await
        .unwrap();
    expect_change(&mut feed, "the warm-up", |c| {
        *c == Change::Session(warm_up.id)
    })
    .await;
    store
        .append_events(
            a.id,
            &[NewEvent::new("harness.delta", serde_json::json!({}))],
        )
        .await
        .unwrap();
    let marker = store
        .insert_session(&new_session("coder", "marker"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let arrived = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(change) = feed.next().await {
            if change == Change::Session(marker.id) {
                return true;
            }
            seen.push(change);
        }
        false
    })
    .await;
    assert_eq!(arrived, Ok(true), "the marker's notice arrives");
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::Event { session, .. } if *session == a.id)),
        "the events are announced: {seen:?}"
    );
    assert!(
        !seen.contains(&Change::Session(a.id)),
        "an event batch is not a change of the session: {seen:?}"
    );
    store
        .update_session(
            a.id,
            &SessionPatch::status(SessionStatus::Idle, Phase::Ready),
        )
        .await
        .unwrap();
    expect_change(&mut feed, "a status change", |c| {
        *c == Change::Session(a.id)
    })
    .await;
}
