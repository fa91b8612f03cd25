//! The real binary: `serve` with the seed's curl example on the embedded SQLite default and on
//! Postgres, the `sessions` commands, `doctor`, and refusing bad configuration files with the
//! file, line and column.

mod common;

use common::{TestDb, agentdeck, eventually, free_port};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(root: &Path, args: &[&str], db: Option<&str>) -> Output {
    let mut cmd = agentdeck(root);
    cmd.args(args);
    if let Some(url) = db {
        cmd.env("AGENTDECK_DATABASE_URL", url);
    }
    cmd.output().expect("run agentdeck")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `agentdeck serve` + the seed's curl example → `agentdeck sessions list --output json`.
async fn serve_then_list(db: Option<&str>) {
    agentdeck::net::ensure_crypto();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = agentdeck(root.path());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = db {
        cmd.env("AGENTDECK_DATABASE_URL", url);
    }
    let _serve = Serve(cmd.spawn().expect("start serve"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "serve to answer /healthz", || {
        let http = http.clone();
        let url = format!("{base}/healthz");
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    let resp = http
        .post(format!("{base}/api/sessions"))
        .header("Content-Type", "application/json")
        .body(r#"{"agent_id": "opencode"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();

    let out = run(root.path(), &["sessions", "list", "--output", "json"], db);
    let listed = stdout_json(&out);
    assert_eq!(listed[0]["id"], created["id"], "{listed}");
    assert_eq!(listed[0]["agent_id"], "opencode");
    if db.is_none() {
        assert!(
            root.path().join("data/agentdeck/agentdeck.db").exists(),
            "the embedded store lives in the XDG data dir"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_curl_on_the_embedded_default() {
    serve_then_list(None).await;
}

/// A changed config file applies on SIGHUP without a restart where it can (a new agent, new
/// API tokens), the log says what needs a restart (the worker's settings), and a file that no
/// longer reads changes nothing and says why. (Before, nothing applied until every process
/// was restarted, and nobody said so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_its_config_on_sighup() {
    agentdeck::net::ensure_crypto();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = root.path().join("agentdeck.toml");
    let agent = |id: &str| format!("[agents.{id}]\nmodel = \"m\"\ncommand = [\"true\"]\n");
    std::fs::write(&config, agent("coder")).unwrap();
    let log = root.path().join("serve.log");
    let mut cmd = agentdeck(root.path());
    cmd.args(["serve", "--no-worker"])
        .env("AGENTDECK_CONFIG", &config)
        .env("AGENTDECK_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let serve = Serve(cmd.spawn().expect("start serve"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let create = |agent: &'static str| {
        let http = http.clone();
        let url = format!("{base}/api/sessions");
        async move {
            http.post(url)
                .json(&serde_json::json!({ "agent_id": agent }))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    eventually(Duration::from_secs(20), "serve to answer", || async {
        (create("coder").await == 201).then_some(())
    })
    .await;
    assert_eq!(create("reviewer").await, 404, "not configured yet");

    let hup = || unsafe { libc::kill(serve.0.id() as i32, libc::SIGHUP) };
    let said = |text: &'static str| {
        let log = log.clone();
        move || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|l| l.contains(text))
            }
        }
    };
    // A file that does not read: refused whole, nothing changes, the log says where.
    std::fs::write(&config, format!("{}[agents.reviewer\n", agent("coder"))).unwrap();
    hup();
    eventually(
        Duration::from_secs(20),
        "the refusal in the log",
        said("not reloaded"),
    )
    .await;
    assert_eq!(create("coder").await, 201, "the running config stays");

    // A new agent and new worker settings: the agent applies, the worker's wait.
    std::fs::write(
        &config,
        format!(
            "{}{}[worker]\nconcurrency = 9\n",
            agent("coder"),
            agent("reviewer")
        ),
    )
    .unwrap();
    hup();
    let logged = eventually(
        Duration::from_secs(20),
        "the reload in the log",
        said("agent reviewer added"),
    )
    .await;
    assert!(
        logged.contains("needs a restart to apply: [worker]"),
        "{logged}"
    );
    assert_eq!(
        create("reviewer").await,
        201,
        "the new agent applies at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_curl_on_postgres() {
    let db = TestDb::postgres().await;
    serve_then_list(Some(db.url())).await;
}

#[test]
fn sessions_commands_round_trip() {
    let root = tempfile::tempdir().unwrap();
    sessions_round_trip(&|args| run(root.path(), args, None));
}

/// The same commands through `serve` (`--server`, a team's token; `serve` runs no worker,
/// as the direct commands run none): the same answers and the same refusals, in words.
#[test]
fn sessions_commands_round_trip_through_serve() {
    let root = tempfile::tempdir().unwrap();
    let (_serve, url) = serve_with_a_token(root.path());
    let client = root.path().join("client");
    let run = |args: &[&str]| {
        agentdeck(&client)
            .args(["--server", &url])
            .args(args)
            .env("AGENTDECK_TOKEN", "red-team-token-0123456789")
            .output()
            .expect("run agentdeck")
    };
    sessions_round_trip(&run);
    assert!(
        !client.join("data/agentdeck/agentdeck.db").exists(),
        "the client keeps no store"
    );
}

/// `serve --no-worker` on its own embedded store with red's token; its URL once it answers.
fn serve_with_a_token(root: &Path) -> (Serve, String) {
    serve_with_a_token_on(root, None)
}

/// The same on the store at `db` (else its own embedded one).
fn serve_with_a_token_on(root: &Path, db: Option<&str>) -> (Serve, String) {
    let port = free_port();
    let config = root.join("serve.toml");
    std::fs::write(
        &config,
        "[[api.tokens]]\ntoken = \"red-team-token-0123456789\"\nteam = \"red\"\nname = \"alice\"\n",
    )
    .unwrap();
    let mut cmd = agentdeck(&root.join("server"));
    cmd.args([
        "serve",
        "--no-worker",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("AGENTDECK_CONFIG", &config)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(db) = db {
        cmd.env("AGENTDECK_DATABASE_URL", db);
    }
    let serve = Serve(cmd.spawn().expect("start serve"));
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (serve, format!("http://127.0.0.1:{port}"))
}

/// Runs the binary with these arguments (directly, or through `serve`).
type Run<'a> = &'a dyn Fn(&[&str]) -> Output;

fn sessions_round_trip(run: Run<'_>) {
    let out = run(&[
        "sessions",
        "create",
        "--title",
        "from the cli",
        "--prompt",
        "hello",
        "--env",
        "TICKET=OPS-7",
        "-o",
        "json",
    ]);
    let created = stdout_json(&out);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["env_keys"], serde_json::json!(["TICKET"]));

    let shown = stdout_json(&run(&["sessions", "show", &id, "-o", "json"]));
    assert_eq!(shown["session"]["title"], "from the cli");
    assert_eq!(shown["messages"][0]["parts"][0]["text"], "hello");
    assert_eq!(shown["messages"][0]["status"], "pending");
    // A message sent from the command line, stored at once (delivered when the agent is up).
    let sent = run(&["sessions", "send", &id, "and then this"]);
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        "message #2 stored (pending)",
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent = stdout_json(&run(&["sessions", "send", &id, "a third", "-o", "json"]));
    assert_eq!(sent["seq"], 3);
    let empty = run(&["sessions", "send", &id, "  "]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("nothing was sent"));

    let table = run(&["sessions", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID"), "{text}");
    // The table says the short id (the end of the id: its beginning is a time), which every
    // command takes, as it takes any unique beginning or end of the id.
    let hex = id.replace('-', "");
    let short = &hex[24..];
    assert!(
        text.contains(short) && !text.contains(&id) && text.contains("from the cli"),
        "{text}"
    );
    for given in [short, &hex[..16], &hex[20..], &id.to_uppercase()] {
        let shown = stdout_json(&run(&["sessions", "show", given, "-o", "json"]));
        assert_eq!(shown["session"]["id"], id.as_str(), "{given}");
    }
    let other = stdout_json(&run(&[
        "sessions", "create", "--title", "another", "-o", "json",
    ]));
    let other_hex = other["id"].as_str().unwrap().replace('-', "");
    let common = hex
        .chars()
        .zip(other_hex.chars())
        .take_while(|(a, b)| a == b)
        .count();
    if common >= 4 {
        // Made the same minute, they begin alike: a beginning both share is refused, naming them.
        let both = run(&["sessions", "show", &hex[..common]]);
        let said = String::from_utf8_lossy(&both.stderr);
        assert_eq!(both.status.code(), Some(1), "{said}");
        assert!(
            said.contains("matches 2 sessions") && said.contains("another"),
            "{said}"
        );
    }
    // Renamed by its short id; the history says from what, to what, and who.
    let renamed = stdout_json(&run(&[
        "sessions",
        "rename",
        short,
        "the build, fixed",
        "-o",
        "json",
    ]));
    assert_eq!(renamed["title"], "the build, fixed");
    let events = stdout_json(&run(&["sessions", "show", short, "-o", "json"]));
    assert_eq!(events["session"]["title"], "the build, fixed");
    let empty = run(&["sessions", "rename", short, "  "]);
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("title cannot be empty"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    let none = run(&["sessions", "show", "0000ffff0000"]);
    let said = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no session's id begins or ends with 0000ffff0000"),
        "{said}"
    );
    let junk = run(&["sessions", "show", "not-an-id"]);
    assert!(
        String::from_utf8_lossy(&junk.stderr).contains("not a session id"),
        "{}",
        String::from_utf8_lossy(&junk.stderr)
    );

    // Statuses by their stored names or the words the tables show (`ended` is dead).
    for status in ["dead", "ended"] {
        let filtered = stdout_json(&run(&[
            "sessions", "list", "--status", status, "-o", "json",
        ]));
        assert_eq!(filtered, serde_json::json!([]), "{status}");
    }

    // Diagnose: the advice first, then what it rests on; JSON has every part.
    let diag = run(&["sessions", "diagnose", &id]);
    let text = String::from_utf8_lossy(&diag.stdout);
    assert!(diag.status.success(), "{text}");
    assert!(text.starts_with("What to do\n  - "), "{text}");
    assert!(
        text.contains("Phase history") && text.contains("creating_sandbox"),
        "{text}"
    );
    let diag = stdout_json(&run(&["sessions", "diagnose", &id, "-o", "json"]));
    assert_eq!(diag["session"]["id"], id.as_str());
    assert!(
        diag["advice"].as_array().is_some_and(|a| !a.is_empty()),
        "{diag}"
    );

    // A budget of its own, by its short id; a word that is no amount is refused, in words.
    let budgeted = stdout_json(&run(&["sessions", "budget", short, "$5", "-o", "json"]));
    assert_eq!(budgeted["budget_usd"], 5.0, "{budgeted}");
    let bad = run(&["sessions", "budget", short, "lots"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"lots\" is not an amount of USD"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let lifted = stdout_json(&run(&["sessions", "budget", short, "none", "-o", "json"]));
    assert_eq!(lifted["budget_usd"], Value::Null, "{lifted}");
    // A fork at the first message: a new session that says where it came from.
    let fork = stdout_json(&run(&[
        "sessions", "fork", short, "--at", "1", "-o", "json",
    ]));
    assert_eq!(fork["parent_id"], id.as_str(), "{fork}");
    assert_eq!(fork["fork_seq"], 1, "{fork}");
    assert_ne!(fork["id"], id.as_str());

    // The commands: suspended while still being created, a resume of what is not suspended is
    // refused with the reason (and changes nothing).
    let suspended = stdout_json(&run(&["sessions", "suspend", &id, "-o", "json"]));
    assert_eq!(suspended["phase"], "suspending");
    let bad = run(&["sessions", "resume", &id]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("cannot resume session")
            && String::from_utf8_lossy(&bad.stderr).contains("it is creating"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // (a newer command replaces it: each is taken in, in order)
    let restarted = stdout_json(&run(&["sessions", "restart", short, "-o", "json"]));
    assert_eq!(restarted["phase"], "restarting", "{restarted}");
    let bad = run(&["sessions", "abort", &id]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no turn is running"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let ended = stdout_json(&run(&["sessions", "end", &id, "-o", "json"]));
    assert_eq!(ended["phase"], "ending");

    let bad = run(&["sessions", "show", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"nope\" not found (not a session id"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = run(&["sessions", "create", "--agent", "ghost"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("unknown agent \"ghost\"; known agents: opencode")
    );
    let bad = run(&["sessions", "create", "--env", "PATH=/x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("reserved"));
    let bad = run(&["sessions", "list", "--status", "zombie"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown session status \"zombie\""));
}

#[test]
fn agents_list_and_migrate() {
    let root = tempfile::tempdir().unwrap();
    let agents = stdout_json(&run(root.path(), &["agents", "list", "-o", "json"], None));
    assert_eq!(agents[0]["id"], "opencode");
    assert_eq!(agents[0]["idle_timeout"], "30m");
    let out = run(root.path(), &["migrate"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema is up to date"));
}

#[test]
fn the_cockpit_without_a_terminal_says_what_to_use_instead() {
    let root = tempfile::tempdir().unwrap();
    let out = run(root.path(), &[], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the cockpit needs a terminal"), "{err}");
    assert!(err.contains("agentdeck sessions list"), "{err}");
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let root = tempfile::tempdir().unwrap();
    let out = run(root.path(), &["serve", "--listen", "0.0.0.0:0"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0 with auth off"),
        "{err}"
    );
}

#[test]
fn doctor_says_what_is_wrong_and_how_to_fix_it() {
    let root = tempfile::tempdir().unwrap();
    let out = run(
        root.path(),
        &["doctor", "-o", "json"],
        Some("postgres://nobody@127.0.0.1:1/none"),
    );
    assert_eq!(out.status.code(), Some(1));
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let store = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "store")
        .unwrap();
    assert_eq!(store["ok"], false);
    assert!(
        store["fix"].as_str().unwrap().contains("start Postgres"),
        "{store}"
    );
    let ok = run(root.path(), &["doctor", "-o", "json"], None);
    let checks: Value = serde_json::from_slice(&ok.stdout).unwrap();
    let store = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "store")
        .unwrap();
    assert_eq!(store["ok"], true, "{store}");
}

/// `doctor` checks what the cockpit and the runtime check: keys that clash (the cockpit will
/// not start) and an agent with no image on Kubernetes (every session of it fails). It said
/// `ok config` for both.
#[test]
fn doctor_checks_what_the_cockpit_and_the_runtime_refuse() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agentdeck.toml");
    std::fs::write(
        &config,
        "[runtime]\nkind = \"kubernetes\"\n\
         [tui.keys]\nrestart = [\"q\"]\n\
         [agents.coder]\nmodel = \"m\"\ncommand = [\"opencode\"]\n",
    )
    .unwrap();
    let out = agentdeck(root.path())
        .args(["doctor", "-o", "json"])
        .env("AGENTDECK_CONFIG", &config)
        .env("KUBECONFIG", root.path().join("no-kubeconfig"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {checks}"))
    };
    let keys = find("config ([tui] keys)");
    assert_eq!(keys["ok"], false, "{keys}");
    assert!(keys["detail"].as_str().unwrap().contains("\"q\""), "{keys}");
    let coder = find("agent (coder)");
    assert_eq!(coder["ok"], false, "{coder}");
    assert!(
        coder["detail"].as_str().unwrap().contains("has no image"),
        "{coder}"
    );
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "config"),
        "no `ok config` beside them: {checks}"
    );
}

/// A store that is not there is said in words, once: "connection refused" (it said "pool
/// timed out while waiting for an open connection", twice, after 10 s of nothing).
#[test]
fn a_store_that_is_not_there_is_said_once_in_words() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let out = run(root.path(), &["sessions", "list"], Some(&url));
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.matches("connection refused").count(), 1, "{said}");
    assert!(said.contains("is Postgres running?"), "{said}");
    assert!(!said.contains("pool timed out"), "{said}");
}

#[test]
fn bad_config_files_are_refused_with_file_line_and_column() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10);
    let root = tempfile::tempdir().unwrap();
    for fixture in fixtures {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{} needs a first line `# expect: LINE:COL: message`",
                    fixture.display()
                )
            });
        let out = run(
            root.path(),
            &["--config", fixture.to_str().unwrap(), "agents", "list"],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} was accepted",
            fixture.display()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:{expect}", fixture.display());
        assert!(
            err.contains(&want),
            "{}:\n  want {want:?}\n  got  {err}",
            fixture.display()
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = run(
        root.path(),
        &["--config", "/nonexistent/agentdeck.toml", "agents", "list"],
        None,
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read the config file /nonexistent/agentdeck.toml")
    );
}

#[test]
fn a_user_config_file_in_the_xdg_dir_is_read() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("config/agentdeck");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[agents.reviewer]\nmodel = \"litellm/mock-gpt\"\n",
    )
    .unwrap();
    let agents = stdout_json(&run(root.path(), &["agents", "list", "-o", "json"], None));
    let ids: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["opencode", "reviewer"]);
}

/// Through the real binary: `CONTAINER_ENV_X` in agentdeck's environment reaches a local
/// sandbox as `X`, the session's env vars win, and agentdeck's own secrets stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_env_reaches_a_local_sandbox_and_nothing_else_does() {
    agentdeck::net::ensure_crypto();
    let root = tempfile::tempdir().unwrap();
    let script = root.path().join("dump_env.py");
    std::fs::write(
        &script,
        "import json, os, sys, time\njson.dump(dict(os.environ), open('env.json', 'w'))\ntime.sleep(60)\n",
    )
    .unwrap();
    let config = root.path().join("agentdeck.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.dumper]\nmodel = \"litellm/mock-gpt\"\ncommand = [\"python3\", \"{}\", \"{{port}}\"]\nenv = {{ FROM_AGENT = \"agent\", OVERRIDDEN = \"agent\" }}\n[sessions]\nphase_timeout = \"3s\"\n",
            script.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut cmd = agentdeck(root.path());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("AGENTDECK_CONFIG", &config)
        .env("CONTAINER_ENV_GITHUB_TOKEN", "from-container-env")
        .env("CONTAINER_ENV_OVERRIDDEN", "container")
        .env("AGENTDECK_GATEWAY_MASTER_KEY", "sk-master-must-not-leak")
        .env("DATABASE_PASSWORD", "must-not-leak")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _serve = Serve(cmd.spawn().unwrap());
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "serve to answer", || {
        let http = http.clone();
        let url = format!("{base}/healthz");
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    let created: Value = http
        .post(format!("{base}/api/sessions"))
        .json(&serde_json::json!({"agent_id": "dumper", "env_vars": {"OVERRIDDEN": "session"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let dump = root
        .path()
        .join(format!("data/agentdeck/sandboxes/{id}/env.json"));
    let env: Value = eventually(
        Duration::from_secs(20),
        "the sandbox to dump its env",
        || {
            let dump = dump.clone();
            async move { serde_json::from_slice(&std::fs::read(&dump).ok()?).ok() }
        },
    )
    .await;
    assert_eq!(env["GITHUB_TOKEN"], "from-container-env");
    assert_eq!(env["FROM_AGENT"], "agent");
    assert_eq!(
        env["OVERRIDDEN"], "session",
        "session > agent > CONTAINER_ENV_"
    );
    assert!(env.get("CONTAINER_ENV_GITHUB_TOKEN").is_none());
    assert!(env.get("AGENTDECK_GATEWAY_MASTER_KEY").is_none());
    assert!(env.get("DATABASE_PASSWORD").is_none());
    assert!(
        env["HOME"].as_str().unwrap().contains(id),
        "{}",
        env["HOME"]
    );

    // With no harness answering, the session fails with the reason once the phase times out.
    let failed = eventually(Duration::from_secs(30), "the session to fail", || {
        let http = http.clone();
        let url = format!("{base}/api/sessions/{id}");
        async move {
            let s: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (s["status"] == "failed").then_some(s)
        }
    })
    .await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("not ready within 3s"),
        "{failed}"
    );
    // Ending it removes the sandbox and its process.
    http.delete(format!("{base}/api/sessions/{id}"))
        .send()
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the sandbox folder to go", || {
        let dir = dump.parent().unwrap().to_path_buf();
        async move { (!dir.exists()).then_some(()) }
    })
    .await;
}

/// `sessions asks` lists what the agent waits for; `sessions answer` refuses a malformed answer
/// with the reason, and an answer the agent cannot be given (here: no sandbox) leaves the ask
/// waiting, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_are_listed_and_an_answer_that_cannot_be_given_loses_nothing() {
    let db = TestDb::sqlite();
    let root = tempfile::tempdir().unwrap();
    let url = db.url().to_string();
    asks_and_answers(&|args| run(root.path(), args, Some(&url)), &url).await;
}

/// The same through `serve` (`--server`, a team's token), on the same kind of store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_are_listed_and_answered_through_serve() {
    let db = TestDb::sqlite();
    let root = tempfile::tempdir().unwrap();
    let url = db.url().to_string();
    let (_serve, server) = serve_with_a_token_on(root.path(), Some(&url));
    let client = root.path().join("client");
    let run = |args: &[&str]| {
        agentdeck(&client)
            .args(["--server", &server])
            .args(args)
            .env("AGENTDECK_TOKEN", "red-team-token-0123456789")
            .output()
            .expect("run agentdeck")
    };
    asks_and_answers(&run, &url).await;
}

async fn asks_and_answers(run: Run<'_>, url: &str) {
    let created = stdout_json(&run(&[
        "sessions", "create", "--title", "asks", "-o", "json",
    ]));
    let id = created["id"].as_str().unwrap().to_string();
    let store = agentdeck::store::open(url).await.unwrap();
    store
        .record_ask(
            id.parse().unwrap(),
            &agentdeck::model::NewAsk {
                id: "per_cli1".into(),
                kind: agentdeck::model::AskKind::Permission,
                title: "bash".into(),
                detail: serde_json::json!({"patterns": ["rm -rf \u{1b}[31mbuild"]}),
            },
        )
        .await
        .unwrap();
    let table = run(&["sessions", "asks", &id, "--pending"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        text.contains("per_cli1") && text.contains("pending"),
        "{text}"
    );
    assert!(text.contains("bash wants to run: rm -rf"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "agent text is sanitised: {text:?}"
    );

    let bad = run(&["sessions", "answer", &id, "per_cli1", "--reply", "maybe"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown permission reply \"maybe\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let both = run(&[
        "sessions", "answer", &id, "per_cli1", "--reply", "once", "--label", "x",
    ]);
    assert_eq!(both.status.code(), Some(1));
    let wrong = run(&["sessions", "answer", &id, "per_cli1", "--label", "x"]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("is a permission request"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let unreachable = run(&["sessions", "answer", &id, "per_cli1", "--reply", "once"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("no sandbox"),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    // A question of two parts takes one --label for each, in order.
    store
        .record_ask(
            id.parse().unwrap(),
            &agentdeck::model::NewAsk {
                id: "que_cli2".into(),
                kind: agentdeck::model::AskKind::Question,
                title: "Region".into(),
                detail: serde_json::json!({"questions": [
                    {"question": "Which region?", "options": [{"label": "eu-west"}]},
                    {"question": "How many?", "options": [{"label": "3"}]}
                ]}),
            },
        )
        .await
        .unwrap();
    let one = run(&["sessions", "answer", &id, "que_cli2", "--label", "eu-west"]);
    assert!(
        String::from_utf8_lossy(&one.stderr).contains("asks 2 question(s)"),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let two = run(&[
        "sessions", "answer", &id, "que_cli2", "--label", "eu-west", "--label", "3",
    ]);
    assert!(
        String::from_utf8_lossy(&two.stderr).contains("no sandbox"),
        "both parts answered: only the harness is missing: {}",
        String::from_utf8_lossy(&two.stderr)
    );
    let still = stdout_json(&run(&["sessions", "asks", &id, "--pending", "-o", "json"]));
    assert_eq!(still.as_array().map(Vec::len), Some(2), "{still}");
    assert_eq!(still[0]["answered_by"], Value::Null);
    let shown = stdout_json(&run(&["sessions", "show", &id, "-o", "json"]));
    assert_eq!(shown["session"]["waiting"], 2, "both still wait");

    // No sandbox yet: no shell, and it says why.
    let shell = run(&["sessions", "shell", &id]);
    assert_eq!(shell.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&shell.stderr).contains("nothing to open a shell in"),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
}

/// The `sessions` commands through `serve` (`--server`, a team's token): the same commands,
/// read and done through the REST API, limited to the token's team; a wrong token is one
/// sentence and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_commands_through_serve() {
    agentdeck::net::ensure_crypto();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = root.path().join("serve.toml");
    std::fs::write(
        &config,
        "[[api.tokens]]\ntoken = \"red-team-token-0123456789\"\nteam = \"red\"\nname = \"alice\"\n\
         [[api.tokens]]\ntoken = \"blue-team-token-0123456789\"\nteam = \"blue\"\n\
         [agents.coder]\nmodel = \"m\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let server_root = root.path().join("server");
    let mut cmd = agentdeck(&server_root);
    cmd.args([
        "serve",
        "--no-worker",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("AGENTDECK_CONFIG", &config)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _serve = Serve(cmd.spawn().expect("start serve"));
    let url = format!("http://127.0.0.1:{port}");
    let client = root.path().join("client");
    let as_team = |token: &str, args: &[&str]| {
        agentdeck(&client)
            .args(["--server", &url])
            .args(args)
            .env("AGENTDECK_TOKEN", token)
            .output()
            .unwrap()
    };
    eventually(Duration::from_secs(20), "serve to answer", || async {
        as_team("red-team-token-0123456789", &["sessions", "list"])
            .status
            .success()
            .then_some(())
    })
    .await;
    let made = as_team(
        "red-team-token-0123456789",
        &[
            "sessions", "create", "--agent", "coder", "--title", "red work", "-o", "json",
        ],
    );
    let made = stdout_json(&made);
    assert_eq!(made["team"], "red");
    let id = made["id"].as_str().unwrap().to_string();
    let theirs = stdout_json(&as_team(
        "blue-team-token-0123456789",
        &[
            "sessions",
            "create",
            "--agent",
            "coder",
            "--title",
            "blue work",
            "-o",
            "json",
        ],
    ));
    let listed = stdout_json(&as_team(
        "red-team-token-0123456789",
        &["sessions", "list", "-o", "json"],
    ));
    let titles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["title"].as_str())
        .collect();
    assert_eq!(titles, ["red work"], "red's only: {listed}");
    let shown = stdout_json(&as_team(
        "red-team-token-0123456789",
        &["sessions", "show", &id, "-o", "json"],
    ));
    assert_eq!(shown["session"]["id"], id.as_str());
    // Blue's session does not exist for red.
    let out = as_team(
        "red-team-token-0123456789",
        &["sessions", "show", theirs["id"].as_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let ended = stdout_json(&as_team(
        "red-team-token-0123456789",
        &["sessions", "end", &id, "-o", "json"],
    ));
    assert_eq!(ended["id"], id.as_str());
    // Nothing of the store or the cluster is needed here: the client's own folder holds no
    // database.
    assert!(!client.join("data/agentdeck/agentdeck.db").exists());
    let wrong = as_team("not-a-token-0123456789", &["sessions", "list"]);
    assert_eq!(wrong.status.code(), Some(1));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("unknown token"), "{said}");
    assert_eq!(said.lines().count(), 1, "one sentence: {said}");

    // Servers by name, from the client's config: its token from the variable it names; the
    // one configured server is the default.
    let client_config = root.path().join("client.toml");
    std::fs::write(
        &client_config,
        format!("[[servers]]\nname = \"red-eu\"\nurl = \"{url}\"\ntoken_env = \"RED_TOKEN\"\n"),
    )
    .unwrap();
    let by_config = |args: &[&str]| {
        agentdeck(&client)
            .args(args)
            .env("AGENTDECK_CONFIG", &client_config)
            .env("RED_TOKEN", "red-team-token-0123456789")
            .output()
            .unwrap()
    };
    for args in [
        &["--server", "red-eu", "sessions", "list", "-o", "json"][..],
        &["sessions", "list", "-o", "json"][..],
    ] {
        let listed = stdout_json(&by_config(args));
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(1),
            "{args:?}: {listed}"
        );
    }
    let unknown = by_config(&["--server", "us", "sessions", "list"]);
    assert_eq!(unknown.status.code(), Some(1));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("named: red-eu"), "{said}");
}

/// `serve` terminates TLS itself (`--tls-cert`, `--tls-key`), and a client trusts it through
/// `--ca-file` (or the system's roots); a certificate it cannot trust is refused, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_tls_and_a_client_that_verifies_it() {
    agentdeck::net::ensure_crypto();
    let root = tempfile::tempdir().unwrap();
    let (cert, key) = (root.path().join("cert.pem"), root.path().join("key.pem"));
    let ca = root.path().join("ca.pem");
    // A CA of the test's own and a certificate for this machine signed by it (openssl is
    // there: the tests' cluster makes its own the same way).
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(root.path())
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        root.path().join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "leaf.ext",
    ]);
    let port = free_port();
    let config = root.path().join("serve.toml");
    std::fs::write(
        &config,
        "[[api.tokens]]\ntoken = \"red-team-token-0123456789\"\nteam = \"red\"\n",
    )
    .unwrap();
    let mut cmd = agentdeck(&root.path().join("server"));
    cmd.args([
        "serve",
        "--no-worker",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--tls-cert")
    .arg(&cert)
    .arg("--tls-key")
    .arg(&key)
    .env("AGENTDECK_CONFIG", &config)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _serve = Serve(cmd.spawn().expect("start serve"));
    let url = format!("https://127.0.0.1:{port}");
    let client = root.path().join("client");
    let list = |ca: Option<&Path>| {
        let mut cmd = agentdeck(&client);
        cmd.args(["--server", &url, "sessions", "list"])
            .env("AGENTDECK_TOKEN", "red-team-token-0123456789");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().unwrap()
    };
    eventually(
        Duration::from_secs(20),
        "serve to answer over TLS",
        || async { list(Some(&ca)).status.success().then_some(()) },
    )
    .await;
    let untrusted = list(None);
    assert_eq!(untrusted.status.code(), Some(1));
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(said.contains("certificate is not trusted here"), "{said}");
    assert!(said.contains("--ca-file"), "{said}");
    // Plain HTTP to it is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

/// `sessions follow ID`: the last messages, then each new one as it comes, directly on the
/// store and through `serve`.
#[test]
fn sessions_follow_shows_what_comes() {
    let root = tempfile::tempdir().unwrap();
    let direct = |args: &[&str]| {
        let mut cmd = agentdeck(root.path());
        cmd.args(args);
        cmd
    };
    follow_then_send(&direct);
    let remote_root = tempfile::tempdir().unwrap();
    let (_serve, url) = serve_with_a_token(remote_root.path());
    let client = remote_root.path().join("client");
    let remote = |args: &[&str]| {
        let mut cmd = agentdeck(&client);
        cmd.args(["--server", &url])
            .args(args)
            .env("AGENTDECK_TOKEN", "red-team-token-0123456789");
        cmd
    };
    follow_then_send(&remote);
}

fn follow_then_send(agentdeck: &dyn Fn(&[&str]) -> std::process::Command) {
    use std::io::BufRead;
    let made = stdout_json(
        &agentdeck(&[
            "sessions", "create", "--title", "followed", "--prompt", "hello", "-o", "json",
        ])
        .output()
        .unwrap(),
    );
    let id = made["id"].as_str().unwrap().to_string();
    let mut child = Serve(
        agentdeck(&["sessions", "follow", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |want: &str| {
        let start = std::time::Instant::now();
        while !seen.iter().any(|l: &String| l == want) {
            let left = Duration::from_secs(60).saturating_sub(start.elapsed());
            match lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {want:?} in {seen:?}"),
            }
        }
    };
    wait_for("#1 user: hello");
    let sent = agentdeck(&["sessions", "send", &id, "and now this"])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    wait_for("#2 user: and now this");
    drop(child);
}
