//! The local process runtime with real processes: a small Python server stands in for the
//! harness (it answers `GET /global/health` on `{port}`), and shell loops for logs.
//! Each test has a root folder of its own; every wait is a generous poll, never a timing claim.

mod common;

use agentdeck::config::{AgentSpec, HarnessKind, LocalConfig, Resources};
use agentdeck::model::env;
use agentdeck::runtime::local::{LocalRuntime, RecordState, SandboxRecord};
use agentdeck::runtime::{
    HealthPhase, LogOptions, RuntimeError, SandboxHealth, SandboxRef, SandboxRuntime, SandboxSpec,
};
use common::eventually;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// The harness stand-in: answers /global/health with 200; with --dump-env, first writes its
/// environment to env.json in its working folder.
const SERVER_PY: &str = r#"
import http.server, json, os, sys
port = int(sys.argv[1])
if "--dump-env" in sys.argv:
    with open("env.json.tmp", "w") as f:
        json.dump(dict(os.environ), f)
    os.replace("env.json.tmp", "env.json")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/global/health"
        body = b'{"healthy":true}' if ok else b'{}'
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print("listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// A temporary root; whatever a failed test leaves running there is killed with it.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn runtime(&self) -> LocalRuntime {
        LocalRuntime::new(&LocalConfig {
            root: self.path().to_path_buf(),
            env_allowlist: vec!["PATH".to_string()],
            program: None,
        })
        .expect("local runtime")
        .with_stop_grace(Duration::from_secs(3))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = SandboxRecord::read(&entry.path()).ok().and_then(|r| r.pid)
                && leads_its_group(pid)
            {
                // SAFETY: plain syscall; pid leads its own group (checked just above).
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
        }
    }
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

fn leads_its_group(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.get(2) == Some(&pid.to_string()))
}

/// Running (a zombie waiting to be reaped counts as gone).
fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

fn agent(command: &[&str]) -> AgentSpec {
    AgentSpec {
        id: "tester".to_string(),
        name: "tester".to_string(),
        harness: HarnessKind::Opencode,
        model: "litellm/mock-gpt".to_string(),
        system_prompt: None,
        image: None,
        resources: Resources::default(),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        idle_timeout: Duration::from_secs(60),
        permission: Default::default(),
        budget: None,
        warm: 0,
    }
}

fn spec(command: &[&str]) -> SandboxSpec {
    SandboxSpec {
        session_id: Uuid::new_v4(),
        team: "default".to_string(),
        agent: agent(command),
        env: BTreeMap::new(),
        files: BTreeMap::new(),
    }
}

/// A sandbox running the Python stand-in, delivered as one of the spec's files.
fn server_spec(extra: &[&str]) -> SandboxSpec {
    let mut command = vec!["python3", "server.py", "{port}"];
    command.extend_from_slice(extra);
    let mut spec = spec(&command);
    spec.files
        .insert("server.py".to_string(), SERVER_PY.to_string());
    spec
}

async fn health_until(
    runtime: &LocalRuntime,
    sandbox: &SandboxRef,
    what: &str,
    check: impl Fn(&SandboxHealth) -> bool,
) -> SandboxHealth {
    eventually(WAIT, what, || async {
        runtime.health(sandbox).await.ok().filter(|h| check(h))
    })
    .await
}

async fn ready(runtime: &LocalRuntime, sandbox: &SandboxRef) -> SandboxHealth {
    health_until(runtime, sandbox, "the sandbox to be ready", |h| {
        h.phase == HealthPhase::Ready
    })
    .await
}

fn record(runtime: &LocalRuntime, sandbox: &SandboxRef) -> SandboxRecord {
    let id = Uuid::parse_str(&sandbox.name).expect("session id");
    SandboxRecord::read(&runtime.workdir(id)).expect("sandbox.json")
}

fn pid_of(runtime: &LocalRuntime, sandbox: &SandboxRef) -> i32 {
    record(runtime, sandbox).pid.expect("a pid")
}

async fn gone(pid: i32) {
    eventually(WAIT, "the process to be gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_becomes_ready_and_its_endpoint_answers() {
    let root = Root::new();
    let runtime = root.runtime();
    let mut changes = runtime.watch();
    let spec = server_spec(&[]);
    let sandbox = runtime.provision(&spec).await.expect("provision");
    assert_eq!(sandbox.runtime, "local");
    assert_eq!(sandbox.name, spec.session_id.to_string());

    let health = ready(&runtime, &sandbox).await;
    let endpoint = health.endpoint.clone().expect("an endpoint once ready");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(health.node.is_some());
    assert_eq!(health.restarts, 0);
    assert!(health.recent_events.iter().any(|e| e.reason == "Started"));
    let answer = agentdeck::net::http_client(Duration::from_secs(5))
        .expect("http client")
        .get(format!("{endpoint}/global/health"))
        .send()
        .await
        .expect("the endpoint answers");
    assert!(answer.status().is_success());

    // What watch() said, in order: starting, then ready.
    let mut phases = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while phases.last() != Some(&HealthPhase::Ready) {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("a Ready change on watch()")
            .expect("watch() open");
        if change.sandbox == sandbox {
            assert_eq!(change.session_id, Some(spec.session_id));
            phases.push(change.health.phase);
        }
    }
    assert_eq!(phases.first(), Some(&HealthPhase::Starting), "{phases:?}");

    // Provisioning again finds the same sandbox, same process.
    let pid = pid_of(&runtime, &sandbox);
    let again = runtime.provision(&spec).await.expect("provision again");
    assert_eq!(again, sandbox);
    assert_eq!(pid_of(&runtime, &sandbox), pid);
    assert!(alive(pid));

    let listed = runtime.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, Some(spec.session_id));
    runtime.destroy(&sandbox).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_starts_a_new_process() {
    let root = Root::new();
    let runtime = root.runtime();
    let sandbox = runtime
        .provision(&server_spec(&[]))
        .await
        .expect("provision");
    let before = ready(&runtime, &sandbox).await;
    let old_pid = pid_of(&runtime, &sandbox);

    runtime.restart(&sandbox).await.expect("restart");
    let after = ready(&runtime, &sandbox).await;
    let new_pid = pid_of(&runtime, &sandbox);
    assert_ne!(new_pid, old_pid);
    assert!(!alive(old_pid));
    assert_eq!(after.restarts, 1);
    assert_eq!(record(&runtime, &sandbox).restarts, 1);
    assert!(after.recent_events.iter().any(|e| e.reason == "Restarted"));
    // The same port when it is free again.
    assert_eq!(after.endpoint, before.endpoint);
    runtime.destroy(&sandbox).await.expect("destroy");
    gone(new_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_reported_failed() {
    let root = Root::new();
    let runtime = root.runtime();
    let mut changes = runtime.watch();
    let sandbox = runtime
        .provision(&server_spec(&[]))
        .await
        .expect("provision");
    ready(&runtime, &sandbox).await;
    let pid = pid_of(&runtime, &sandbox);

    // SAFETY: plain syscall on the sandbox's own process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let health = health_until(&runtime, &sandbox, "the sandbox to fail", |h| {
        h.phase == HealthPhase::Failed
    })
    .await;
    assert_eq!(health.reason.as_deref(), Some("killed by signal 9"));
    assert_eq!(
        health.last_termination.as_deref(),
        Some("killed by signal 9")
    );
    assert_eq!(health.endpoint, None);
    assert!(health.recent_events.iter().any(|e| e.reason == "Exited"));
    assert_eq!(record(&runtime, &sandbox).state, RecordState::Exited);

    // watch() told us too.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("a Failed change on watch()")
            .expect("watch() open");
        if change.sandbox == sandbox && change.health.phase == HealthPhase::Failed {
            break;
        }
    }

    // A failed sandbox can be restarted.
    runtime.restart(&sandbox).await.expect("restart");
    ready(&runtime, &sandbox).await;
    runtime.destroy(&sandbox).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_code_is_reported() {
    let root = Root::new();
    let runtime = root.runtime();
    let sandbox = runtime
        .provision(&spec(&["sh", "-c", "echo bye; exit 3"]))
        .await
        .expect("provision");
    let health = health_until(&runtime, &sandbox, "the sandbox to fail", |h| {
        h.phase == HealthPhase::Failed
    })
    .await;
    assert_eq!(health.reason.as_deref(), Some("exit code 3"));
    runtime.destroy(&sandbox).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_it_and_resume_starts_it_again() {
    let root = Root::new();
    let runtime = root.runtime();
    let spec = server_spec(&[]);
    let sandbox = runtime.provision(&spec).await.expect("provision");
    ready(&runtime, &sandbox).await;
    let pid = pid_of(&runtime, &sandbox);

    runtime.suspend(&sandbox).await.expect("suspend");
    let health = runtime.health(&sandbox).await.expect("health");
    assert_eq!(health.phase, HealthPhase::Suspended);
    assert_eq!(health.endpoint, None);
    assert!(health.recent_events.iter().any(|e| e.reason == "Suspended"));
    gone(pid).await;
    // A stop asked for is not a crash (it said "killed by signal 15").
    let health = health_until(&runtime, &sandbox, "the stop to be recorded", |h| {
        h.last_termination.is_some()
    })
    .await;
    assert_eq!(health.last_termination.as_deref(), Some("stopped"));
    assert!(runtime.workdir(spec.session_id).join("server.py").exists());
    assert_eq!(record(&runtime, &sandbox).state, RecordState::Suspended);
    runtime.suspend(&sandbox).await.expect("suspend twice");

    runtime.resume(&sandbox).await.expect("resume");
    let health = ready(&runtime, &sandbox).await;
    assert_eq!(health.restarts, 0, "a resume is not a restart");
    let new_pid = pid_of(&runtime, &sandbox);
    assert_ne!(new_pid, pid);
    assert!(alive(new_pid));
    runtime.destroy(&sandbox).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_the_process_and_the_folder() {
    let root = Root::new();
    let runtime = root.runtime();
    let spec = server_spec(&[]);
    let sandbox = runtime.provision(&spec).await.expect("provision");
    ready(&runtime, &sandbox).await;
    let pid = pid_of(&runtime, &sandbox);
    let dir = runtime.workdir(spec.session_id);
    assert!(dir.join("home").is_dir());

    runtime.destroy(&sandbox).await.expect("destroy");
    assert!(!dir.exists());
    gone(pid).await;
    assert!(matches!(
        runtime.health(&sandbox).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(runtime.list().await.expect("list").is_empty());
    runtime
        .destroy(&sandbox)
        .await
        .expect("destroying twice is fine");
    assert!(matches!(
        runtime.restart(&sandbox).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_adopts_what_is_still_running() {
    let root = Root::new();
    let first = root.runtime();
    let spec = server_spec(&[]);
    let sandbox = first.provision(&spec).await.expect("provision");
    ready(&first, &sandbox).await;
    let pid = pid_of(&first, &sandbox);
    drop(first);
    assert!(
        alive(pid),
        "dropping the runtime leaves its sandboxes running"
    );

    let second = root.runtime();
    let listed = second.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, Some(spec.session_id));
    // Its first look already has the harness's endpoint: a command run once (the CLI's
    // `sessions answer`, `sessions shell`) has no time for the monitor's next probe.
    let first_look = second.health(&sandbox).await.expect("health");
    assert_eq!(first_look.phase, HealthPhase::Ready, "{first_look:?}");
    assert!(first_look.endpoint.is_some(), "{first_look:?}");
    let health = ready(&second, &sandbox).await;
    assert!(health.recent_events.iter().any(|e| e.reason == "Adopted"));
    assert_eq!(pid_of(&second, &sandbox), pid);

    // It can be restarted and destroyed like one of its own.
    second
        .restart(&sandbox)
        .await
        .expect("restart an adopted sandbox");
    gone(pid).await;
    ready(&second, &sandbox).await;
    let new_pid = pid_of(&second, &sandbox);
    second.destroy(&sandbox).await.expect("destroy");
    gone(new_pid).await;
    assert!(!second.workdir(spec.session_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_sandbox_can_be_destroyed() {
    let root = Root::new();
    let first = root.runtime();
    let spec = server_spec(&[]);
    let sandbox = first.provision(&spec).await.expect("provision");
    ready(&first, &sandbox).await;
    let pid = pid_of(&first, &sandbox);
    drop(first);

    let second = root.runtime();
    second.destroy(&sandbox).await.expect("destroy");
    gone(pid).await;
    assert!(!second.workdir(spec.session_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_process_is_gone_is_failed() {
    let root = Root::new();
    let first = root.runtime();
    let spec = server_spec(&[]);
    let sandbox = first.provision(&spec).await.expect("provision");
    ready(&first, &sandbox).await;
    let pid = pid_of(&first, &sandbox);
    drop(first);
    // SAFETY: plain syscall on the sandbox's own process group.
    assert_eq!(unsafe { libc::killpg(pid, libc::SIGKILL) }, 0);
    gone(pid).await;

    let second = root.runtime();
    let health = second.health(&sandbox).await.expect("health");
    assert_eq!(health.phase, HealthPhase::Failed);
    assert_eq!(
        health.reason.as_deref(),
        Some("exited while agentdeck was away")
    );
    assert_eq!(second.list().await.expect("list").len(), 1);
    // It can be started again, and destroyed.
    second.restart(&sandbox).await.expect("restart");
    ready(&second, &sandbox).await;
    second.destroy(&sandbox).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_holds_only_what_it_should() {
    // SAFETY: these names are read by no other test, and no other thread of this test binary
    // reads the environment through libc while these are set.
    unsafe {
        std::env::set_var("AGENTDECK_TEST_SECRET", "leak");
        std::env::set_var("CONTAINER_ENV_VISIBLE", "yes");
    }
    let root = Root::new();
    let runtime = root.runtime();
    let mut spec = server_spec(&["--dump-env"]);
    // As the core resolves it: CONTAINER_ENV_ variables, then the agent's, then the session's.
    spec.env = env::sandbox_env(
        &env::from_prefixed(std::env::vars()),
        &BTreeMap::new(),
        &[("FROM_SESSION".to_string(), "1".to_string())].into(),
    );
    let sandbox = runtime.provision(&spec).await.expect("provision");
    let workdir = runtime.workdir(spec.session_id);
    let dumped: BTreeMap<String, String> = eventually(WAIT, "env.json", || async {
        let text = std::fs::read_to_string(workdir.join("env.json")).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;

    assert!(!dumped.contains_key("AGENTDECK_TEST_SECRET"), "{dumped:?}");
    assert!(!dumped.contains_key("CONTAINER_ENV_VISIBLE"), "{dumped:?}");
    assert_eq!(dumped.get("VISIBLE").map(String::as_str), Some("yes"));
    assert_eq!(dumped.get("FROM_SESSION").map(String::as_str), Some("1"));
    let home = workdir.join("home");
    assert_eq!(
        dumped.get("HOME").map(String::as_str),
        home.to_str(),
        "HOME is in the working folder"
    );
    for xdg in [
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
    ] {
        let dir = dumped.get(xdg).expect(xdg);
        assert!(Path::new(dir).starts_with(&home), "{xdg}={dir}");
        assert!(Path::new(dir).is_dir(), "{xdg}={dir} exists");
    }
    assert_eq!(
        dumped.get("AGENTDECK_SESSION_ID"),
        Some(&spec.session_id.to_string())
    );
    assert_eq!(
        dumped
            .get("OPENCODE_DISABLE_AUTOUPDATE")
            .map(String::as_str),
        Some("1")
    );
    assert!(dumped.contains_key("PATH"), "PATH is allowlisted");
    assert!(!dumped.contains_key("USER") || std::env::var("USER").is_err());
    runtime.destroy(&sandbox).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_empty_command_is_a_clear_failure() {
    let root = Root::new();
    let runtime = root.runtime();
    match runtime
        .provision(&spec(&["agentdeck-no-such-command", "{port}"]))
        .await
    {
        Err(RuntimeError::Failed(reason)) => {
            assert!(reason.contains("not found on PATH"), "{reason}");
            assert!(reason.contains("agentdeck-no-such-command"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    match runtime.provision(&spec(&[])).await {
        Err(RuntimeError::Failed(reason)) => {
            assert!(reason.contains("command = [...]"), "{reason}");
            assert!(reason.contains("[agents.tester]"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let mut escaping = server_spec(&[]);
    escaping
        .files
        .insert("../escape.txt".to_string(), "x".to_string());
    assert!(matches!(
        runtime.provision(&escaping).await,
        Err(RuntimeError::Failed(_))
    ));
    let mut absolute = server_spec(&[]);
    absolute
        .files
        .insert("/tmp/agentdeck-absolute.txt".to_string(), "x".to_string());
    assert!(matches!(
        runtime.provision(&absolute).await,
        Err(RuntimeError::Failed(_))
    ));
    assert!(
        !root
            .path()
            .parent()
            .expect("parent")
            .join("escape.txt")
            .exists()
    );
    assert!(
        runtime.list().await.expect("list").is_empty(),
        "nothing is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_follow() {
    let root = Root::new();
    let runtime = root.runtime();
    let sandbox = runtime
        .provision(&spec(&[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo \"line $i\"; echo \"err $i\" >&2; sleep 0.05; done",
        ]))
        .await
        .expect("provision");

    let number = |line: &str| -> u64 {
        line.rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
    };
    // Wait for a few lines, then take the last three.
    let tail: Vec<String> = eventually(WAIT, "ten log lines", || async {
        let options = LogOptions {
            tail: Some(3),
            ..Default::default()
        };
        let lines: Vec<String> = runtime
            .logs(&sandbox, options)
            .await
            .ok()?
            .filter_map(|l| async move { l.ok() })
            .collect()
            .await;
        (lines.len() == 3 && lines.iter().all(|l| number(l) >= 5)).then_some(lines)
    })
    .await;
    assert!(tail.iter().any(|l| l.starts_with("line ")), "{tail:?}");
    assert!(
        tail.iter().any(|l| l.starts_with("err ")),
        "stderr too: {tail:?}"
    );

    // Follow: lines keep coming as they are written.
    let options = LogOptions {
        tail: Some(1),
        follow: true,
        ..Default::default()
    };
    let mut stream = runtime.logs(&sandbox, options).await.expect("logs");
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let line = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a line")
            .expect("the stream goes on")
            .expect("a readable line");
        if line.starts_with("line ") {
            seen.push(number(&line));
        }
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    assert!(seen[19] > tail.iter().map(|l| number(l)).max().unwrap_or(0));

    // The stream ends once the sandbox is destroyed.
    runtime.destroy(&sandbox).await.expect("destroy");
    tokio::time::timeout(WAIT, async { while stream.next().await.is_some() {} })
        .await
        .expect("the followed stream ends");

    let missing = SandboxRef {
        runtime: "local".to_string(),
        name: Uuid::new_v4().to_string(),
    };
    assert!(matches!(
        runtime.logs(&missing, LogOptions::default()).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_over_one_root_follow_each_other() {
    let root = Root::new();
    let first = root.runtime();
    let second = root.runtime();
    let spec = server_spec(&[]);
    let sandbox = first.provision(&spec).await.expect("provision");
    ready(&first, &sandbox).await;
    let pid = pid_of(&first, &sandbox);

    // The second finds it, restarts it; the first catches up rather than calling it failed.
    ready(&second, &sandbox).await;
    second
        .restart(&sandbox)
        .await
        .expect("restart from the second");
    gone(pid).await;
    let new_pid = pid_of(&second, &sandbox);
    ready(&second, &sandbox).await;
    let health = eventually(WAIT, "the first to see the new run", || async {
        first
            .health(&sandbox)
            .await
            .ok()
            .filter(|h| h.phase == HealthPhase::Ready && h.restarts == 1)
    })
    .await;
    assert!(health.endpoint.is_some());
    assert_eq!(pid_of(&first, &sandbox), new_pid);

    // The first suspends it; the second sees that.
    first
        .suspend(&sandbox)
        .await
        .expect("suspend from the first");
    gone(new_pid).await;
    health_until(&second, &sandbox, "the second to see it suspended", |h| {
        h.phase == HealthPhase::Suspended
    })
    .await;

    // The second destroys it; the first finds nothing.
    second.destroy(&sandbox).await.expect("destroy");
    assert!(matches!(
        first.health(&sandbox).await,
        Err(RuntimeError::NotFound(_))
    ));
    first.destroy(&sandbox).await.expect("destroy again");
}
