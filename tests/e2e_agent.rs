//! End to end with the real programs: `agentdeck serve` on real Postgres with the local
//! runtime, a real opencode per session, a real LiteLLM gateway with a scripted model (from
//! scripts/offline-stack.sh). A prompt gets an answer; a tool call is stored with its output;
//! the harness is killed and the session recovers its conversation; the next message works.

mod common;

use common::agent_api::{Api, Serve, TURN, start_serve, start_serve_with, texts};
use common::{TestDb, agentdeck, eventually, free_port};
use serde_json::{Value, json};

use std::process::{Child, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_talks_uses_a_tool_and_survives_its_harness_dying() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _serve = start_serve(root.path(), db.url(), &stack, port);
    let api = Api::answering(port).await;

    // 1. A prompt at creation gets an answer.
    let (status, created) = api
        .post(
            "/api/sessions",
            json!({"agent_id": "coder", "initial_prompt": "say hi"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    api.reply_containing(&id, "Scripted reply to: say hi").await;
    let session = api.get(&format!("/api/sessions/{id}")).await;
    assert!(
        session["harness_session_id"]
            .as_str()
            .unwrap_or("")
            .starts_with("ses_"),
        "{session}"
    );
    // The harness answers agentdeck only: without the session's password it refuses.
    let record: Value = serde_json::from_slice(
        &std::fs::read(
            root.path()
                .join(format!("data/agentdeck/sandboxes/{id}/sandbox.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let harness = format!("http://127.0.0.1:{}/session", record["port"]);
    let anonymous = api.http.get(&harness).send().await.unwrap();
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "the harness needs a password"
    );
    let guessed = api
        .http
        .get(&harness)
        .basic_auth("opencode", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(guessed.status().as_u16(), 401);
    let events: Vec<Value> = agentdeck::store::open(db.url())
        .await
        .unwrap()
        .list_events(id.parse().unwrap(), 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| json!({"kind": e.kind, "payload": e.payload}))
        .collect();
    for phase in [
        "creating_sandbox",
        "sandbox_pending",
        "harness_starting",
        "harness_ready",
        "ready",
    ] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "session.phase" && e["payload"]["phase"] == phase),
            "no {phase} in the phase history"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "harness.message.part.delta"),
        "raw harness events are logged"
    );

    // 2. A tool call: the tool part is stored with its input and output.
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "run: echo agentdeck-e2e"}),
        )
        .await;
    assert_eq!(status, 202);
    let messages = api
        .reply_containing(&id, "Ran it. Output: agentdeck-e2e")
        .await;
    let tool = messages
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .find(|p| p["type"] == "tool")
        .expect("a tool part");
    assert_eq!(tool["tool"], "bash");
    assert_eq!(tool["status"], "completed");
    assert_eq!(tool["input"]["command"], "echo agentdeck-e2e");
    assert!(
        tool["output"]
            .as_str()
            .unwrap_or("")
            .contains("agentdeck-e2e"),
        "{tool}"
    );
    eventually(TURN, "the session to be idle after the turn", || async {
        let s = api.get(&format!("/api/sessions/{id}")).await;
        (s["status"] == "idle" && s["idle_deadline"].is_string()).then_some(())
    })
    .await;

    // 2a. Output Postgres's text and jsonb refuse (a NUL byte, as `cat` of a binary file gives)
    // is stored as it came, the turn ends and the session is idle: it once stalled busy.
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "run: printf 'bin\\000ary\\n'"}),
        )
        .await;
    assert_eq!(status, 202);
    let messages = api.reply_containing(&id, "Ran it. Output: bin").await;
    let outputs: Vec<String> = messages
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .filter(|p| {
            p["type"] == "tool"
                && p["input"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("printf"))
        })
        .map(|p| p["output"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        outputs.iter().any(|o| o.contains("bin\0ary")),
        "the NUL is kept: {outputs:?}"
    );
    eventually(
        TURN,
        "the session to be idle after the NUL turn",
        || async {
            let s = api.get(&format!("/api/sessions/{id}")).await;
            (s["status"] == "idle").then_some(())
        },
    )
    .await;

    // 2b. A long tool call, aborted: the turn stops at once (the message says "aborted", not
    // "failed"), the session is idle again, and the next turn works.
    let marker = format!("abort-{}", &id[..8]);
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": format!("run: sleep 300; echo {marker}")}),
        )
        .await;
    assert_eq!(status, 202);
    eventually(TURN, "the long tool call to be running", || async {
        let running = api.messages(&id).await.iter().any(|m| {
            m["parts"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["type"] == "tool"
                        && p["status"] == "running"
                        && p["input"]["command"]
                            .as_str()
                            .unwrap_or("")
                            .contains(&marker)
                })
            })
        });
        running.then_some(())
    })
    .await;
    let (status, body) = api
        .post(&format!("/api/sessions/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, messages) = eventually(
        Duration::from_secs(30),
        "the aborted turn to stop",
        || async {
            let s = api.get(&format!("/api/sessions/{id}")).await;
            let messages = api.messages(&id).await;
            let tool_done = messages
                .iter()
                .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
                .any(|p| {
                    p["type"] == "tool"
                        && p["input"]["command"]
                            .as_str()
                            .unwrap_or("")
                            .contains(&marker)
                        && p["status"] != "running"
                });
            // The session goes idle when opencode accepts the abort; the message's own update
            // (its error) follows on the event stream a moment later.
            let settled = messages.last().is_some_and(|m| m["status"] != "pending");
            (s["status"] == "idle" && tool_done && settled).then_some((s, messages))
        },
    )
    .await;
    let last = messages.last().unwrap();
    assert_eq!(
        (last["role"].as_str(), last["status"].as_str()),
        (Some("assistant"), Some("aborted")),
        "{last}"
    );
    // The killed command is not "done" (opencode ends it "completed", with a note).
    let killed = tool_call(&messages, &marker);
    assert_eq!(killed["status"], "stopped", "{killed}");
    assert!(
        killed["error"]
            .as_str()
            .is_some_and(|e| e.contains("aborted")),
        "{killed}"
    );
    assert!(
        last["error"].as_str().unwrap_or("").contains("Aborted"),
        "{last}"
    );
    // The tool's process went with the turn.
    eventually(
        Duration::from_secs(10),
        "the aborted command to be gone",
        || async {
            let alive = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
                std::fs::read(p.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("echo {marker}")))
            });
            (!alive).then_some(())
        },
    )
    .await;
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "run: echo after-abort"}),
        )
        .await;
    assert_eq!(status, 202);
    api.reply_containing(&id, "Ran it. Output: after-abort")
        .await;

    // 3. The harness dies in the middle of a tool call and loses what it knew (as a pod with
    // an emptyDir would).
    let dying = format!("dying-{}", &id[..8]);
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": format!("run: sleep 300; echo {dying}")}),
        )
        .await;
    assert_eq!(status, 202);
    eventually(TURN, "the dying tool call to be running", || async {
        let messages = api.messages(&id).await;
        (tool_call(&messages, &dying)["status"] == "running").then_some(())
    })
    .await;
    let workdir = root.path().join(format!("data/agentdeck/sandboxes/{id}"));
    let record: Value =
        serde_json::from_slice(&std::fs::read(workdir.join("sandbox.json")).unwrap()).unwrap();
    let pid = record["pid"].as_i64().unwrap() as i32;
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(workdir.join("home/.local/share/opencode"));
    eventually(TURN, "the session to recover", || async {
        let events = api.get(&format!("/api/sessions/{id}")).await;
        let msgs = api.messages(&id).await;
        let recovered = msgs.iter().any(|m| {
            m["role"] == "system"
                && m["parts"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Recovered")
        });
        (recovered && matches!(events["status"].as_str(), Some("ready" | "idle"))).then_some(())
    })
    .await;

    // The turn the harness died in failed, and its tool call with it: it does not show as
    // running for good.
    let messages = api.messages(&id).await;
    let stopped = tool_call(&messages, &dying);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(
        stopped["error"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted")),
        "{stopped}"
    );

    // 4. The next message works as if nothing happened.
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "are you still there?"}),
        )
        .await;
    assert_eq!(status, 202);
    let messages = api
        // The scripted model may answer from the replayed history (it saw a `run:` there), so
        // any complete reply after this message is the agent answering it.
        .reply_containing(&id, " ")
        .await;
    let turns: Vec<(String, String)> = texts(&messages)
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let all_users: Vec<(String, String)> = texts(&messages)
        .into_iter()
        .filter(|(r, _)| r == "user")
        .collect();
    assert_eq!(
        all_users.len(),
        7,
        "no other user message (the history replay stays out): {all_users:?}"
    );
    let users: Vec<&str> = turns
        .iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        users,
        vec![
            "say hi",
            "run: echo agentdeck-e2e",
            "run: printf 'bin\\000ary\\n'",
            &format!("run: sleep 300; echo {marker}"),
            "run: echo after-abort",
            &format!("run: sleep 300; echo {dying}"),
            "are you still there?"
        ],
        "{turns:?}"
    );
    common::agent_api::assert_in_order(&messages);
    let last_system = turns.iter().position(|(r, _)| r == "system").unwrap();
    let third = turns
        .iter()
        .position(|(_, t)| t == "are you still there?")
        .unwrap();
    assert!(
        last_system < third,
        "the recovery note comes before the third turn"
    );

    // Ending the session stops its harness.
    let resp = api
        .http
        .delete(format!("{}/api/sessions/{id}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    eventually(
        Duration::from_secs(30),
        "the sandbox to be removed",
        || async { (!workdir.exists()).then_some(()) },
    )
    .await;
}

/// The README's promise: with no configuration at all (the embedded SQLite store, the local
/// runtime, the built-in `opencode` agent on the gateway's mock model), a session created with
/// an initial prompt has the agent's answer within a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_answers_a_first_prompt() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
    let _serve = Serve(
        agentdeck(root.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("AGENTDECK_GATEWAY_URL", &stack.gateway_url)
            .env("PATH", &stack.path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = Api::answering(port).await;
    let (status, created) = api
        .post(
            "/api/sessions",
            json!({"agent_id": "opencode", "initial_prompt": "hello"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let messages = api.reply_containing(&id, "Hello from mock").await;
    assert_eq!(
        texts(&messages)[0],
        ("user".to_string(), "hello".to_string())
    );
    assert!(root.path().join("data/agentdeck/agentdeck.db").exists());
    let resp = api
        .http
        .delete(format!("{}/api/sessions/{id}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    eventually(Duration::from_secs(30), "the session to end", || async {
        (api.get(&format!("/api/sessions/{id}")).await["status"] == "dead").then_some(())
    })
    .await;
}

/// The session's messages once its last one is a complete answer containing `want`.
/// The tool call whose command holds `marker`, in any message (`null` when there is none).
fn tool_call(messages: &[Value], marker: &str) -> Value {
    messages
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .find(|p| {
            p["type"] == "tool"
                && p["input"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(marker))
        })
        .unwrap_or(Value::Null)
}

async fn answer_containing(
    core: &agentdeck::core::Core,
    session: uuid::Uuid,
    want: &str,
) -> Vec<agentdeck::model::Message> {
    eventually(TURN, want, || async {
        let messages = core.messages(session, 0, 1000).await.ok()?;
        let last = messages.last()?;
        (last.role == agentdeck::model::MessageRole::Assistant
            && last.status == agentdeck::model::MessageStatus::Complete
            && last.text().contains(want))
        .then_some(messages)
    })
    .await
}

/// The same flow on the Kubernetes runtime, against the FAKE API server (no real cluster can
/// run here): the simulated pod (pod IP 127.0.0.1 and the harness port) is a real opencode this
/// test starts with the configuration the harness would put in the sandbox, and agentdeck
/// reaches it as from an operator's laptop, through port-forwards over the API server (every
/// call, and the long-lived event stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_kubernetes_talks_to_a_real_opencode() {
    use agentdeck::config::{EndpointMode, KubernetesConfig, SandboxApiVersion};
    use agentdeck::core::{Core, CreateSession};
    use agentdeck::harness::{GatewayAccess, Harness, opencode::Opencode};
    use agentdeck::runtime::kubernetes::KubernetesRuntime;
    use common::fake_kube::{FakeKube, FakeOptions};
    use std::sync::Arc;

    let Some(stack) = common::stack::stack() else {
        return;
    };
    let harness = Opencode::new().unwrap();
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let mut config = common::config_with(
        "[agents.coder]\nmodel = \"litellm/scripted\"\nimage = \"ghcr.io/example/opencode:1\"\n\
         command = [\"opencode\", \"serve\", \"--hostname\", \"{host}\", \"--port\", \"{port}\"]\n\
         [sessions]\nphase_timeout = \"90s\"\n",
        db.url(),
        root.path(),
    );
    config.gateway.url = Some(stack.gateway_url.clone());
    config.gateway.sandbox_url = Some(stack.gateway_url.clone());

    // The "pod": a real opencode with the files the harness generates for this agent.
    let port = free_port();
    let pod_dir = root.path().join("pod");
    let files = harness.sandbox_files(
        &config.agents["coder"],
        &GatewayAccess {
            base_url: stack.gateway_url.clone(),
            key_env: "AGENTDECK_GATEWAY_KEY".into(),
            price: None,
        },
    );
    for (path, content) in &files {
        let target = pod_dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, content).unwrap();
    }

    let fake = FakeKube::start(FakeOptions::default()).await;
    let kconfig = KubernetesConfig {
        context: None,
        namespace: "agents".into(),
        team_namespaces: Default::default(),
        api_version: SandboxApiVersion::Auto,
        endpoint: EndpointMode::PortForward,
        harness_port: port,
        service_account: None,
        bootstrap: agentdeck::config::BootstrapBinary::Image(
            agentdeck::config::AGENTDECK_IMAGE.into(),
        ),
    };
    config.kubernetes = kconfig.clone();
    let runtime = KubernetesRuntime::with_client(
        kube::Config::new(fake.url.parse().unwrap()),
        kconfig,
        false,
    )
    .unwrap();
    let core = Core::with_store(
        config,
        db.open().await,
        Arc::new(runtime),
        Arc::new(harness),
    );
    let worker = agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);

    let session = core
        .create_session(CreateSession {
            agent_id: Some("coder".into()),
            initial_prompt: Some("say hi".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    // The "kubelet": once the Sandbox and its Secret exist, run the pod's container as a real
    // opencode, its env resolved as a kubelet would: every `secretKeyRef` from the Secret (the
    // gateway key and the harness password among them); paths are this test's own.
    let name = format!("ad-{}", session.id);
    let (sandbox, secret) = eventually(
        Duration::from_secs(30),
        "the Sandbox and its Secret",
        || {
            let fake = &fake;
            let name = &name;
            async move {
                Some((
                    fake.get("sandboxes", "agents", name)?,
                    fake.get("secrets", "agents", &format!("{name}-env"))?,
                ))
            }
        },
    )
    .await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
    let data = secret.data.unwrap_or_default();
    let mut from_secret = Vec::new();
    for var in sandbox["spec"]["podTemplate"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
    {
        if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            let value = String::from_utf8(data[key].0.clone()).unwrap();
            from_secret.push((var["name"].as_str().unwrap().to_string(), value));
        }
    }
    assert!(
        from_secret
            .iter()
            .any(|(k, v)| k == "OPENCODE_SERVER_PASSWORD" && v.len() == 64),
        "the harness password comes from the Secret"
    );
    let home = pod_dir.join("home");
    let mut opencode = std::process::Command::new("opencode")
        .args([
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .current_dir(&pod_dir)
        .env_clear()
        .env("PATH", &stack.path)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .envs(from_secret)
        .envs(agentdeck::runtime::OPENCODE_SWITCHES.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop<'a>(&'a mut Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _opencode = KillOnDrop(&mut opencode);
    let reply = |want: &'static str| answer_containing(&core, session.id, want);
    reply("Scripted reply to: say hi").await;
    assert!(
        fake.requests().iter().any(|r| r.contains("/portforward")),
        "the harness was reached through the API server's port-forward"
    );
    // Without the password, the "pod" refuses.
    let anonymous = reqwest::get(format!("http://127.0.0.1:{port}/session"))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let sandbox = fake.get("sandboxes", "agents", &name).expect("a Sandbox");
    assert!(
        sandbox.to_string().contains("opencode.json"),
        "the harness config is mounted"
    );
    let secret = fake
        .get("secrets", "agents", &format!("{name}-env"))
        .expect("its Secret");
    assert!(
        secret["data"].get("env.AGENTDECK_GATEWAY_KEY").is_some(),
        "the gateway key is in the Secret"
    );

    let mut deltas = core.watch_deltas(session.id);
    core.send_message(session.id, "run: echo k8s-ok")
        .await
        .unwrap();
    let messages = reply("Ran it. Output: k8s-ok").await;
    // The text streamed live, delta by delta, as well as being stored.
    let mut streamed = String::new();
    while let Ok(agentdeck::core::live::Live::Delta(d)) =
        tokio::time::timeout(Duration::from_millis(200), deltas.next()).await
    {
        assert_eq!(d.session, session.id);
        streamed.push_str(&d.text);
    }
    assert!(
        streamed.contains("Ran it. Output: k8s-ok"),
        "streamed: {streamed:?}"
    );
    assert!(messages.iter().flat_map(|m| m.parts.iter()).any(|p| matches!(p,
        agentdeck::model::Part::Tool { tool, output: Some(o), .. } if tool == "bash" && o.contains("k8s-ok"))));

    core.end(session.id).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the Sandbox to be deleted",
        || async {
            fake.get("sandboxes", "agents", &name)
                .is_none()
                .then_some(())
        },
    )
    .await;
    worker.stop(Duration::from_secs(5)).await;
}

/// The same on the REAL control plane of scripts/test-cluster.sh (kube-apiserver, etcd, the
/// garbage collector and the agent-sandbox controller): agentdeck writes the Sandbox and its
/// Secret, the real controller makes the pod, the tests' kubelet runs its container (a real
/// opencode, its env resolved from the real Secret, its files from the secret volume), and
/// agentdeck reaches it as from a laptop, through port-forwards over the real API server and
/// the kubelet. Restarting the sandbox makes a new pod with an empty workspace: the session
/// recovers its conversation there. Ending it removes the Sandbox, its Secret and its pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_the_real_control_plane_talks_to_a_real_opencode() {
    use agentdeck::config::{EndpointMode, KubernetesConfig, SandboxApiVersion};
    use agentdeck::core::{Core, CreateSession};
    use agentdeck::harness::opencode::Opencode;
    use agentdeck::runtime::kubernetes::KubernetesRuntime;
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use std::sync::Arc;

    let Some(stack) = common::stack::stack() else {
        return;
    };
    let Some(cluster) = common::cluster::cluster().await else {
        return;
    };
    let namespace = format!("e2e-{}", common::cluster::suffix());
    let namespaces = cluster.namespaces(std::slice::from_ref(&namespace)).await;
    // The "image": the offline stack's opencode, by absolute path as an image's entrypoint is.
    let opencode = format!("{}/opencode", stack.path.split(':').next().unwrap());
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let harness_port = free_port();
    // One configuration for the core here and a command-line process below: `echo ask-*`
    // waits for a person (opencode's patterns: the last match wins).
    let text = format!(
        "[agents.coder]\nmodel = \"litellm/scripted\"\nimage = \"ghcr.io/example/opencode:1\"\n\
         command = [\"{opencode}\", \"serve\", \"--hostname\", \"{{host}}\", \"--port\", \"{{port}}\"]\n\
         [agents.coder.permission]\nbash = {{ \"*\" = \"allow\", \"echo ask-*\" = \"ask\" }}\n\
         [sessions]\nphase_timeout = \"90s\"\n\
         [kubernetes]\nnamespace = \"{namespace}\"\nendpoint = \"port-forward\"\nharness_port = {harness_port}\n"
    );
    let config_file = root.path().join("agentdeck.toml");
    std::fs::write(&config_file, &text).unwrap();
    let mut config = common::config_with(&text, db.url(), root.path());
    config.gateway.url = Some(stack.gateway_url.clone());
    config.gateway.sandbox_url = Some(stack.gateway_url.clone());
    let kconfig = KubernetesConfig {
        context: None,
        namespace: namespace.clone(),
        team_namespaces: Default::default(),
        api_version: SandboxApiVersion::Auto,
        endpoint: EndpointMode::PortForward,
        harness_port,
        service_account: None,
        bootstrap: agentdeck::config::BootstrapBinary::Image(
            agentdeck::config::AGENTDECK_IMAGE.into(),
        ),
    };
    assert_eq!(
        config.kubernetes, kconfig,
        "the file says what the test runs"
    );
    let runtime = KubernetesRuntime::with_client(cluster.config.clone(), kconfig, false).unwrap();
    let core = Core::with_store(
        config,
        db.open().await,
        Arc::new(runtime),
        Arc::new(Opencode::new().unwrap()),
    );
    let worker = agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);

    let session = core
        .create_session(CreateSession {
            agent_id: Some("coder".into()),
            initial_prompt: Some("say hi".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reply = |want: &'static str| answer_containing(&core, session.id, want);
    reply("Scripted reply to: say hi").await;

    let name = format!("ad-{}", session.id);
    let pods: kube::Api<Pod> = kube::Api::namespaced(cluster.client.clone(), &namespace);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(cluster.client.clone(), &namespace);
    let pod = pods.get(&name).await.unwrap();
    assert!(
        pod.spec.as_ref().unwrap().node_name.is_some(),
        "bound to the test kubelet's node"
    );
    let status = pod.status.unwrap();
    assert!(
        status
            .pod_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("127."))
    );
    // The harness wants the session's password, which came to the process from the Secret.
    let ip = status.pod_ip.unwrap();
    let anonymous = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "http://{ip}:{}/session",
            core.config().kubernetes.harness_port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    core.send_message(session.id, "run: echo k8s-ok")
        .await
        .unwrap();
    let messages = reply("Ran it. Output: k8s-ok").await;
    assert!(messages.iter().flat_map(|m| m.parts.iter()).any(|p| matches!(p,
        agentdeck::model::Part::Tool { tool, output: Some(o), .. } if tool == "bash" && o.contains("k8s-ok"))));

    // A permission answered from the command line: a short-lived process of its own, with
    // the kubeconfig, reaching the harness through a port-forward of its own.
    core.send_message(session.id, "run: echo ask-k8s")
        .await
        .unwrap();
    let ask = eventually(TURN, "the permission request", || async {
        core.asks(session.id, None, true)
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await;
    let (kubeconfig, db_url, gateway, id, ask_id) = (
        cluster.kubeconfig.clone(),
        db.url().to_string(),
        stack.gateway_url.clone(),
        session.id.to_string(),
        ask.id.clone(),
    );
    let cli_root = root.path().to_path_buf();
    let config_path = config_file.clone();
    let out = tokio::task::spawn_blocking(move || {
        agentdeck(&cli_root)
            .args([
                "--runtime",
                "kubernetes",
                "sessions",
                "answer",
                &id,
                &ask_id,
            ])
            .args(["--reply", "once"])
            .env("AGENTDECK_CONFIG", &config_path)
            .env("AGENTDECK_DATABASE_URL", &db_url)
            .env("AGENTDECK_GATEWAY_URL", &gateway)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "sessions answer on Kubernetes: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    reply("Ran it. Output: ask-k8s").await;
    let answered = core.asks(session.id, None, false).await.unwrap();
    assert!(
        answered.iter().any(|a| a.id == ask.id
            && a.answered_by
                .as_deref()
                .is_some_and(|b| b.starts_with("cli"))),
        "{answered:?}"
    );

    // A shell through `serve` (this core, serving its API): `agentdeck --server URL sessions
    // shell` holds no kubeconfig; serve opens the exec in the pod, the script runs there, and
    // the history names the token's holder.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(agentdeck::api::serve(
        core.clone(),
        listener,
        None,
        std::future::pending(),
    ));
    let remote_shell = |terminal: bool, script: &'static [u8]| {
        let (cli_root, id, url) = (
            root.path().join("remote"),
            session.id.to_string(),
            url.clone(),
        );
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut client = agentdeck(&cli_root);
            client
                .args(["--server", &url, "sessions", "shell", &id])
                .env_remove("KUBECONFIG");
            let mut client = match terminal {
                true => common::on_a_terminal(&client),
                false => client,
            };
            let mut child = client
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(script).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), said(&out.stdout), said(&out.stderr))
        })
    };
    let (code, stdout, stderr) = remote_shell(
        false,
        b"echo \"pod=$HOSTNAME id=$AGENTDECK_SESSION_ID\"\nexit 3\n",
    )
    .await
    .unwrap();
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        format!("pod={name} id={}\n", session.id),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("a shell in pod {namespace}/{name}")),
        "{stderr}"
    );
    // With a terminal (the client's own a pseudo-terminal): the pod's shell gets one too.
    let (code, stdout, stderr) = remote_shell(
        true,
        b"test -t 0 && echo \"on a $(tty | cut -c1-8) as $TERM\"; exit 4\n",
    )
    .await
    .unwrap();
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    assert!(stdout.contains("on a /dev/pts as "), "{stdout}\n{stderr}");
    serving.abort();
    let opened: Vec<_> = core
        .events(session.id, 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "sandbox.shell")
        .map(|e| e.payload)
        .collect();
    assert!(
        opened.iter().any(|e| e["by"] == "api" && e["tty"] == false)
            && opened.iter().any(|e| e["by"] == "api" && e["tty"] == true),
        "auth is off here: the API itself opened both: {opened:?}"
    );

    // Restart: a new pod, an empty workspace; the conversation is replayed into it.
    let uid = pods.get(&name).await.unwrap().metadata.uid;
    core.restart(session.id).await.unwrap();
    eventually(TURN, "a new pod", || async {
        pods.get_opt(&name)
            .await
            .ok()
            .flatten()
            .filter(|p| p.metadata.uid != uid)
            .map(|_| ())
    })
    .await;
    eventually(TURN, "the session to be up again", || async {
        use agentdeck::model::SessionStatus;
        let s = core.get_session(session.id).await.ok()?;
        matches!(s.status, SessionStatus::Ready | SessionStatus::Idle).then_some(())
    })
    .await;
    let asked = core
        .send_message(session.id, "after the restart")
        .await
        .unwrap();
    // (The scripted model may answer from the replayed history: any complete answer will do.)
    let messages = eventually(TURN, "an answer after the restart", || async {
        let messages = core.messages(session.id, 0, 1000).await.ok()?;
        messages
            .iter()
            .any(|m| {
                m.seq > asked.seq
                    && m.role == agentdeck::model::MessageRole::Assistant
                    && m.status == agentdeck::model::MessageStatus::Complete
            })
            .then_some(messages)
    })
    .await;
    assert!(
        messages
            .iter()
            .any(|m| m.role == agentdeck::model::MessageRole::System
                && m.text().starts_with("Recovered")),
        "the conversation was recovered into the new pod"
    );

    core.end(session.id).await.unwrap();
    eventually(
        TURN,
        "the Sandbox, its Secret and its pod to go",
        || async {
            let gone = pods.get_opt(&name).await.ok()?.is_none()
                && secrets
                    .get_opt(&format!("{name}-env"))
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
    worker.stop(Duration::from_secs(5)).await;
    drop(namespaces);
}

/// The human in the loop, with the real opencode: an agent whose `bash` needs permission (but
/// for the commands its patterns allow) waits for a person; the request is listed (the session counts it); a rejection with a reason
/// reaches the agent; a second answer is refused naming the first; the next call, allowed once,
/// runs; the agent's question is answered with a label. Bad answers are 4xx and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_and_a_person_answers() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _serve = start_serve_with(
        root.path(),
        db.url(),
        &stack,
        port,
        // opencode's pattern form: every command asks but `echo free-…` (the last match wins)
        "[agents.coder.permission]\nbash = { \"*\" = \"ask\", \"echo free-*\" = \"allow\" }\n",
    );
    let api = Api::answering(port).await;
    let (status, created) = api
        .post(
            "/api/sessions",
            json!({"agent_id": "coder", "initial_prompt": "run: echo perm-one"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let pending = |kind: &'static str| {
        let api = &api;
        let id = id.clone();
        async move {
            api.get(&format!("/api/sessions/{id}/{kind}?status=pending"))
                .await[kind]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };

    // 1. The call waits for a person; the request says what it wants to run.
    let asked = eventually(TURN, "the permission request", || async {
        pending("permissions").await.into_iter().next()
    })
    .await;
    assert_eq!(asked["title"], "bash", "{asked}");
    assert_eq!(asked["status"], "pending");
    assert!(
        asked["detail"]["metadata"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("echo perm-one")),
        "{asked}"
    );
    let session = api.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(session["waiting"], 1, "{session}");
    let pid = asked["id"].as_str().unwrap().to_string();

    // Bad answers: refused, and nothing changes.
    let (status, body) = api
        .post(
            &format!("/api/sessions/{id}/permissions/{pid}"),
            json!({"reply": "maybe"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .post(
            &format!("/api/sessions/{id}/permissions/per_nope"),
            json!({"reply": "once"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .post(
            &format!("/api/sessions/{id}/questions/{pid}"),
            json!({"answers": [["yes"]]}),
        )
        .await;
    assert_eq!(status, 400, "a permission is not a question: {body}");
    assert_eq!(pending("permissions").await.len(), 1);

    // 2. Rejected with a reason: the agent hears it; a second answer is refused.
    let (status, answered) = api
        .post(
            &format!("/api/sessions/{id}/permissions/{pid}"),
            json!({"reply": "reject", "message": "not on prod"}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["status"], "answered");
    assert_eq!(answered["answered_by"], "api");
    let (status, body) = api
        .post(
            &format!("/api/sessions/{id}/permissions/{pid}"),
            json!({"reply": "once"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let said = body["message"].as_str().unwrap_or("");
    assert!(
        said.contains("already answered") && said.contains("reject"),
        "{body}"
    );
    let messages = api.reply_containing(&id, "not on prod").await;
    let rejected = messages
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .find(|p| p["type"] == "tool" && p["input"]["command"] == "echo perm-one")
        .expect("the rejected tool call is in the transcript");
    assert_eq!(rejected["status"], "error", "{rejected}");
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.contains("not on prod")),
        "{rejected}"
    );

    // 3. The next call, allowed once, runs.
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "run: echo perm-two"}),
        )
        .await;
    assert_eq!(status, 202);
    let asked = eventually(TURN, "the second permission request", || async {
        pending("permissions").await.into_iter().next()
    })
    .await;
    let pid2 = asked["id"].as_str().unwrap().to_string();
    assert_ne!(pid2, pid);
    // Diagnosed from the command line while it waits: a person awaited is the finding (it
    // said "Nothing looks wrong."), and the sandbox, found running from its folder, is ready
    // (it said "starting (adopted …)").
    let cli = |args: &[&str]| {
        agentdeck(root.path())
            .args(args)
            .env("AGENTDECK_CONFIG", root.path().join("agentdeck.toml"))
            .env("AGENTDECK_DATABASE_URL", db.url())
            .env("AGENTDECK_GATEWAY_URL", &stack.gateway_url)
            .output()
            .unwrap()
    };
    let out = cli(&["sessions", "diagnose", &id]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let advice = said.split("\nSession").next().unwrap_or_default();
    assert!(
        advice.contains("waited")
            && advice.contains("bash wants to run: echo perm-two")
            && advice.contains(&pid2),
        "the waiting permission is the finding: {said}"
    );
    assert!(!said.contains("Nothing looks wrong"), "{said}");
    let sandbox = said.split("\nSandbox\n").nth(1).unwrap_or_default();
    assert!(sandbox.trim_start().starts_with("ready"), "{said}");
    // Answered from the command line: a short-lived process of its own, on the local runtime
    // (it finds the sandbox running from its folder and reaches its harness at once).
    let out = agentdeck(root.path())
        .args(["sessions", "answer", &id, &pid2, "--reply", "once"])
        .env("AGENTDECK_CONFIG", root.path().join("agentdeck.toml"))
        .env("AGENTDECK_DATABASE_URL", db.url())
        .env("AGENTDECK_GATEWAY_URL", &stack.gateway_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sessions answer: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    api.reply_containing(&id, "Ran it. Output: perm-two").await;
    let all = api.get(&format!("/api/sessions/{id}/permissions")).await["permissions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let trail: Vec<(Value, Value, Value)> = all
        .iter()
        .map(|a| {
            (
                a["answer"]["reply"].clone(),
                a["message"].clone(),
                a["answered_by"].clone(),
            )
        })
        .collect();
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(
        trail[0],
        (json!("reject"), json!("not on prod"), json!("api"))
    );
    assert_eq!((&trail[1].0, &trail[1].1), (&json!("once"), &Value::Null));
    assert!(
        trail[1].2.as_str().is_some_and(|by| by.starts_with("cli")),
        "answered from the command line: {trail:?}"
    );

    // 3b. A command the agent's patterns allow runs without asking anyone.
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "run: echo free-three"}),
        )
        .await;
    assert_eq!(status, 202);
    api.reply_containing(&id, "Ran it. Output: free-three")
        .await;
    let asked = api.get(&format!("/api/sessions/{id}/permissions")).await["permissions"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(asked, 2, "the allowed pattern asked nobody");

    // 4. A question, answered with a label.
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "ask: Which region? eu-west | us-east"}),
        )
        .await;
    assert_eq!(status, 202);
    let question = eventually(TURN, "the question", || async {
        pending("questions").await.into_iter().next()
    })
    .await;
    assert_eq!(
        question["detail"]["questions"][0]["question"], "Which region?",
        "{question}"
    );
    let qid = question["id"].as_str().unwrap().to_string();
    let (status, body) = api
        .post(
            &format!("/api/sessions/{id}/questions/{qid}"),
            json!({"answers": []}),
        )
        .await;
    assert_eq!(status, 400, "one list of labels per question: {body}");
    let (status, body) = api
        .post(
            &format!("/api/sessions/{id}/questions/{qid}"),
            json!({"answers": [["eu-west"]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    api.reply_containing(&id, "eu-west").await;
    let session = api.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(session["waiting"], 0, "{session}");

    // 5. A fork at the first message: a new session with its own opencode, the conversation
    //    up to there replayed to it, and it answers.
    let (status, fork) = api
        .post(
            &format!("/api/sessions/{id}/fork"),
            json!({"message_seq": 1}),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    let fork_id = fork["id"].as_str().unwrap().to_string();
    assert_eq!(fork["parent_id"], id.as_str());
    let (status, _) = api
        .post(
            &format!("/api/sessions/{fork_id}/messages"),
            json!({"text": "say forked"}),
        )
        .await;
    assert_eq!(status, 202);
    let messages = api
        .reply_containing(&fork_id, "Scripted reply to: say forked")
        .await;
    let texts = texts(&messages);
    assert_eq!(
        texts[0],
        ("user".to_string(), "run: echo perm-one".to_string())
    );
    assert!(
        texts
            .iter()
            .any(|(role, t)| role == "system" && t.contains("Forked from session")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|(_, t)| t.contains("perm-two")),
        "only up to the fork point: {texts:?}"
    );
}

/// Tokens and cost from the real opencode and LiteLLM: a model the gateway has a price for
/// (mock-gpt, LiteLLM's gpt-4o price from its local cost map) is priced by opencode from the
/// config agentdeck wrote, and the session's cost adds up its messages; one without a price
/// (the scripted model) says "price unknown", not $0. A budget spent stops the next turn with
/// a clear message, until an operator raises it. The figures reach REST, `/metrics` and
/// `sessions show`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_counted_and_a_spent_budget_stops_new_turns() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _serve = start_serve_with(
        root.path(),
        db.url(),
        &stack,
        port,
        "budget = 50.0\n\
         [agents.priced]\nmodel = \"litellm/mock-gpt\"\nbudget = 0.000001\n\
         command = [\"opencode\", \"serve\", \"--hostname\", \"{host}\", \"--port\", \"{port}\"]\n",
    );
    let api = Api::answering(port).await;
    let create = |agent: &'static str| {
        let api = &api;
        async move {
            let (status, created) = api
                .post(
                    "/api/sessions",
                    json!({"agent_id": agent, "initial_prompt": "hello"}),
                )
                .await;
            assert_eq!(status, 201, "{created}");
            created["id"].as_str().unwrap().to_string()
        }
    };
    let priced = create("priced").await;
    let unpriced = create("coder").await;
    api.reply_containing(&priced, "Hello from mock").await;
    let session = eventually(TURN, "the priced session's cost", || async {
        let s = api.get(&format!("/api/sessions/{priced}")).await;
        (s["usage"]["cost"].as_f64().unwrap_or_default() > 0.0).then_some(s)
    })
    .await;
    let u = &session["usage"];
    let n = |k: &str| u[k].as_f64().unwrap_or_default();
    // gpt-4o in LiteLLM's cost map: $2.50 and $10 per million tokens in and out, $1.25 cached.
    let expected =
        n("input") * 2.5e-6 + (n("output") + n("reasoning")) * 1e-5 + n("cache_read") * 1.25e-6;
    assert!(n("input") > 0.0 && n("output") > 0.0, "{session}");
    assert!(
        (n("cost") - expected).abs() <= expected * 0.01,
        "the cost is the gateway's price of the tokens: {session}, expected {expected}"
    );
    assert_eq!(u["unpriced"], 0, "{session}");
    // Each message says its own; the session's is their sum.
    let messages = api.messages(&priced).await;
    let summed: f64 = messages
        .iter()
        .filter_map(|m| m["usage"]["cost"].as_f64())
        .sum();
    assert!((summed - n("cost")).abs() < 1e-12, "{messages:?}");

    // The budget (a millionth of a dollar) is spent: no new turn, and why.
    let (status, refused) = api
        .post(
            &format!("/api/sessions/{priced}/messages"),
            json!({"text": "again"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    let said = refused.to_string();
    assert!(
        said.contains("budget") && said.contains("sessions budget"),
        "{said}"
    );
    // Raised by an operator (recorded with who did it), the next turn goes.
    let (status, raised) = api
        .post(
            &format!("/api/sessions/{priced}/budget"),
            json!({"usd": 10.0}),
        )
        .await;
    assert_eq!(status, 200, "{raised}");
    assert_eq!(raised["budget_usd"], 10.0);
    let (status, sent) = api
        .post(
            &format!("/api/sessions/{priced}/messages"),
            json!({"text": "again"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");

    // The scripted model has no price: "price unknown", never $0.
    let session = eventually(TURN, "the unpriced session's usage", || async {
        let s = api.get(&format!("/api/sessions/{unpriced}")).await;
        (s["usage"]["unpriced"].as_i64().unwrap_or_default() > 0).then_some(s)
    })
    .await;
    assert_eq!(session["usage"]["cost"], 0.0, "{session}");
    let out = agentdeck(root.path())
        .args(["sessions", "show", &unpriced])
        .env("AGENTDECK_CONFIG", root.path().join("agentdeck.toml"))
        .env("AGENTDECK_DATABASE_URL", db.url())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("cost: price unknown"), "{shown}");
    assert!(!shown.contains("$0.00"), "{shown}");

    // Summed by team and agent, on REST and /metrics.
    let usage = api.get("/api/usage").await;
    let agents: Vec<&str> = usage["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["agent_id"].as_str())
        .collect();
    assert!(
        agents.contains(&"priced") && agents.contains(&"coder"),
        "{usage}"
    );
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("agentdeck_cost_usd_total{") && l.contains("agent=\"priced\""))
        .unwrap_or_default();
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(value > 0.0, "{metrics}");
    assert!(
        metrics.contains("agentdeck_unpriced_messages_total{team=\"default\",agent=\"coder\"} "),
        "{metrics}"
    );
}

/// What the agent changed, from the real opencode: on the local runtime the sandbox's folder is
/// a git repository, so opencode says what each turn changed; agentdeck keeps it with the
/// transcript (REST, `sessions diff`), and it still reads once the session has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_agent_changed_is_kept_turn_by_turn() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _serve = start_serve_with(root.path(), db.url(), &stack, port, "");
    let api = Api::answering(port).await;
    let (status, created) = api
        .post(
            "/api/sessions",
            json!({"agent_id": "coder", "initial_prompt": "run: printf 'made by the agent\\n' > made.txt"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let turns = eventually(TURN, "the turn's diff", || async {
        let diff = api.get(&format!("/api/sessions/{id}/diff")).await;
        let turns = diff["turns"].as_array().cloned().unwrap_or_default();
        turns
            .iter()
            .any(|t| t["files"].as_array().is_some_and(|f| !f.is_empty()))
            .then_some(turns)
    })
    .await;
    let turn = &turns[0];
    assert_eq!(turn["seq"], 1, "the first message's turn: {turns:?}");
    let file = &turn["files"][0];
    assert!(
        file["file"]
            .as_str()
            .unwrap_or_default()
            .ends_with("made.txt"),
        "{file}"
    );
    assert_eq!(file["additions"], 1, "{file}");
    assert!(
        file["patch"]
            .as_str()
            .unwrap_or_default()
            .contains("+made by the agent"),
        "{file}"
    );
    // agentdeck's own files are not the agent's changes.
    let all = serde_json::to_string(&turns).unwrap();
    for own in ["sandbox.log", "launch.json", "opencode.json", "home/"] {
        assert!(!all.contains(own), "{own} in {all}");
    }
    // Ended, its sandbox gone: the changes still read, from the command line too.
    let resp = api
        .http
        .delete(format!("{}/api/sessions/{id}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    eventually(Duration::from_secs(60), "the session to end", || async {
        (api.get(&format!("/api/sessions/{id}")).await["status"] == "dead").then_some(())
    })
    .await;
    let out = agentdeck(root.path())
        .args(["sessions", "diff", &id, "--stat"])
        .env("AGENTDECK_CONFIG", root.path().join("agentdeck.toml"))
        .env("AGENTDECK_DATABASE_URL", db.url())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("# turn #1: run: printf"), "{said}");
    assert!(said.contains("made.txt | +1 -0"), "{said}");
}

/// The warm pool's sandboxes under a data dir: (folder, its record) of each.
fn pool_sandboxes(sandboxes: &std::path::Path) -> Vec<(std::path::PathBuf, Value)> {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let record: Value =
                serde_json::from_slice(&std::fs::read(e.path().join("sandbox.json")).ok()?).ok()?;
            record["pool"].is_object().then(|| (e.path(), record))
        })
        .collect()
}

/// The pool's unclaimed sandbox, once the pool says one is ready.
async fn ready_member(api: &Api, sandboxes: &std::path::Path, not: Option<&str>) -> String {
    eventually(TURN, "the warm pool to have a sandbox ready", || async {
        let pools = api.get("/api/sandboxes").await["pools"].clone();
        let ready = pools
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["agent"] == "coder" && p["ready"] == 1);
        if !ready {
            return None;
        }
        pool_sandboxes(sandboxes)
            .into_iter()
            .filter(|(_, r)| r["pool"]["claimed_by"].is_null() && r["state"] == "running")
            .map(|(dir, _)| dir.file_name().unwrap().to_string_lossy().to_string())
            .find(|name| Some(name.as_str()) != not)
    })
    .await
}

/// `[agents.coder] warm = 1` through `agentdeck serve`: a session claims a sandbox started (and
/// warmed up) before it existed, and hands it its own secrets, which reach the agent's commands
/// and no file but the sandbox's private hand-over; the pool refills; two sessions at once with
/// one sandbox ready start one warm and one cold, each saying which; a claimed sandbox restarted
/// is handed its claim again; a pool sandbox that dies before any claim is replaced, and a session
/// whose claimed sandbox dies before its claim reached it starts elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_hands_each_session_a_started_sandbox_with_its_own_secrets() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    agentdeck::net::ensure_crypto();
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let _sandboxes_go = common::KillUnder(root.path().to_path_buf());
    let port = free_port();
    let serve = start_serve_with(root.path(), db.url(), &stack, port, "warm = 1");
    let api = Api::answering(port).await;
    let sandboxes = root.path().join("data/agentdeck/sandboxes");
    let store = agentdeck::store::open(db.url()).await.unwrap();
    let launch_of = |id: String| {
        let store = store.clone();
        async move {
            store
                .list_events(id.parse().unwrap(), 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.kind == "session.launch")
                .map(|e| e.payload)
                .unwrap_or(Value::Null)
        }
    };

    // 1. The pool fills; a session claims its sandbox, with an env of its own.
    let member = ready_member(&api, &sandboxes, None).await;
    let (status, created) = api
        .post(
            "/api/sessions",
            json!({"agent_id": "coder", "initial_prompt": "run: echo X=$X",
                   "env_vars": {"X": "per-session-7f3"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    api.reply_containing(&id, "Ran it. Output: X=per-session-7f3")
        .await;
    let session = api.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(session["sandbox_ref"], member.as_str(), "{session}");
    let launch = launch_of(id.clone()).await;
    assert_eq!(launch["launch"], "warm", "{launch}");
    assert_eq!(launch["sandbox"], member.as_str(), "{launch}");
    let rows = api.get("/api/sandboxes").await;
    let row = rows["sandboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["session"] == id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["health"]["launch"], "warm", "{row}");
    // The session's secrets are in no file of the sandbox but its private hand-over folder.
    let dir = sandboxes.join(&member);
    for file in [
        "launch.json",
        "sandbox.json",
        "opencode.json",
        "sandbox.log",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            !text.contains("per-session-7f3"),
            "{file} holds the session's env"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(".agentdeck"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // 2. The pool refills with another sandbox.
    let next = ready_member(&api, &sandboxes, Some(&member)).await;
    assert_ne!(next, member);
    // `doctor` says how the pool is doing.
    let doctor = agentdeck(root.path())
        .args(["doctor", "-o", "json"])
        .env("AGENTDECK_CONFIG", root.path().join("agentdeck.toml"))
        .env("AGENTDECK_DATABASE_URL", db.url())
        .env("AGENTDECK_GATEWAY_URL", &stack.gateway_url)
        .env("PATH", &stack.path)
        .output()
        .unwrap();
    let checks: Value = serde_json::from_slice(&doctor.stdout).unwrap_or(Value::Null);
    let pool = checks
        .as_array()
        .into_iter()
        .flatten()
        .chain(checks["checks"].as_array().into_iter().flatten())
        .find(|c| c["name"] == "warm pool (coder)")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(pool["ok"], true, "{checks}");
    assert_eq!(pool["detail"], "1 of 1 ready", "{checks}");

    // 3. Two sessions at once, one sandbox ready: one warm, one cold, each saying so.
    let mut pair = Vec::new();
    for word in ["alpha", "beta"] {
        let (status, created) = api
            .post(
                "/api/sessions",
                json!({"agent_id": "coder", "initial_prompt": format!("say {word}")}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        pair.push((created["id"].as_str().unwrap().to_string(), word));
    }
    let mut launches = Vec::new();
    for (other, word) in &pair {
        api.reply_containing(other, &format!("Scripted reply to: say {word}"))
            .await;
        launches.push(launch_of(other.clone()).await["launch"].clone());
    }
    launches.sort_by_key(|l| l.to_string());
    assert_eq!(launches, [json!("cold"), json!("warm")]);

    // 4. The claimed sandbox restarted is handed its claim again: the session goes on, with
    // its env.
    eventually(TURN, "the first session to be idle", || async {
        (api.get(&format!("/api/sessions/{id}")).await["status"] == "idle").then_some(())
    })
    .await;
    let (status, body) = api
        .post(&format!("/api/sessions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(TURN, "the restarted session to be up again", || async {
        let s = api.get(&format!("/api/sessions/{id}")).await;
        (s["phase"] == "ready" || s["phase"] == "idle").then_some(())
    })
    .await;
    let (status, _) = api
        .post(
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "run: echo again=$X"}),
        )
        .await;
    assert_eq!(status, 202);
    api.reply_containing(&id, "Ran it. Output: again=per-session-7f3")
        .await;

    // 5. A pool sandbox that dies before any claim is replaced.
    let waiting = ready_member(&api, &sandboxes, None).await;
    let record: Value = serde_json::from_slice(
        &std::fs::read(sandboxes.join(&waiting).join("sandbox.json")).unwrap(),
    )
    .unwrap();
    let pid = record["pid"].as_i64().unwrap() as i32;
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let replacement = ready_member(&api, &sandboxes, Some(&waiting)).await;
    assert_ne!(replacement, waiting);

    // 6. A claimed sandbox that dies before its claim reaches it (its bootstrap stopped, then
    // killed, with the claim put in its folder): the session is not lost with it. It starts
    // elsewhere, with its env; the dead sandbox is removed, and the pool refills. (Once its
    // runtime heard the harness answer: one not heard yet is asked, and a stopped one cannot say.)
    let record: Value = eventually(TURN, "the pool's sandbox to be heard ready", || async {
        let record: Value = serde_json::from_slice(
            &std::fs::read(sandboxes.join(&replacement).join("sandbox.json")).ok()?,
        )
        .ok()?;
        let heard = record["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Ready");
        heard.then_some(record)
    })
    .await;
    let pid = record["pid"].as_i64().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let (status, created) = api
        .post(
            "/api/sessions",
            json!({"agent_id": "coder", "initial_prompt": "run: echo Y=$Y",
                   "env_vars": {"Y": "per-session-d1e"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let orphan = created["id"].as_str().unwrap().to_string();
    let put = sandboxes.join(&replacement).join(".agentdeck/claim.json");
    eventually(
        TURN,
        "the claim to be put in the stopped sandbox",
        || async { put.exists().then_some(()) },
    )
    .await;
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    api.reply_containing(&orphan, "Ran it. Output: Y=per-session-d1e")
        .await;
    let session = api.get(&format!("/api/sessions/{orphan}")).await;
    assert_ne!(session["sandbox_ref"], replacement.as_str(), "{session}");
    eventually(TURN, "the dead sandbox to be removed", || async {
        (!sandboxes.join(&replacement).exists()).then_some(())
    })
    .await;
    ready_member(&api, &sandboxes, Some(&replacement)).await;

    // Sandboxes outlive `serve` (as every sandbox does): this test's go with it (`_sandboxes_go`).
    drop(serve);
}

/// Warm pools on the REAL control plane (agent-sandbox's controller with `--extensions`, pods run
/// by the tests' kubelet), the real opencode and LiteLLM: the core keeps the agent's
/// SandboxTemplate and SandboxWarmPool; a session takes a ready sandbox with a SandboxClaim and
/// hands it its password and env through `pods/exec`, so that no object of the cluster holds
/// either; two sessions racing for one ready sandbox both answer; a claimed pod that dies before
/// its claim reaches it is replaced and the claim handed to its successor; an emptied pool means a cold
/// start (a Sandbox of its own, saying why); the warm session restarted (a new pod, a new
/// bootstrap) is handed its claim again, and so is one whose pod someone else deleted (the
/// conversation recovered); ended, its claim and its Sandbox go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_on_the_real_control_plane_hands_each_claim_its_own_secrets() {
    use agentdeck::config::{BootstrapBinary, EndpointMode, KubernetesConfig, SandboxApiVersion};
    use agentdeck::core::{Core, CreateSession};
    use agentdeck::harness::opencode::Opencode;
    use agentdeck::runtime::kubernetes::KubernetesRuntime;
    use agentdeck::runtime::kubernetes::pool_objects::Extension;
    use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
    use kube::api::{DynamicObject, ListParams};
    use std::sync::Arc;

    let Some(stack) = common::stack::stack() else {
        return;
    };
    let Some(cluster) = common::cluster::cluster().await else {
        return;
    };
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let namespace = format!("e2e-warm-{}", common::cluster::suffix());
    let namespaces = cluster.namespaces(std::slice::from_ref(&namespace)).await;
    let opencode = format!("{}/opencode", stack.path.split(':').next().unwrap());
    // agentdeck in the "agent's image": the binary under test, by absolute path.
    let program = env!("CARGO_BIN_EXE_agentdeck");
    let db = TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let harness_port = free_port();
    // The agent's image as the test has it: agentdeck, whose hand-over the test can hold while
    // it kills the claimed pod (step 3).
    let hold = root.path().join("hold");
    let held = root.path().join("held");
    let wrapper = root.path().join("agentdeck-in-image");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = hand-over ] && [ -e '{hold}' ]; then\n\
             \x20 : > '{held}'\n\
             \x20 while [ -e '{hold}' ]; do sleep 0.05; done\n\
             \x20 echo 'held by the test' >&2; exit 75\nfi\nexec '{program}' \"$@\"\n",
            hold = hold.display(),
            held = held.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.to_string_lossy().to_string();
    let text = format!(
        "[agents.coder]\nmodel = \"litellm/scripted\"\nimage = \"ghcr.io/example/opencode:1\"\n\
         warm = 1\n\
         command = [\"{opencode}\", \"serve\", \"--hostname\", \"{{host}}\", \"--port\", \"{{port}}\"]\n\
         [sessions]\nphase_timeout = \"90s\"\n\
         [kubernetes]\nnamespace = \"{namespace}\"\nendpoint = \"port-forward\"\n\
         harness_port = {harness_port}\nbootstrap_program = \"{wrapper}\"\n"
    );
    let mut config = common::config_with(&text, db.url(), root.path());
    config.gateway.url = Some(stack.gateway_url.clone());
    config.gateway.sandbox_url = Some(stack.gateway_url.clone());
    let kconfig = KubernetesConfig {
        context: None,
        namespace: namespace.clone(),
        team_namespaces: Default::default(),
        api_version: SandboxApiVersion::Auto,
        endpoint: EndpointMode::PortForward,
        harness_port,
        service_account: None,
        bootstrap: BootstrapBinary::Path(wrapper.clone()),
    };
    assert_eq!(
        config.kubernetes, kconfig,
        "the file says what the test runs"
    );
    let runtime = KubernetesRuntime::with_client(cluster.config.clone(), kconfig, false).unwrap();
    let store = db.open().await;
    let core = Core::with_store(
        config,
        store.clone(),
        Arc::new(runtime),
        Arc::new(Opencode::new().unwrap()),
    );
    let worker = agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);
    let ready = || async {
        core.pool_health()
            .await
            .into_iter()
            .find(|p| p.agent == "coder" && p.ready >= 1)
            .map(|p| p.ready)
    };
    let launch_of = |id: uuid::Uuid| {
        let store = store.clone();
        async move {
            store
                .list_events(id, 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.kind == "session.launch")
                .map(|e| e.payload)
                .unwrap_or(Value::Null)
        }
    };
    let claims: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        cluster.client.clone(),
        &namespace,
        &Extension::Claim.api_resource(),
    );

    // 1. The pool fills; a session takes its sandbox, with an env of its own.
    eventually(TURN, "the warm pool's sandbox to be ready", ready).await;
    // A session of `coder` whose first prompt echoes its env variable `name`, set to `value`.
    let echoing = |name: &str, value: &str| {
        let request = CreateSession {
            agent_id: Some("coder".into()),
            initial_prompt: Some(format!("run: echo {name}=${name}")),
            env: std::collections::BTreeMap::from([(name.to_string(), value.to_string())]),
            ..Default::default()
        };
        let core = core.clone();
        async move { core.create_session(request).await.unwrap() }
    };
    let session = echoing("X", "per-session-k8s-5e1").await;
    answer_containing(&core, session.id, "Ran it. Output: X=per-session-k8s-5e1").await;
    let launch = launch_of(session.id).await;
    assert_eq!(launch["launch"], "warm", "{launch}");
    let reference = core
        .get_session(session.id)
        .await
        .unwrap()
        .sandbox_ref
        .unwrap_or_default();
    let name = reference
        .strip_prefix(&format!("{namespace}/"))
        .unwrap_or_default()
        .to_string();
    assert!(name.starts_with("ad-pool-coder-"), "{reference}");
    assert_eq!(launch["sandbox"], reference.as_str(), "{launch}");
    let claim = claims
        .get(&format!("ad-claim-{}", session.id))
        .await
        .expect("the session's SandboxClaim");
    assert_eq!(claim.data["status"]["sandbox"]["name"], name.as_str());
    let health = core
        .sandbox_health(session.id)
        .await
        .unwrap()
        .expect("a sandbox")
        .expect("its health");
    assert_eq!(health.launch.as_deref(), Some("warm"), "{health:?}");

    // Neither the session's env nor its harness password is in any object of the namespace.
    let password = store
        .session_env(session.id)
        .await
        .unwrap()
        .remove(agentdeck::core::HARNESS_PASSWORD_ENV)
        .expect("the session's password");
    let mut everything = Vec::new();
    let all = ListParams::default();
    for kind in [Extension::Template, Extension::WarmPool, Extension::Claim] {
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(cluster.client.clone(), &namespace, &kind.api_resource());
        everything.push(serde_json::to_string(&api.list(&all).await.unwrap().items).unwrap());
    }
    let sandboxes: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        cluster.client.clone(),
        &namespace,
        &agentdeck::runtime::kubernetes::template::Version::V1beta1.api_resource(),
    );
    everything.push(serde_json::to_string(&sandboxes.list(&all).await.unwrap().items).unwrap());
    let pods: kube::Api<Pod> = kube::Api::namespaced(cluster.client.clone(), &namespace);
    everything.push(serde_json::to_string(&pods.list(&all).await.unwrap().items).unwrap());
    let secrets: kube::Api<Secret> = kube::Api::namespaced(cluster.client.clone(), &namespace);
    let listed = secrets.list(&all).await.unwrap().items;
    // (a Secret's data is base64 in JSON: decoded here)
    for s in &listed {
        for v in s.data.iter().flat_map(|d| d.values()) {
            everything.push(String::from_utf8_lossy(&v.0).into_owned());
        }
    }
    let events: kube::Api<Event> = kube::Api::namespaced(cluster.client.clone(), &namespace);
    everything.push(serde_json::to_string(&events.list(&all).await.unwrap().items).unwrap());
    let maps: kube::Api<ConfigMap> = kube::Api::namespaced(cluster.client.clone(), &namespace);
    everything.push(serde_json::to_string(&maps.list(&all).await.unwrap().items).unwrap());
    let everything = everything.join("\n");
    assert!(
        everything.contains(&name),
        "the scan saw the claimed sandbox"
    );
    for secret in ["per-session-k8s-5e1", password.as_str()] {
        assert!(
            !everything.contains(secret),
            "a session's secret is in an object of the cluster"
        );
    }

    // 2. The pool refills; two sessions race for its one sandbox. agent-sandbox may give the
    // loser the pool's next sandbox while it still starts (the claim then waits for it), or
    // none (the session starts cold): both answer, and at least one was warm.
    eventually(TURN, "the pool to refill", ready).await;
    let mut pair = Vec::new();
    for word in ["alpha", "beta"] {
        let s = core
            .create_session(CreateSession {
                agent_id: Some("coder".into()),
                initial_prompt: Some(format!("say {word}")),
                ..Default::default()
            })
            .await
            .unwrap();
        pair.push((s.id, word));
    }
    let mut launches = Vec::new();
    for (id, word) in &pair {
        answer_containing(&core, *id, &format!("Scripted reply to: say {word}")).await;
        launches.push(launch_of(*id).await["launch"].clone());
    }
    assert!(launches.contains(&json!("warm")), "{launches:?}");

    // 3. The claimed pod dies before the claim reaches it (the test holds the hand-over, then
    // deletes the pod): agent-sandbox makes the Sandbox's pod again, and the claim is handed to
    // that one. The session is warm, on the sandbox it claimed, with its env.
    std::fs::write(&hold, "").unwrap();
    eventually(TURN, "the pool to refill", ready).await;
    let orphan = echoing("Y", "per-session-held-9c2").await;
    eventually(TURN, "the hand-over to be held", || async {
        held.exists().then_some(())
    })
    .await;
    let claimed = claims
        .get(&format!("ad-claim-{}", orphan.id))
        .await
        .unwrap()
        .data["status"]["sandbox"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = pods.get(&claimed).await.unwrap().metadata.uid;
    pods.delete(&claimed, &Default::default()).await.unwrap();
    eventually(TURN, "the claimed sandbox's new pod", || async {
        pods.get_opt(&claimed)
            .await
            .ok()
            .flatten()
            .filter(|p| p.metadata.uid != uid)
            .map(|_| ())
    })
    .await;
    std::fs::remove_file(&hold).unwrap();
    answer_containing(&core, orphan.id, "Ran it. Output: Y=per-session-held-9c2").await;
    let launch = launch_of(orphan.id).await;
    assert_eq!(launch["launch"], "warm", "{launch}");
    assert_eq!(
        launch["sandbox"],
        format!("{namespace}/{claimed}").as_str(),
        "{launch}"
    );

    // 4. Another writer empties the pool (replicas 0): a session finds no sandbox ready and
    // starts cold, as a Sandbox of its own with no claim, saying why. Then the pool is put
    // back.
    let pools: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        cluster.client.clone(),
        &namespace,
        &Extension::WarmPool.api_resource(),
    );
    let scale = |replicas: i32| {
        let pools = pools.clone();
        async move {
            pools
                .patch(
                    "ad-pool-coder",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await
                .unwrap();
        }
    };
    scale(0).await;
    eventually(TURN, "the pool to be empty", || async {
        let pools = core.pool_health().await;
        pools
            .iter()
            .find(|p| p.agent == "coder")
            .is_some_and(|p| p.ready == 0 && p.starting == 0)
            .then_some(())
    })
    .await;
    let cold = core
        .create_session(CreateSession {
            agent_id: Some("coder".into()),
            initial_prompt: Some("say cold".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    answer_containing(&core, cold.id, "Scripted reply to: say cold").await;
    let launch = launch_of(cold.id).await;
    assert_eq!(launch["launch"], "cold", "{launch}");
    assert_eq!(
        launch["why"], "the warm pool had no sandbox ready",
        "{launch}"
    );
    assert_eq!(
        core.get_session(cold.id).await.unwrap().sandbox_ref,
        Some(format!("{namespace}/ad-{}", cold.id)),
        "a cold session has a Sandbox of its own"
    );
    assert!(
        claims
            .get_opt(&format!("ad-claim-{}", cold.id))
            .await
            .unwrap()
            .is_none(),
        "and no claim"
    );
    let empty = core.pool_health().await;
    assert!(
        empty
            .iter()
            .any(|p| p.agent == "coder" && p.misses >= 1 && p.claims >= 2),
        "the pool's health counts claims and misses: {empty:?}"
    );
    scale(1).await;

    // 5. The warm session restarted: a new pod whose bootstrap is handed the claim again.
    let uid = pods.get(&name).await.unwrap().metadata.uid;
    core.restart(session.id).await.unwrap();
    eventually(TURN, "a new pod", || async {
        pods.get_opt(&name)
            .await
            .ok()
            .flatten()
            .filter(|p| p.metadata.uid != uid)
            .map(|_| ())
    })
    .await;
    eventually(TURN, "the session to be up again", || async {
        use agentdeck::model::SessionStatus;
        let s = core.get_session(session.id).await.ok()?;
        matches!(s.status, SessionStatus::Ready | SessionStatus::Idle).then_some(())
    })
    .await;
    core.send_message(session.id, "run: echo again=$X")
        .await
        .unwrap();
    answer_containing(
        &core,
        session.id,
        "Ran it. Output: again=per-session-k8s-5e1",
    )
    .await;

    // 6. Its pod deleted by someone else (an eviction, a drain): the controller makes a new
    // one, waiting for a claim; the session is handed its claim again, finds the harness has
    // lost the conversation, and recovers it; the next message runs with the session's env.
    eventually(TURN, "the session to be idle", || async {
        use agentdeck::model::SessionStatus;
        let s = core.get_session(session.id).await.ok()?;
        (s.status == SessionStatus::Idle).then_some(())
    })
    .await;
    let uid = pods.get(&name).await.unwrap().metadata.uid;
    pods.delete(&name, &Default::default()).await.unwrap();
    eventually(TURN, "a new pod", || async {
        pods.get_opt(&name)
            .await
            .ok()
            .flatten()
            .filter(|p| p.metadata.uid != uid)
            .map(|_| ())
    })
    .await;
    core.send_message(session.id, "run: echo evicted=$X")
        .await
        .unwrap();
    answer_containing(
        &core,
        session.id,
        "Ran it. Output: evicted=per-session-k8s-5e1",
    )
    .await;

    // 7. Ended: its claim goes, and the Sandbox with it.
    core.end(session.id).await.unwrap();
    eventually(TURN, "the claim and its Sandbox to go", || async {
        let gone = claims
            .get_opt(&format!("ad-claim-{}", session.id))
            .await
            .ok()?
            .is_none()
            && sandboxes.get_opt(&name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;

    // 8. A claim left by a process that died before it labelled its Sandbox (made here by hand,
    // for the session that just ended): the reconciler finds it by its labels and deletes it
    // (after its grace of a minute), and the pool sandbox it held goes with it.
    let mut orphan_claim = DynamicObject::new(
        &format!("ad-claim-{}", session.id),
        &Extension::Claim.api_resource(),
    )
    .within(&namespace);
    orphan_claim.metadata.labels = Some(
        agentdeck::runtime::kubernetes::pool_objects::session_labels(
            session.id, "default", "coder",
        ),
    );
    orphan_claim.data = json!({"spec": {"warmPoolRef": {"name": "ad-pool-coder"}}});
    claims
        .create(&Default::default(), &orphan_claim)
        .await
        .unwrap();
    let held = eventually(TURN, "the orphan claim to be bound", || async {
        let c = claims
            .get_opt(&format!("ad-claim-{}", session.id))
            .await
            .ok()??;
        c.data["status"]["sandbox"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    })
    .await;
    eventually(
        Duration::from_secs(180),
        "the orphan claim and its Sandbox to go",
        || async {
            let gone = claims
                .get_opt(&format!("ad-claim-{}", session.id))
                .await
                .ok()?
                .is_none()
                && sandboxes.get_opt(&held).await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    worker.stop(Duration::from_secs(5)).await;
    drop(namespaces);
}
