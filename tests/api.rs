//! The REST API over real HTTP against real Postgres, with the core's worker running. Sandboxes
//! and the harness are the in-test stand-ins (tests/common/fakes.rs); the store, the worker, the
//! HTTP server and the client are the real ones.

mod common;

use common::{ApiServer, TestDb, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn get_json(s: &ApiServer, path: &str) -> (StatusCode, Value) {
    let resp = s.http.get(s.url(path)).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post_json(s: &ApiServer, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = s.http.post(s.url(path)).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_status(s: &ApiServer, id: &str, status: &str) -> Value {
    let path = format!("/api/sessions/{id}");
    let last = std::sync::Mutex::new(Value::Null);
    let waited = tokio::time::timeout(
        WAIT,
        eventually(
            WAIT * 2,
            &format!("session {id} to be {status}"),
            || async {
                let (_, body) = get_json(s, &path).await;
                if body["status"] == status {
                    return Some(body);
                }
                *last.lock().unwrap() = body;
                None
            },
        ),
    )
    .await;
    match waited {
        Ok(body) => body,
        Err(_) => {
            let diagnosis = tokio::time::timeout(
                Duration::from_secs(5),
                get_json(s, &format!("{path}/diagnosis")),
            )
            .await
            .map(|(_, d)| d)
            .unwrap_or(Value::Null);
            panic!(
                "timed out after {WAIT:?} waiting for session {id} to be {status}; it is {}\n\
                 its diagnosis: {diagnosis}",
                last.lock().unwrap()
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_goes_through_its_whole_life() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;

    let resp = s
        .http
        .post(s.url("/api/sessions"))
        .json(&json!({"agent_id": "coder", "initial_prompt": "fix the build", "env_vars": {"SHARED": "session", "TICKET": "OPS-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/sessions/{id}"));
    assert_eq!(created["agent_id"], "coder");
    assert_eq!(created["team"], "default");
    assert_eq!(created["title"], "fix the build");
    assert_eq!(created["env_keys"], json!(["SHARED", "TICKET"]));
    assert!(created.get("env").is_none());

    // Up, and busy with the initial prompt at once.
    let ready = wait_status(&s, &id, "busy").await;
    assert_eq!(ready["phase"], "busy");
    assert!(
        ready["idle_deadline"].is_null(),
        "no idle countdown while busy"
    );
    let sandbox = ready["sandbox_ref"].as_str().unwrap().to_string();
    let env = s.runtime.sandbox(&sandbox).unwrap().env;
    assert_eq!(
        env["SHARED"], "session",
        "the session's env wins over the agent's"
    );
    assert_eq!(env["AGENT_LEVEL"], "agent");
    assert_eq!(env["TICKET"], "OPS-1");
    // The harness asks for a password of the session's own, which the sandbox gets under the
    // harness's names only.
    let password = env
        .get("IN_TEST_HARNESS_PASSWORD")
        .expect("the sandbox gets its harness password")
        .clone();
    assert_eq!(password.len(), 64, "256 random bits");
    assert!(!env.contains_key("AGENTDECK_HARNESS_PASSWORD"));

    // The initial prompt reached the agent and is complete in the transcript.
    eventually(WAIT, "the prompt to be delivered", || async {
        (s.harness.sent_texts() == ["fix the build"]).then_some(())
    })
    .await;
    let (_, page) = get_json(&s, &format!("/api/sessions/{id}/messages")).await;
    assert_eq!(page["messages"][0]["seq"], 1);
    assert_eq!(page["messages"][0]["status"], "complete");
    assert_eq!(page["messages"][0]["parts"][0]["text"], "fix the build");

    let (status, msg) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "and add a test"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (msg["seq"].as_i64(), msg["status"].as_str()),
        (Some(2), Some("pending"))
    );
    eventually(WAIT, "the second message", || async {
        (s.harness.sent_texts().len() == 2).then_some(())
    })
    .await;
    wait_status(&s, &id, "busy").await;

    // Suspend, then a message resumes the session and is delivered once it is up again.
    let (status, _) = post_json(&s, &format!("/api/sessions/{id}/suspend"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_status(&s, &id, "suspended").await;
    assert!(s.runtime.sandbox(&sandbox).unwrap().suspended);
    let (status, _) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "still there?"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(WAIT, "the message sent while suspended", || async {
        (s.harness.sent_texts().last().map(String::as_str) == Some("still there?")).then_some(())
    })
    .await;
    assert!(!s.runtime.sandbox(&sandbox).unwrap().suspended);

    let (status, _) = post_json(&s, &format!("/api/sessions/{id}/restart"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(WAIT, "the restart", || async {
        let (_, b) = get_json(&s, &format!("/api/sessions/{id}")).await;
        (b["status"] == "ready" && s.runtime.sandbox(&sandbox).map(|x| x.restarts) == Some(1))
            .then_some(())
    })
    .await;
    assert_eq!(
        *s.runtime.provisions.lock().unwrap(),
        1,
        "a restart keeps the sandbox"
    );
    assert_eq!(
        s.harness.passwords_seen(),
        vec![Some(password.clone())],
        "every call to the harness, before and after suspend and restart, carries its password"
    );

    let resp = s
        .http
        .delete(s.url(&format!("/api/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let dead = wait_status(&s, &id, "dead").await;
    assert!(dead["stopped_at"].is_string());
    // The session is dead first; its sandbox goes right after.
    eventually(WAIT, "the sandbox to be destroyed", || async {
        s.runtime.sandbox(&sandbox).is_none().then_some(())
    })
    .await;
    let (status, body) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "hello?"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // The transcript stays.
    let (_, page) = get_json(&s, &format!("/api/sessions/{id}/messages")).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);

    // The phase history is in the event log.
    let phases: Vec<String> = s
        .core
        .events(id.parse().unwrap(), 0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "session.phase")
        .map(|e| e.payload["phase"].as_str().unwrap_or("").to_string())
        .collect();
    for expected in [
        "creating_sandbox",
        "sandbox_pending",
        "harness_starting",
        "ready",
        "suspended",
        "resuming",
        "restarting",
        "dead",
    ] {
        assert!(
            phases.iter().any(|p| p == expected),
            "{expected} missing from {phases:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_curl_example_works_as_written() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    // curl -X POST http://localhost:3000/api/sessions -H "Content-Type: application/json" -d '{"agent_id": "your-agent-id"}'
    let resp = s
        .http
        .post(s.url("/api/sessions"))
        .header("Content-Type", "application/json")
        .body(r#"{"agent_id": "coder"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    let (_, list) = get_json(&s, "/api/sessions").await;
    assert_eq!(list["sessions"][0]["id"], body["id"]);
    s.stop().await;
}

/// A session belongs to the runtime that made its sandbox: a `serve` on another runtime refuses
/// to act on it (it would act on a sandbox it cannot reach, or make a new one on its own runtime
/// while the old one runs on) and says which runtime to use, changing nothing; its sandboxes
/// view leaves it out, and its health says where it runs instead of "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_another_runtime_is_not_acted_on() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let store = db.open().await;
    let elsewhere = store
        .insert_session(&agentdeck::model::NewSession {
            agent_id: "coder".into(),
            team: "red".into(),
            title: "on kubernetes".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .update_session(
            elsewhere.id,
            &agentdeck::model::SessionPatch {
                runtime: Some(Some("kubernetes".into())),
                sandbox_ref: Some(Some("agentdeck/ad-x".into())),
                harness_session_id: Some(Some("ses".into())),
                ..agentdeck::model::SessionPatch::status(
                    agentdeck::model::SessionStatus::Idle,
                    agentdeck::model::Phase::Ready,
                )
            },
        )
        .await
        .unwrap();
    let id = elsewhere.id.to_string();
    let says = "runs on the kubernetes runtime (start agentdeck with --runtime kubernetes";
    for action in ["restart", "suspend"] {
        let (st, b) = post_json(&s, &format!("/api/sessions/{id}/{action}"), json!({})).await;
        assert_eq!(st, StatusCode::CONFLICT, "{action}: {b}");
        assert!(
            b["message"].as_str().unwrap_or("").contains(says),
            "{action}: {b}"
        );
    }
    let (st, b) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "hello"}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    let resp = s
        .http
        .delete(s.url(&format!("/api/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let after = store.get_session(elsewhere.id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.command_seq),
        (agentdeck::model::SessionStatus::Idle, elsewhere.command_seq),
        "nothing changed"
    );
    assert!(
        store
            .list_messages(elsewhere.id, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "no message stored"
    );
    let (_, diagnosis) = get_json(&s, &format!("/api/sessions/{id}/diagnosis")).await;
    assert!(diagnosis.to_string().contains(says), "{diagnosis}");
    assert!(
        s.core
            .fleet_health()
            .await
            .unwrap()
            .iter()
            .all(|row| row.0 != elsewhere.id),
        "the sandboxes view is this runtime's"
    );
    s.stop().await;
}

/// Every route answers its rejections as JSON, like every other error of the API: a method a
/// route does not take is a 405 with the JSON error and an `Allow` header naming what it takes;
/// a path segment that is not UTF-8 is a 400 with the JSON error (axum answered an empty 405
/// and a text/plain 400 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_its_rejections_as_json() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    // (path, the methods it takes): the router's table.
    let routes: &[(&str, &[&str])] = &[
        ("/api/sessions", &["GET", "POST"]),
        ("/api/sessions/{id}", &["GET", "DELETE", "PATCH"]),
        ("/api/sessions/{id}/messages", &["GET", "POST"]),
        ("/api/sessions/{id}/events", &["GET"]),
        ("/api/sessions/{id}/live", &["GET"]),
        ("/api/sessions/{id}/logs", &["GET"]),
        ("/api/changes", &["GET"]),
        ("/api/status", &["GET"]),
        ("/api/whoami", &["GET"]),
        ("/api/sandboxes", &["GET"]),
        ("/api/sessions/{id}/diagnosis", &["GET"]),
        ("/api/sessions/{id}/fork", &["POST"]),
        ("/api/sessions/{id}/budget", &["POST"]),
        ("/api/sessions/{id}/diff", &["GET"]),
        ("/api/usage", &["GET"]),
        ("/api/sessions/{id}/forks", &["GET"]),
        ("/api/sessions/{id}/permissions", &["GET"]),
        ("/api/sessions/{id}/permissions/{ask}", &["POST"]),
        ("/api/sessions/{id}/questions", &["GET"]),
        ("/api/sessions/{id}/questions/{ask}", &["POST"]),
        ("/api/sessions/{id}/restart", &["POST"]),
        ("/api/agents", &["GET"]),
        ("/healthz", &["GET"]),
        ("/metrics", &["GET"]),
    ];
    let some_id = "01234567-89ab-cdef-0123-456789abcdef";
    for (route, takes) in routes {
        let path = route.replace("{id}", some_id).replace("{ask}", "per_1");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if takes.contains(&method) {
                continue;
            }
            let resp = s
                .http
                .request(method.parse().unwrap(), s.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let allow = resp
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            for m in *takes {
                assert!(
                    allow.contains(m),
                    "{method} {path}: Allow {allow:?} lacks {m}"
                );
            }
            let body: Value = resp
                .json()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: the 405 is not JSON: {e}"));
            assert_eq!(
                body["error"], "method_not_allowed",
                "{method} {path}: {body}"
            );
            assert!(
                body["message"].as_str().unwrap_or("").contains(method),
                "{method} {path}: {body}"
            );
        }
        if route.contains("{id}") {
            let path = route.replace("{id}", "%FF%FE").replace("{ask}", "per_1");
            let method = takes[0];
            let resp = s
                .http
                .request(method.parse().unwrap(), s.url(&path))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method} {path}");
            let body: Value = resp
                .json()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: the 400 is not JSON: {e}"));
            assert_eq!(body["error"], "bad_request", "{method} {path}: {body}");
            assert!(
                body["message"].as_str().unwrap_or("").contains("path"),
                "{method} {path}: {body}"
            );
        }
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;

    let check = |status: StatusCode, body: &Value, want: StatusCode, error: &str, says: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"], error, "{body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(
            message.contains(says),
            "{message:?} should mention {says:?}"
        );
    };

    let (st, b) = post_json(&s, "/api/sessions", json!({"agent_id": "nope"})).await;
    check(st, &b, StatusCode::NOT_FOUND, "unknown_agent", "coder");

    let resp = s
        .http
        .post(s.url("/api/sessions"))
        .header("content-type", "application/json")
        .body("{\"agent_id\": ")
        .send()
        .await
        .unwrap();
    let (st, b) = (resp.status(), resp.json::<Value>().await.unwrap());
    check(
        st,
        &b,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "not valid JSON",
    );

    let resp = s
        .http
        .post(s.url("/api/sessions"))
        .body("{\"agent_id\": \"coder\"}")
        .send()
        .await
        .unwrap();
    let (st, b) = (resp.status(), resp.json::<Value>().await.unwrap());
    check(
        st,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/json",
    );

    let (st, b) = post_json(&s, "/api/sessions", json!({"agent_id": 7})).await;
    check(st, &b, StatusCode::BAD_REQUEST, "invalid_body", "agent_id");
    let (st, b) = post_json(&s, "/api/sessions", json!({"agent": "coder"})).await;
    check(
        st,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "unknown field",
    );

    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("V{i}"), json!("x"))).collect();
    let (st, b) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "env_vars": many}),
    )
    .await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "at most 50");
    let (st, b) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "env_vars": {"BIG": "x".repeat(17 * 1024)}}),
    )
    .await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "16384");
    let (st, b) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "env_vars": {"PATH": "/evil"}}),
    )
    .await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "reserved");
    let (st, b) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "env_vars": {"X": 1}}),
    )
    .await;
    check(st, &b, StatusCode::BAD_REQUEST, "invalid_body", "env_vars");

    let missing = uuid::Uuid::now_v7();
    let (st, b) = get_json(&s, &format!("/api/sessions/{missing}")).await;
    check(
        st,
        &b,
        StatusCode::NOT_FOUND,
        "not_found",
        &missing.to_string(),
    );
    let (st, b) = get_json(&s, "/api/sessions/not-a-uuid").await;
    check(
        st,
        &b,
        StatusCode::NOT_FOUND,
        "not_found",
        "not a session id",
    );
    let (st, b) = post_json(
        &s,
        &format!("/api/sessions/{missing}/messages"),
        json!({"text": "hi"}),
    )
    .await;
    check(st, &b, StatusCode::NOT_FOUND, "not_found", "not found");

    let (_, created) = post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
    let id = created["id"].as_str().unwrap();
    let (st, b) = post_json(&s, &format!("/api/sessions/{id}/explode"), json!({})).await;
    check(st, &b, StatusCode::NOT_FOUND, "not_found", "unknown action");
    let (st, b) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "   "}),
    )
    .await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "empty");
    wait_status(&s, id, "ready").await;
    let (st, b) = post_json(&s, &format!("/api/sessions/{id}/abort"), json!({})).await;
    check(
        st,
        &b,
        StatusCode::CONFLICT,
        "conflict",
        "no turn is running",
    );
    let (st, b) = post_json(&s, &format!("/api/sessions/{id}/resume"), json!({})).await;
    check(st, &b, StatusCode::CONFLICT, "conflict", "it is ready");

    let (st, b) = get_json(&s, "/api/sessions?status=zombie").await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "zombie");
    let (st, b) = get_json(&s, "/api/sessions?limit=0").await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "limit");
    let (st, b) = get_json(&s, "/api/sessions?limit=ten").await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "limit");
    let (st, b) = get_json(&s, "/api/sessions?cursor=zzz").await;
    check(st, &b, StatusCode::BAD_REQUEST, "bad_request", "cursor");
    let (st, b) = get_json(&s, "/nowhere").await;
    check(st, &b, StatusCode::NOT_FOUND, "not_found", "/api");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_and_pages() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let agent = if i < 3 { "coder" } else { "sleepy" };
        let (st, b) = post_json(
            &s,
            "/api/sessions",
            json!({"agent_id": agent, "title": format!("s{i}")}),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/sessions?limit=2&cursor={c}"),
            None => "/api/sessions?limit=2".to_string(),
        };
        let (st, page) = get_json(&s, &path).await;
        assert_eq!(st, StatusCode::OK);
        seen.extend(
            page["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let (_, page) = get_json(&s, "/api/sessions?agent=sleepy").await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    let (_, page) = get_json(
        &s,
        "/api/sessions?status=creating,ready,idle,busy&team=default",
    )
    .await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 5);
    let (_, page) = get_json(&s, "/api/sessions?team=nobody").await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 0);
    let (_, agents) = get_json(&s, "/api/agents").await;
    let agent_ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(agent_ids, vec!["coder", "opencode", "sleepy"]);
    assert!(
        !agents.to_string().contains("\"agent\""),
        "agent env values are not exposed: {agents}"
    );
    s.stop().await;
}

const TEAM_TOKENS: &str = r#"
[[api.tokens]]
token = "red-team-token-0123456789"
team = "red"
[[api.tokens]]
token = "blue-team-token-0123456789"
team = "blue"
[[api.tokens]]
token = "admin-token-0123456789abcd"
team = "*"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_sees_and_touches_only_its_sessions() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, TEAM_TOKENS).await;
    let as_team = |token: &'static str| {
        let http = s.http.clone();
        let base = s.base.clone();
        move |method: reqwest::Method, path: &str| {
            http.request(method, format!("{base}{path}"))
                .bearer_auth(token)
        }
    };
    let red = as_team("red-team-token-0123456789");
    let blue = as_team("blue-team-token-0123456789");
    let admin = as_team("admin-token-0123456789abcd");

    let resp = s.http.get(s.url("/api/sessions")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = s
        .http
        .get(s.url("/api/sessions"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let created: Value = red(reqwest::Method::POST, "/api/sessions")
        .json(&json!({"agent_id": "coder"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["team"], "red");
    let id = created["id"].as_str().unwrap();

    let resp = blue(reqwest::Method::GET, &format!("/api/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = blue(reqwest::Method::DELETE, &format!("/api/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = blue(
        reqwest::Method::POST,
        &format!("/api/sessions/{id}/messages"),
    )
    .json(&json!({"text": "hi"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = blue(reqwest::Method::GET, &format!("/api/sessions/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let list: Value = blue(reqwest::Method::GET, "/api/sessions?team=red")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"], json!([]));
    let resp = blue(reqwest::Method::POST, "/api/sessions")
        .json(&json!({"agent_id": "coder", "team": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = red(reqwest::Method::GET, &format!("/api/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    blue(reqwest::Method::POST, "/api/sessions")
        .json(&json!({"agent_id": "coder"}))
        .send()
        .await
        .unwrap();
    let all: Value = admin(reqwest::Method::GET, "/api/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 2);
    let mine: Value = red(reqwest::Method::GET, "/api/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 1);
    s.stop().await;
}

/// Reads SSE frames from a response until `want` events were seen; returns (id, event, data).
async fn read_sse(resp: reqwest::Response, want: usize) -> Vec<(i64, String, Value)> {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    }
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    }
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Some(id) = id {
                    out.push((
                        id,
                        event,
                        serde_json::from_str(&data).unwrap_or(Value::Null),
                    ));
                    if out.len() >= want {
                        return;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, read).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_live_and_resume_from_last_event_id() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let (_, created) = post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
    let id = created["id"].as_str().unwrap().to_string();
    let resp = s
        .http
        .get(s.url(&format!("/api/sessions/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let first = read_sse(resp, 4).await;
    assert_eq!(
        first.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{first:?}"
    );
    assert_eq!(first[0].1, "session.created");

    wait_status(&s, &id, "ready").await;
    // New events arrive live on an open stream.
    let resp = s
        .http
        .get(s.url(&format!("/api/sessions/{id}/events")))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let live = tokio::spawn(read_sse(resp, 100));
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.core.suspend(id.parse().unwrap()).await.unwrap();
    wait_status(&s, &id, "suspended").await;
    let total = s
        .core
        .get_session(id.parse().unwrap())
        .await
        .unwrap()
        .last_event_seq;
    s.core.end(id.parse().unwrap()).await.unwrap();
    wait_status(&s, &id, "dead").await;
    let got = live.await.unwrap();
    assert_eq!(
        got.first().map(|e| e.0),
        Some(3),
        "resumes right after Last-Event-ID"
    );
    let ids: Vec<i64> = got.iter().map(|e| e.0).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps, no repeats: {ids:?}"
    );
    assert!(
        *ids.last().unwrap() > total,
        "saw events written after it connected"
    );
    assert_eq!(
        got.last().unwrap().2["payload"]["status"],
        "dead",
        "the stream ends with the session"
    );

    let resp = s
        .http
        .get(s.url(&format!("/api/sessions/{id}/events")))
        .header("Last-Event-ID", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let (st, health) = get_json(&s, "/healthz").await;
    assert_eq!((st, health["store"].as_str()), (StatusCode::OK, Some("ok")));
    post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
    post_json(&s, "/api/sessions", json!({"agent_id": "ghost"})).await;
    let resp = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("agentdeck_store_up 1"), "{text}");
    assert!(text.contains("agentdeck_http_requests_total{method=\"POST\",route=\"/api/sessions\",status=\"201\"} 1"), "{text}");
    assert!(text.contains("agentdeck_http_requests_total{method=\"POST\",route=\"/api/sessions\",status=\"404\"} 1"), "{text}");
    let sessions: i64 = text
        .lines()
        .filter(|l| l.starts_with("agentdeck_sessions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    assert_eq!(sessions, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_cannot_be_made_fails_the_session_with_the_reason() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    *s.runtime.refuse.lock().unwrap() = Some("image registry.example/agent:1 not found".into());
    let (_, created) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "initial_prompt": "hi"}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let failed = wait_status(&s, id, "failed").await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("registry.example/agent:1 not found"),
        "{failed}"
    );
    // The operator's prompt is not lost.
    let (_, page) = get_json(&s, &format!("/api/sessions/{id}/messages")).await;
    assert_eq!(page["messages"][0]["status"], "pending");
    let (st, body) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "more"}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("restart it first")
    );
    // The diagnosis says what happened and what to do, with what could not be read said so.
    let (st, d) = get_json(&s, &format!("/api/sessions/{id}/diagnosis")).await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(d["session"]["status"], "failed");
    let phases: Vec<&str> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["payload"]["phase"].as_str())
        .collect();
    assert_eq!(phases.last(), Some(&"failed"), "{d}");
    assert!(phases.contains(&"creating_sandbox"), "{d}");
    assert!(
        d["advice"][0]
            .as_str()
            .unwrap()
            .starts_with("The session failed"),
        "{d}"
    );
    assert!(
        d["log_tail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("has no sandbox")),
        "{d}"
    );
    assert!(d["sandbox"].is_null(), "{d}");
    let (st, _) = get_json(
        &s,
        "/api/sessions/01890000-0000-7000-8000-000000000000/diagnosis",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Once the cause is gone, a restart brings it up and delivers the prompt.
    *s.runtime.refuse.lock().unwrap() = None;
    post_json(&s, &format!("/api/sessions/{id}/restart"), json!({})).await;
    wait_status(&s, id, "busy").await;
    // (busy is written as the delivery starts: the harness has the text a moment later)
    eventually(WAIT, "the prompt to reach the harness", || async {
        (s.harness.sent_texts() == vec!["hi"]).then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_suspended_and_vanished_sandboxes_come_back() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    // sleepy's idle timeout is 1s: the reaper suspends it on its next pass.
    let (_, sleepy) = post_json(&s, "/api/sessions", json!({"agent_id": "sleepy"})).await;
    let (_, coder) = post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
    let coder_id = coder["id"].as_str().unwrap();
    let ready = wait_status(&s, coder_id, "ready").await;
    let sandbox = ready["sandbox_ref"].as_str().unwrap().to_string();
    let password = |sandbox: &str| {
        s.runtime
            .sandbox(sandbox)
            .and_then(|x| x.env.get("IN_TEST_HARNESS_PASSWORD").cloned())
    };
    let before = password(&sandbox).expect("a harness password");
    s.runtime.vanish(&sandbox);
    wait_status(&s, sleepy["id"].as_str().unwrap(), "suspended").await;
    eventually(
        WAIT,
        "the reconciler to provision the vanished sandbox again",
        || async { (s.runtime.sandbox(&sandbox).is_some()).then_some(()) },
    )
    .await;
    wait_status(&s, coder_id, "ready").await;
    assert_eq!(
        password(&sandbox),
        Some(before),
        "the new sandbox is given the session's same harness password"
    );
    s.stop().await;
}

/// A command is one transaction with the task that carries it out: when the task cannot be
/// written (the store refuses mid-way), the command is a 503 and the session is as it was, not
/// left restarting with nothing to restart it; asked again, the restart comes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_task_cannot_be_written_changes_nothing() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let (status, created) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "initial_prompt": "hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_string();
    // Busy with its prompt (the in-test agent never answers: a turn that stays open).
    let before = wait_status(&s, &id, "busy").await;

    db.refuse_tasks(true).await;
    let (status, body) = post_json(&s, &format!("/api/sessions/{id}/restart"), json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, after) = get_json(&s, &format!("/api/sessions/{id}")).await;
    assert_eq!(after["status"], "busy", "{after}");
    assert_eq!(after["phase"], before["phase"], "{after}");
    // Nor can a session be made half-way.
    let (status, _) = post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, all) = get_json(&s, "/api/sessions").await;
    assert_eq!(all["sessions"].as_array().map(Vec::len), Some(1), "{all}");

    db.refuse_tasks(false).await;
    let (status, _) = post_json(&s, &format!("/api/sessions/{id}/restart"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let sandbox = before["sandbox_ref"].as_str().unwrap().to_string();
    eventually(WAIT, "the restart to be carried out", || async {
        let (_, b) = get_json(&s, &format!("/api/sessions/{id}")).await;
        (b["status"] == "ready" && s.runtime.sandbox(&sandbox).map(|x| x.restarts) == Some(1))
            .then_some(())
    })
    .await;
    s.stop().await;
}

/// The sandboxes view's health of the whole fleet is read concurrently, not one sandbox after
/// another: with each read taking a while, several are in flight at once, and every live
/// session is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleets_health_is_read_concurrently() {
    use std::sync::atomic::Ordering::SeqCst;
    let db = TestDb::postgres().await;
    let mut s = ApiServer::start(&db, "").await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let (status, created) = post_json(
            &s,
            "/api/sessions",
            json!({"agent_id": "coder", "title": format!("fleet {n}")}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_status(&s, id, "ready").await;
    }
    // Only this test reads the runtime from here on.
    s.stop_worker().await;
    *s.runtime.health_delay.lock().unwrap() = Duration::from_millis(100);
    let rows = s.core.fleet_health().await.unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(rows.iter().all(|(_, _, h)| h.is_ok()), "{rows:?}");
    let most = s.runtime.health_most_in_flight.load(SeqCst);
    assert!(
        most >= 2,
        "health was read one at a time ({most} in flight at most)"
    );
    // The reconciler reads its live sessions' sandboxes the same way.
    s.runtime.health_most_in_flight.store(0, SeqCst);
    s.core.reconcile_once().await.unwrap();
    let most = s.runtime.health_most_in_flight.load(SeqCst);
    assert!(
        most >= 2,
        "the reconciler read health one at a time ({most} in flight at most)"
    );
    s.stop().await;
}

/// A fork: a new session whose conversation is its parent's up to a message, replayed to its
/// own harness when its sandbox comes up, linked both ways; a fork point outside the transcript
/// is a 400 and makes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_forks_at_a_message() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let (_, created) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "title": "payments triage", "initial_prompt": "look at the failing checkout"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    wait_status(&s, &id, "busy").await;
    post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "now the refunds"}),
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "both messages delivered",
        || async { (s.harness.sent_texts().len() >= 2).then_some(()) },
    )
    .await;

    for (seq, why) in [
        (0, "its messages are #1 to #2"),
        (3, "its messages are #1 to #2"),
    ] {
        let (status, body) = post_json(
            &s,
            &format!("/api/sessions/{id}/fork"),
            json!({"message_seq": seq}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(why),
            "{body}"
        );
    }
    let (status, _) = post_json(
        &s,
        "/api/sessions/01890000-0000-7000-8000-000000000000/fork",
        json!({"message_seq": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, forks) = get_json(&s, &format!("/api/sessions/{id}/forks")).await;
    assert_eq!(forks["forks"], json!([]), "bad fork points made nothing");

    let (status, fork) = post_json(
        &s,
        &format!("/api/sessions/{id}/fork"),
        json!({"message_seq": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{fork}");
    let fork_id = fork["id"].as_str().unwrap().to_string();
    assert_ne!(fork_id, id);
    assert_eq!(fork["title"], "fork of payments triage");
    assert_eq!(fork["parent_id"], id.as_str());
    assert_eq!(fork["fork_seq"], 1);
    let (_, forks) = get_json(&s, &format!("/api/sessions/{id}/forks")).await;
    assert_eq!(forks["forks"][0]["id"], fork_id.as_str());

    // Its own sandbox, and the parent's conversation up to #1 replayed to its harness.
    wait_status(&s, &fork_id, "ready").await;
    let (_, page) = get_json(&s, &format!("/api/sessions/{fork_id}/messages")).await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(
        messages[0]["parts"][0]["text"],
        "look at the failing checkout"
    );
    assert!(
        messages
            .iter()
            .all(|m| m["parts"][0]["text"] != "now the refunds"),
        "only up to the fork point: {page}"
    );
    assert!(
        messages.iter().any(|m| m["role"] == "system"
            && m["parts"][0]["text"]
                .as_str()
                .unwrap_or("")
                .contains("Forked from session")),
        "{page}"
    );
    let replay = s
        .harness
        .sent_texts()
        .into_iter()
        .find(|t| t.contains("forked from another"))
        .expect("the history was replayed to the fork's harness");
    assert!(replay.contains("look at the failing checkout"), "{replay}");
    assert!(!replay.contains("now the refunds"), "{replay}");
    let parent = s.core.get_session(id.parse().unwrap()).await.unwrap();
    assert_ne!(
        parent.sandbox_ref,
        s.core
            .get_session(fork_id.parse().unwrap())
            .await
            .unwrap()
            .sandbox_ref,
        "a sandbox of its own"
    );
    s.stop().await;
}

/// A suspend, then at once a restart, of one session (an operator changing their mind): the
/// restart waits for the running suspend, which lands nothing once overtaken, and the session
/// ends up as the last command said: up, its sandbox running. (Before, both tasks ran at once
/// and the slow suspend, landing last, left the session suspended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_of_two_racing_commands_wins() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    let (status, created) = post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let ready = wait_status(&s, &id, "ready").await;
    let sandbox = ready["sandbox_ref"].as_str().unwrap().to_string();
    *s.runtime.suspend_delay.lock().unwrap() = Duration::from_millis(1500);
    let uuid: uuid::Uuid = id.parse().unwrap();
    let store = db.open().await;
    let tasks_of = || {
        let store = store.clone();
        async move {
            store
                .list_tasks(&agentdeck::model::TaskQuery {
                    session_id: Some(uuid),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    s.core.suspend(uuid).await.unwrap();
    // The suspend's task is running (slowly) when the restart comes.
    eventually(WAIT, "the suspend task to run", || async {
        tasks_of()
            .await
            .iter()
            .any(|t| {
                t.kind == "session.suspend" && t.status == agentdeck::model::TaskStatus::Running
            })
            .then_some(())
    })
    .await;
    let restarting = s.core.restart(uuid).await.unwrap();
    assert_eq!(restarting.status, agentdeck::model::SessionStatus::Creating);
    let up = wait_status(&s, &id, "ready").await;
    assert_eq!(up["phase"], "ready", "{up}");
    assert!(
        !s.runtime.sandbox(&sandbox).unwrap().suspended,
        "the sandbox runs, as the restart asked"
    );
    // And it stays so: the overtaken suspend landed nothing after the restart. (The
    // restart's task finishes a moment after the session is up: its last step delivers what
    // waits, so it is waited for.)
    eventually(WAIT, "every task of the session to be done", || async {
        tasks_of()
            .await
            .iter()
            .all(|t| t.status == agentdeck::model::TaskStatus::Done)
            .then_some(())
    })
    .await;
    let (_, now) = get_json(&s, &format!("/api/sessions/{id}")).await;
    assert_eq!(now["status"], "ready", "{now}");
    s.stop().await;
}

/// Messages to an agent whose gateway does not answer wait for it (the session says so,
/// naming it), go once it answers, and fail naming it if it never does. They were sent, and
/// the turn sat busy for over a minute before failing with an error that named no gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_the_gateway_and_fail_naming_it() {
    let db = TestDb::postgres().await;
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let s = ApiServer::start(&db, &format!("[gateway]\nurl = \"{url}\"\n")).await;
    let (_, created) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "initial_prompt": "hi"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    // The sandbox comes up; the prompt waits, and the session says for what.
    let waiting = eventually(
        WAIT,
        "the session to say it waits for the gateway",
        || async {
            let (_, body) = get_json(&s, &format!("/api/sessions/{id}")).await;
            body["phase_detail"]
                .as_str()
                .is_some_and(|d| d.contains("wait for the gateway") && d.contains(&url))
                .then_some(body)
        },
    )
    .await;
    assert_eq!(waiting["status"], "ready", "not busy: {waiting}");
    assert!(s.harness.sent_texts().is_empty(), "nothing was sent");
    // It never answers: the prompt fails, naming it; nothing is left "sending…".
    let failed = eventually(WAIT * 2, "the prompt to fail", || async {
        let (_, page) = get_json(&s, &format!("/api/sessions/{id}/messages")).await;
        let m = page["messages"][0].clone();
        (m["status"] == "failed").then_some(m)
    })
    .await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("not sent: the gateway does not answer") && error.contains(&url),
        "{failed}"
    );
    // The messages fail first, then the wait is taken off the session: poll for the second.
    eventually(WAIT, "the session to stop saying it waits", || async {
        let (_, body) = get_json(&s, &format!("/api/sessions/{id}")).await;
        body["phase_detail"].is_null().then_some(())
    })
    .await;

    // It answers: the next message goes.
    let gateway = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/health/liveliness",
        axum::routing::get(|| async { "I'm alive!" }),
    );
    let served = tokio::spawn(async move { axum::serve(gateway, app).await });
    let (status, _) = post_json(
        &s,
        &format!("/api/sessions/{id}/messages"),
        json!({"text": "again"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(WAIT, "the message to reach the agent", || async {
        s.harness
            .sent_texts()
            .iter()
            .any(|t| t == "again")
            .then_some(())
    })
    .await;
    served.abort();
    // The harness's echo of it is linked to it, not to the message that failed unsent before.
    s.harness.drop_bus();
    let page = eventually(WAIT, "the echo to be linked", || async {
        let (_, page) = get_json(&s, &format!("/api/sessions/{id}/messages")).await;
        page["messages"]
            .as_array()
            .is_some_and(|all| all.iter().any(|m| !m["harness_message_id"].is_null()))
            .then_some(page)
    })
    .await;
    let linked: Vec<(String, Value)> = page["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["parts"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["harness_message_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        linked,
        vec![
            ("hi".to_string(), Value::Null),
            ("again".to_string(), json!("msg_user_0"))
        ]
    );
}

/// opencode lists a prompt's user message only some time after accepting it (0.2 s and more on
/// a session's first prompt): a catch-up with the harness in between must not take the busy
/// session for idle (it did, in half of the first turns measured), and does take the echo
/// when it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_the_harness_has_not_listed_yet_keeps_its_session_busy() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    s.harness
        .hide_echoes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, created) = post_json(
        &s,
        "/api/sessions",
        json!({"agent_id": "coder", "initial_prompt": "hi"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let status = || async {
        let (_, body) = get_json(&s, &format!("/api/sessions/{id}")).await;
        body["status"].as_str().unwrap_or_default().to_string()
    };
    eventually(
        WAIT,
        "the prompt to be sent, the session busy, its pump caught up",
        || async {
            (s.harness.sent_texts() == ["hi"]
                && status().await == "busy"
                && s.harness.catch_ups() > 0)
                .then_some(())
        },
    )
    .await;
    // The pump reconnects and catches up while the harness does not list the prompt yet.
    for echoed in [false, true] {
        s.harness
            .hide_echoes
            .store(!echoed, std::sync::atomic::Ordering::SeqCst);
        let before = s.harness.catch_ups();
        s.harness.drop_bus();
        eventually(WAIT, "the pump to catch up again", || async {
            (s.harness.catch_ups() > before).then_some(())
        })
        .await;
        assert_eq!(status().await, "busy", "echoed: {echoed}");
    }
    let (_, page) = get_json(&s, &format!("/api/sessions/{id}/messages")).await;
    assert_eq!(
        page["messages"][0]["harness_message_id"], "msg_user_0",
        "{page}"
    );
}

/// SSE frames of a response, `(event, data)`, as they come: read on a task of their own.
fn sse_events(resp: reqwest::Response) -> tokio::sync::mpsc::UnboundedReceiver<(String, Value)> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    }
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !event.is_empty()
                    && tx
                        .send((event, serde_json::from_str(&data).unwrap_or(Value::Null)))
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

/// What a cockpit that is a client of `serve` reads (the change stream, a session's live
/// text and log, the sandboxes, the status) shows a team only its own sessions, like every
/// other route: blue's session is never sent, counted or reachable through red's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cockpit_routes_show_a_team_only_its_own() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, TEAM_TOKENS).await;
    let (red, blue) = ("red-team-token-0123456789", "blue-team-token-0123456789");
    let get =
        |token: &'static str, path: String| s.http.get(s.url(&path)).bearer_auth(token).send();
    let resp = s.http.get(s.url("/api/changes")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "no token, no stream"
    );
    let mut red_changes = sse_events(get(red, "/api/changes".into()).await.unwrap());
    let first = tokio::time::timeout(WAIT, red_changes.recv())
        .await
        .unwrap();
    assert_eq!(
        first.map(|(e, _)| e).as_deref(),
        Some("resync"),
        "a stream starts by saying: read again"
    );

    let create = |token: &'static str| {
        s.http
            .post(s.url("/api/sessions"))
            .bearer_auth(token)
            .json(&json!({"agent_id": "coder", "initial_prompt": "hi"}))
            .send()
    };
    let theirs: Value = create(blue).await.unwrap().json().await.unwrap();
    let theirs = theirs["id"].as_str().unwrap().to_string();
    eventually(WAIT, "blue's session to be up", || async {
        let body: Value = get(blue, format!("/api/sessions/{theirs}"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        matches!(body["status"].as_str(), Some("ready" | "busy" | "idle")).then_some(())
    })
    .await;
    let mine: Value = create(red).await.unwrap().json().await.unwrap();
    let mine = mine["id"].as_str().unwrap().to_string();
    // Red hears of its own session as it comes up (and of its prompt), never of blue's.
    let mut heard = Vec::new();
    eventually(WAIT, "red's session, ready, on red's stream", || {
        while let Ok(event) = red_changes.try_recv() {
            heard.push(event);
        }
        let done = heard.iter().any(|(e, d)| {
            e == "session"
                && d["id"] == mine
                && matches!(d["status"].as_str(), Some("ready" | "busy"))
        }) && heard
            .iter()
            .any(|(e, d)| e == "message" && d["session"] == mine);
        async move { done.then_some(()) }
    })
    .await;
    for (event, data) in &heard {
        assert!(
            !data.to_string().contains(&theirs),
            "blue's session on red's stream: {event} {data}"
        );
    }

    // The sandboxes: red's only.
    let sandboxes: Value = get(red, "/api/sandboxes".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = sandboxes["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["session"].as_str())
        .collect();
    assert_eq!(ids, [mine.as_str()], "{sandboxes}");
    // Blue's live text and log do not exist for red.
    for route in ["live", "logs"] {
        let resp = get(red, format!("/api/sessions/{theirs}/{route}"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{route}");
        // (its own team reaches it: the in-test runtime keeps no log, and says so)
        let resp = get(blue, format!("/api/sessions/{theirs}/{route}"))
            .await
            .unwrap();
        assert_ne!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "{route}: its own team reaches it"
        );
    }
    // What blue spent, and what blue's agent changed, are not red's to read.
    let usage: Value = get(red, "/api/usage".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let teams: Vec<&str> = usage["teams"]
        .as_array()
        .unwrap()
        .iter()
        .chain(usage["totals"].as_array().unwrap())
        .filter_map(|t| t["team"].as_str())
        .collect();
    assert!(teams.iter().all(|t| *t == "red"), "{usage}");
    for route in [
        "diff",
        "permissions",
        "questions",
        "diagnosis",
        "forks",
        "events",
    ] {
        let resp = get(red, format!("/api/sessions/{theirs}/{route}"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{route}");
    }
    // Nor to act on: as if it did not exist.
    for action in ["suspend", "restart", "end"] {
        let resp = s
            .http
            .post(s.url(&format!("/api/sessions/{theirs}/{action}")))
            .bearer_auth(red)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{action}");
    }
    // The top bar's status.
    let status: Value = get(red, "/api/status".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["store"]["ok"], true, "{status}");
    assert_eq!(status["runtime_kind"], "in-test", "{status}");
    s.stop().await;
}

/// A read-only token reads everything its team may read and acts on nothing, whatever the
/// route (the refusal says why); a named token is who acts in the sessions' history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_and_never_acts() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(
        &db,
        r#"
[[api.tokens]]
token = "red-team-token-0123456789"
team = "red"
name = "alice"
[[api.tokens]]
token = "red-watch-token-0123456789"
team = "red"
read_only = true
"#,
    )
    .await;
    let (alice, watcher) = ("red-team-token-0123456789", "red-watch-token-0123456789");
    let me: Value = s
        .http
        .get(s.url("/api/whoami"))
        .bearer_auth(alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            me["team"].as_str(),
            me["acts_as"].as_str(),
            me["read_only"].as_bool()
        ),
        (Some("red"), Some("api:alice"), Some(false)),
        "{me}"
    );
    let made: Value = s
        .http
        .post(s.url("/api/sessions"))
        .bearer_auth(alice)
        .json(&json!({"agent_id": "coder"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    let me: Value = s
        .http
        .get(s.url("/api/whoami"))
        .bearer_auth(watcher)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["read_only"], true, "{me}");
    let resp = s
        .http
        .get(s.url(&format!("/api/sessions/{id}")))
        .bearer_auth(watcher)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "it reads");
    for (method, path, body) in [
        (
            "POST",
            "/api/sessions".to_string(),
            json!({"agent_id": "coder"}),
        ),
        (
            "POST",
            format!("/api/sessions/{id}/messages"),
            json!({"text": "hi"}),
        ),
        ("POST", format!("/api/sessions/{id}/restart"), json!({})),
        (
            "POST",
            format!("/api/sessions/{id}/fork"),
            json!({"message_seq": 1}),
        ),
        (
            "POST",
            format!("/api/sessions/{id}/permissions/per_1"),
            json!({"reply": "once"}),
        ),
        ("DELETE", format!("/api/sessions/{id}"), json!({})),
    ] {
        let resp = s
            .http
            .request(method.parse().unwrap(), s.url(&path))
            .bearer_auth(watcher)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let said: Value = resp.json().await.unwrap();
        assert_eq!(said["error"], "read_only", "{said}");
    }
    // The shell is a GET that upgrades to a WebSocket: refused all the same.
    let shell = |token: &'static str, upgrade: bool| {
        let request = s
            .http
            .get(s.url(&format!("/api/sessions/{id}/shell?tty=false")))
            .bearer_auth(token);
        let request = if upgrade {
            request
                .header("Connection", "upgrade")
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        } else {
            request
        };
        request.send()
    };
    let resp = shell(watcher, true).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let said: Value = resp.json().await.unwrap();
    assert_eq!(said["error"], "read_only", "{said}");
    // Without the upgrade, the route says what it is.
    let resp = shell(alice, false).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    let said: Value = resp.json().await.unwrap();
    assert!(
        said["message"].as_str().unwrap().contains("WebSocket"),
        "{said}"
    );
    let session: Value = s
        .http
        .get(s.url(&format!("/api/sessions/{id}")))
        .bearer_auth(alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["id"], id.as_str(), "{session}");
    assert_ne!(session["status"], "dead", "nothing was done: {session}");
    let (_, list) = {
        let resp = s
            .http
            .get(s.url("/api/sessions"))
            .bearer_auth(alice)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(
        list["sessions"].as_array().map(Vec::len),
        Some(1),
        "no session made: {list}"
    );
    s.stop().await;
}

/// A remote cockpit's deck reads the sessions once at its start: the change stream's opening
/// "read everything again" is not passed on when every list was read with the stream open
/// (it used to make a start read 10k sessions twice, now and then). The lists come as typed
/// pages, and a team's deck lists its own sessions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_deck_reads_the_list_once_at_its_start() {
    use agentdeck::deck::Deck;
    use agentdeck::store::Change;
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, TEAM_TOKENS).await;
    let create = |token: &'static str| {
        s.http
            .post(s.url("/api/sessions"))
            .bearer_auth(token)
            .json(&json!({"agent_id": "coder"}))
            .send()
    };
    let blue: Value = create("blue-team-token-0123456789")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let before: Value = create("red-team-token-0123456789")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = common::config_with("", db.url(), root.path());
    let deck = agentdeck::deck::Remote::connect(
        s.base.trim_end_matches('/'),
        Some("red-team-token-0123456789".into()),
        None,
        std::sync::Arc::new(config),
    )
    .await
    .unwrap();
    let mut feed = deck.changes();
    let listed = deck
        .list(&agentdeck::model::SessionQuery {
            limit: Some(5000),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<String> = listed.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, [before["id"].as_str().unwrap()], "red's only: {blue}");

    // A session made now is the first change heard: no "read again" came before it.
    let after: Value = create("red-team-token-0123456789")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after = after["id"].as_str().unwrap().to_string();
    let heard = tokio::time::timeout(WAIT, async {
        loop {
            match feed.next().await {
                Some(Change::Session(id)) if id.to_string() == after => return Ok(()),
                Some(Change::Resync) => return Err("read everything again"),
                None => return Err("the feed ended"),
                Some(_) => continue,
            }
        }
    })
    .await
    .expect("the new session heard of");
    assert_eq!(heard, Ok(()));
    s.stop().await;
}

/// A session waiting for its sandbox to start holds no worker slot: more sessions than the
/// worker's 4 slots, created at once while no sandbox can start, all have their sandboxes asked
/// for; once they start, all are ready. (Four at a time, a burst of 200 took 94 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_waiting_for_their_sandboxes_hold_no_worker_slot() {
    let db = TestDb::postgres().await;
    let s = ApiServer::start(&db, "").await;
    s.runtime
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, created) = post_json(&s, "/api/sessions", json!({"agent_id": "coder"})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    eventually(
        WAIT,
        "every sandbox to be asked for while none starts",
        || async {
            let provisions = *s.runtime.provisions.lock().unwrap();
            (provisions == 6).then_some(())
        },
    )
    .await;
    for id in &ids {
        let (_, body) = get_json(&s, &format!("/api/sessions/{id}")).await;
        assert_eq!(body["status"], "creating", "{body}");
    }
    s.runtime.start_all();
    for id in &ids {
        eventually(
            WAIT,
            "the session to be ready once its sandbox started",
            || async {
                let (_, body) = get_json(&s, &format!("/api/sessions/{id}")).await;
                (body["status"] == "ready").then_some(())
            },
        )
        .await;
    }
}
