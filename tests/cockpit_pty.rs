//! The whole cockpit in a real terminal: the binary runs in tmux (`send-keys`, `capture-pane`)
//! on the embedded store, with the real agent stack when it is there. Start, create a session,
//! attach, type a message, go back, filter, quit.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "deck"];
        args.extend_from_slice(keys);
        self.run(&args);
    }
    fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", "deck", "-l", text]);
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "deck"])
    }
    /// Waits until the screen shows `want`; panics with the screen otherwise.
    fn wait_for(&self, want: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(want) {
                return screen;
            }
            if start.elapsed() > timeout {
                panic!("the screen never showed {want:?}; it shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// How a cockpit is started in tmux: its terminal, size, extra environment and arguments.
struct Launch<'a> {
    stack: Option<&'a common::stack::Stack>,
    env: &'a str,
    args: &'a str,
    term: &'a str,
    size: (u16, u16),
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            stack: None,
            env: "",
            args: "",
            term: "tmux-256color",
            size: (100, 30),
        }
    }
}

fn start(root: &Path, stack: Option<&common::stack::Stack>) -> Tmux {
    launch(
        root,
        Launch {
            stack,
            ..Launch::default()
        },
    )
}

/// Starts the cockpit in a tmux server of its own (one server per test, so a test never races
/// another server's shutdown).
fn launch(root: &Path, how: Launch<'_>) -> Tmux {
    let tmux = Tmux {
        socket: format!("agentdeck-test-{}", uuid::Uuid::new_v4().simple()),
    };
    let bin = common::binary();
    let path = how.stack.map_or_else(
        || std::env::var("PATH").unwrap_or_default(),
        |s| s.path.clone(),
    );
    let gateway = how
        .stack
        .map_or_else(String::new, |s| s.gateway_url.clone());
    let r = root.display();
    let command = format!(
        "env -u NO_COLOR HOME={r} XDG_CONFIG_HOME={r}/config XDG_DATA_HOME={r}/data XDG_STATE_HOME={r}/state \
         XDG_CACHE_HOME={r}/cache PATH='{path}' AGENTDECK_GATEWAY_URL='{gateway}' TERM={term} {env} \
         {bin} {args}; echo EXITED $?; sleep 60",
        term = how.term,
        env = how.env,
        bin = bin.display(),
        args = how.args,
    );
    let (x, y) = (how.size.0.to_string(), how.size.1.to_string());
    let out = Command::new("tmux")
        .args([
            "-L",
            &tmux.socket,
            "new-session",
            "-d",
            "-s",
            "deck",
            "-x",
            &x,
            "-y",
            &y,
        ])
        .arg(&command)
        .output()
        .expect("tmux");
    assert!(
        out.status.success(),
        "tmux new-session failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tmux
}

#[test]
fn start_create_attach_talk_filter_quit() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let stack = common::stack::stack();
    let root = tempfile::tempdir().unwrap();
    let tmux = start(root.path(), stack.as_ref());
    let wait = Duration::from_secs(20);
    let screen = tmux.wait_for("No sessions yet. Press n to start one.", wait);
    assert!(screen.contains("? help"), "hints on screen:\n{screen}");

    // Create a session with a first message.
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text("pty check");
    tmux.keys(&["Tab"]);
    tmux.text("hello from tmux");
    tmux.keys(&["C-s"]);
    // In the list (the dialog showed the title as it was typed): the session is there to attach.
    tmux.wait_for("Sessions (1)", wait);
    tmux.wait_for("pty check", wait);

    // Attach and talk.
    tmux.keys(&["Enter"]);
    tmux.wait_for("> you  #1", wait);
    if stack.is_some() {
        tmux.wait_for("Hello from mock", Duration::from_secs(90));
        tmux.wait_for("o idle", Duration::from_secs(30));
    }
    tmux.keys(&["i"]);
    tmux.wait_for("ctrl-s send", wait);
    tmux.text("second message");
    tmux.keys(&["C-s"]);
    tmux.wait_for("second message", wait);
    if stack.is_some() {
        let start = Instant::now();
        while tmux.screen().matches("Hello from mock").count() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "no second answer:\n{}",
                tmux.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Search the transcript: `/`, the text, enter; `n` moves on.
    tmux.keys(&["/"]);
    tmux.text("second");
    tmux.keys(&["Enter"]);
    tmux.wait_for("search \"second\"", wait);
    tmux.wait_for("match 1 of 1", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("match 1 of 1", wait);

    // Back, filter, quit.
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sessions (1)", wait);
    tmux.keys(&["/"]);
    tmux.text("status:nosuch");
    tmux.wait_for("No session matches the filter", wait);
    tmux.keys(&["Escape"]);
    tmux.keys(&["/"]);
    tmux.keys(&["C-u"]);
    tmux.text("pty");
    tmux.keys(&["Enter"]);
    tmux.wait_for("filter: pty", wait);
    // The other screens, on the selected session: sandboxes, its log, diagnose.
    tmux.keys(&["h"]);
    tmux.wait_for("Sandboxes (", wait);
    tmux.keys(&["Escape"]);
    tmux.keys(&["l"]);
    tmux.wait_for("Log · pty check", wait);
    tmux.keys(&["s"]);
    tmux.wait_for("last 5 minutes", wait);
    tmux.keys(&["Escape"]);
    tmux.keys(&["d"]);
    tmux.wait_for("What to do", wait);
    tmux.wait_for("Phase history", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("filter: pty", wait);
    tmux.keys(&["s"]);
    tmux.wait_for("sorted by activity", wait);
    tmux.keys(&["?"]);
    tmux.wait_for("On this screen", wait);
    tmux.keys(&["Escape"]);
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("EXITED 0", wait);
    assert!(
        !screen.contains("agentdeck 1 sessions"),
        "the alternate screen is gone after quitting:\n{screen}"
    );
}

#[test]
fn read_only_and_no_color() {
    let root = tempfile::tempdir().unwrap();
    let tmux = launch(
        root.path(),
        Launch {
            env: "NO_COLOR=1",
            args: "--read-only",
            term: "screen",
            size: (80, 24),
            ..Launch::default()
        },
    );
    let screen = tmux.wait_for("[read-only]", Duration::from_secs(20));
    assert!(
        !screen.contains("X end") && !screen.contains("R restart"),
        "no dangerous action offered:\n{screen}"
    );
    // No colour escape was drawn: capture with escapes and look for SGR colour codes.
    let raw = tmux.run(&["capture-pane", "-p", "-e", "-t", "deck"]);
    // Resets to the default colours (39, 49) are fine; any foreground or background colour is not.
    let coloured = raw.replace("\u{1b}[39m", "").replace("\u{1b}[49m", "");
    for code in ["\u{1b}[3", "\u{1b}[4", "\u{1b}[9", "\u{1b}[10"] {
        assert!(
            !coloured.contains(code),
            "colour under NO_COLOR ({code:?}):\n{raw:?}"
        );
    }
    assert!(
        raw.contains("\u{1b}[1m"),
        "meaning still carried by weight and glyphs"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", Duration::from_secs(20));
}

#[test]
fn a_draft_outlives_a_dropped_connection() {
    let root = tempfile::tempdir().unwrap();
    let wait = Duration::from_secs(20);
    let tmux = start(root.path(), None);
    tmux.wait_for("No sessions yet", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text("drafty");
    tmux.keys(&["C-s"]);
    tmux.wait_for("Sessions (1)", wait);
    tmux.keys(&["Enter"]);
    tmux.keys(&["i"]);
    tmux.wait_for("ctrl-s send", wait);
    tmux.text("words not yet sent");
    tmux.wait_for("words not yet sent", wait);
    // Saved within a second; then the connection drops (tmux goes, the cockpit gets SIGHUP).
    std::thread::sleep(Duration::from_millis(2500));
    drop(tmux);
    let saved = std::fs::read_to_string(root.path().join("state/agentdeck/drafts.json"))
        .expect("the draft is saved in the state dir");
    assert!(saved.contains("words not yet sent"), "{saved}");

    // A new cockpit on the same store: the draft is back on `i`.
    let tmux = start(root.path(), None);
    tmux.wait_for("Sessions (1)", wait);
    tmux.keys(&["Enter"]);
    tmux.keys(&["i"]);
    tmux.wait_for("words not yet sent", wait);
}

/// The store stops answering the cockpit's first read of the sessions (here: the table is
/// renamed away on a real Postgres): the cockpit says so and reads again until it can,
/// rather than showing an empty list as if there were no sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_once_the_store_answers_again() {
    let db = common::TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let url = db.url().to_string();
    let made = Command::new(common::binary())
        .args(["sessions", "create", "--title", "kept through it"])
        .env("AGENTDECK_DATABASE_URL", &url)
        .env("HOME", root.path())
        .env("XDG_CONFIG_HOME", root.path().join("config"))
        .env("XDG_DATA_HOME", root.path().join("data"))
        .env("XDG_STATE_HOME", root.path().join("state"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE sessions RENAME TO sessions_away")
        .execute(&pool)
        .await
        .unwrap();

    let env = format!("AGENTDECK_DATABASE_URL='{url}'");
    let tmux = launch(
        root.path(),
        Launch {
            env: &env,
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(20);
    let screen = tmux.wait_for("cannot list sessions (trying again", wait);
    assert!(screen.contains("Loading sessions…"), "{screen}");
    assert!(!screen.contains("No sessions yet"), "{screen}");

    sqlx::query("ALTER TABLE sessions_away RENAME TO sessions")
        .execute(&pool)
        .await
        .unwrap();
    tmux.wait_for("kept through it", wait);
    tmux.wait_for("Sessions (1)", wait);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// `!` gives the terminal to a shell in the session's sandbox (its working folder, with the
/// sandbox's env) and takes it back intact when the shell exits.
#[test]
fn a_shell_in_the_sandbox_and_back() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let tmux = launch(
        root.path(),
        Launch {
            stack: Some(&stack),
            env: "SHELL=/bin/sh",
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(20);
    tmux.wait_for("No sessions yet. Press n to start one.", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text("shell check");
    tmux.keys(&["C-s"]);
    tmux.wait_for("Sessions (1)", wait);
    tmux.wait_for("+ ready", Duration::from_secs(90));

    tmux.keys(&["!"]);
    tmux.wait_for("a shell in", wait);
    tmux.text("echo \"where=$PWD id=$AGENTDECK_SESSION_ID\"");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("where=", wait);
    assert!(
        screen.contains("/data/agentdeck/sandboxes/"),
        "the shell starts in the sandbox's folder:\n{screen}"
    );
    assert!(
        screen.contains("id=01"),
        "with the sandbox's env:\n{screen}"
    );
    tmux.text("exit");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the shell ended", wait);
    assert!(
        screen.contains("shell check"),
        "the cockpit is back:\n{screen}"
    );
    // Keys reach the cockpit again.
    tmux.keys(&["?"]);
    tmux.wait_for("On this screen", wait);
    tmux.keys(&["Escape"]);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}
