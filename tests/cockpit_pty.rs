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
        self.wait_until(&format!("{want:?}"), timeout, |screen| {
            screen.contains(want)
        })
    }
    /// Waits until the screen is `what` says (`shows`); panics with the screen otherwise.
    fn wait_until(&self, what: &str, timeout: Duration, shows: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if shows(&screen) {
                return screen;
            }
            if start.elapsed() > timeout {
                panic!("the screen never showed {what}; it shows:\n{screen}");
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
        "env -u NO_COLOR -u AGENTDECK_SERVER -u AGENTDECK_TOKEN -u AGENTDECK_CA_FILE HOME={r} XDG_CONFIG_HOME={r}/config XDG_DATA_HOME={r}/data XDG_STATE_HOME={r}/state \
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
    start_create_attach_talk_filter_quit_in(Mode::Direct);
}

/// The same, the cockpit a client of `serve` (`--server`, a team's token): every screen the
/// same through the REST API (the sandboxes, the log, diagnose included).
#[test]
fn start_create_attach_talk_filter_quit_through_serve() {
    start_create_attach_talk_filter_quit_in(Mode::Remote);
}

fn start_create_attach_talk_filter_quit_in(mode: Mode) {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let stack = common::stack::stack();
    let root = tempfile::tempdir().unwrap();
    let served = (mode == Mode::Remote).then(|| serve_for_teams(root.path(), stack.as_ref()));
    let args = served
        .as_ref()
        .map_or_else(String::new, |(_, url)| format!("--server {url}"));
    let tmux = launch(
        &root.path().join("cockpit"),
        Launch {
            stack: stack.as_ref(),
            env: match mode {
                Mode::Direct => "",
                Mode::Remote => "AGENTDECK_TOKEN=red-team-token-0123456789",
            },
            args: &args,
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
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
    // (the filter's input closed before the next key: an escape and a key close behind it
    // read as one alt-key under load)
    tmux.wait_for("/ filter  s sort", wait);
    tmux.keys(&["/"]);
    tmux.keys(&["C-u"]);
    tmux.text("pty");
    tmux.keys(&["Enter"]);
    tmux.wait_for("filter: pty", wait);
    // The other screens, on the selected session, and esc walks back through them: the
    // sandboxes, its log opened from there, its diagnosis, back to the sandboxes, then the list.
    tmux.keys(&["h"]);
    tmux.wait_for("Sandboxes (", wait);
    tmux.keys(&["l"]);
    tmux.wait_for("Log · pty check", wait);
    tmux.keys(&["s"]);
    tmux.wait_for("last 5 minutes", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sandboxes (", wait);
    tmux.keys(&["d"]);
    tmux.wait_for("What to do", wait);
    tmux.wait_for("Phase history", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sandboxes (", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("filter: pty", wait);
    tmux.keys(&["s"]);
    tmux.wait_for("sorted by activity", wait);
    tmux.keys(&["?"]);
    tmux.wait_for("On this screen", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_until("the help closed", wait, |s| !s.contains("On this screen"));
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
    let screen = tmux.wait_for("[read-only]", Duration::from_secs(60));
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
    // Nothing acts: `n` opens no new session, and `:new` typed in the command line is refused
    // with the reason.
    tmux.keys(&["n"]);
    tmux.keys(&[":"]);
    tmux.text("new");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("read-only: this cockpit", Duration::from_secs(60));
    assert!(
        !screen.contains("New session"),
        "a read-only cockpit opened the new-session dialog:\n{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", Duration::from_secs(60));
}

/// Something else writes over the cockpit's screen (line noise, a `wall`, a program on the same
/// terminal): Ctrl-L draws it whole again, as a terminal program's users expect.
#[test]
fn ctrl_l_draws_a_garbled_screen_again() {
    let root = tempfile::tempdir().unwrap();
    let tmux = start(root.path(), None);
    tmux.wait_for("Sessions", Duration::from_secs(60));
    let tty = tmux.run(&["display-message", "-p", "-t", "deck", "#{pane_tty}"]);
    // Written straight to the pane's terminal, over the cockpit's frame: the cockpit does not
    // know, so its next frames leave the noise where nothing of theirs changed.
    let noise = format!("\x1b[5;1H{}", "GARBLED-NOISE ".repeat(40));
    std::fs::write(tty.trim(), noise).expect("write to the pane's tty");
    tmux.wait_for("GARBLED-NOISE", Duration::from_secs(60));
    tmux.keys(&["C-l"]);
    tmux.wait_until("the screen whole again", Duration::from_secs(60), |s| {
        !s.contains("GARBLED-NOISE") && s.contains("Sessions")
    });
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", Duration::from_secs(60));
}

#[test]
fn a_draft_outlives_a_dropped_connection() {
    let root = tempfile::tempdir().unwrap();
    let wait = Duration::from_secs(60);
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
    let made = common::agentdeck(root.path())
        .args(["sessions", "create", "--title", "kept through it"])
        .env("AGENTDECK_DATABASE_URL", &url)
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
    let wait = Duration::from_secs(60);
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

/// The list previews the selected session without attaching: its last lines as they come, under
/// the list (beside it on a wide screen); `p` hides and shows it; none under 100 columns.
#[test]
fn the_preview_shows_the_selected_session_as_it_talks() {
    the_preview_shows_the_selected_session_as_it_talks_in(Mode::Direct);
}

/// The same through `serve`: the previewed session's text comes over the API.
#[test]
fn the_preview_shows_the_selected_session_as_it_talks_through_serve() {
    the_preview_shows_the_selected_session_as_it_talks_in(Mode::Remote);
}

fn the_preview_shows_the_selected_session_as_it_talks_in(mode: Mode) {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let (_root, tmux, _served) = scripted_cockpit(&stack, mode, 34, "");
    let wait = Duration::from_secs(90);
    tmux.wait_for("No sessions yet. Press n to start one.", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text("preview check");
    tmux.keys(&["Tab"]);
    tmux.text("hello from the list");
    tmux.keys(&["C-s"]);
    // Never attached: the list and the agent's answer on one screen.
    let screen = tmux.wait_for("Scripted reply to: hello from the list", wait);
    assert!(screen.contains("Sessions (1)"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("hello from the list") && !l.contains("Scripted reply")),
        "the person's message too: {screen}"
    );
    tmux.keys(&["p"]);
    tmux.wait_for("preview off", wait);
    let start = Instant::now();
    while tmux
        .screen()
        .contains("Scripted reply to: hello from the list")
    {
        assert!(start.elapsed() < wait, "{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["p"]);
    tmux.wait_for("Scripted reply to: hello from the list", wait);
    tmux.run(&["resize-window", "-t", "deck", "-x", "90", "-y", "30"]);
    let start = Instant::now();
    while tmux
        .screen()
        .contains("Scripted reply to: hello from the list")
    {
        assert!(
            start.elapsed() < wait,
            "none under 100 columns:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// A cockpit (120 columns, `rows` high) whose default agent is the real opencode on the
/// scripted model, with one session made from the new-session dialog: `title`, and `prompt` as
/// its first message; through `serve` (`--server`, red's token) in [`Mode::Remote`]. Its home
/// (and the server) go with what is returned.
fn scripted_session(
    stack: &common::stack::Stack,
    mode: Mode,
    rows: u16,
    title: &str,
    prompt: &str,
) -> (tempfile::TempDir, Tmux, Option<Served>) {
    let (root, tmux, served) = scripted_cockpit(stack, mode, rows, "");
    let wait = Duration::from_secs(90);
    tmux.wait_for("No sessions yet. Press n to start one.", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text(title);
    tmux.keys(&["Tab"]);
    tmux.text(prompt);
    tmux.keys(&["C-s"]);
    (root, tmux, served)
}

/// A cockpit (120 columns, `rows` high, `config` in its own file) whose default agent is the
/// real opencode on the scripted model: its own, or `serve`'s in [`Mode::Remote`].
fn scripted_cockpit(
    stack: &common::stack::Stack,
    mode: Mode,
    rows: u16,
    config: &str,
) -> (tempfile::TempDir, Tmux, Option<Served>) {
    const SCRIPTED: &str = "[sessions]\ndefault_agent = \"builder\"\n\
         [agents.builder]\nmodel = \"litellm/scripted\"\n\
         command = [\"opencode\", \"serve\", \"--hostname\", \"{host}\", \"--port\", \"{port}\"]\n";
    let root = tempfile::tempdir().unwrap();
    let cockpit = root.path().join("cockpit");
    std::fs::create_dir_all(cockpit.join("config/agentdeck")).unwrap();
    let (own, served) = match mode {
        Mode::Direct => (format!("{SCRIPTED}{config}"), None),
        Mode::Remote => {
            let port = common::free_port();
            let served = serve_with(root.path(), Some(stack), port, None, "serve", SCRIPTED);
            (
                config.to_string(),
                Some((served, format!("--server http://127.0.0.1:{port}"))),
            )
        }
    };
    std::fs::write(cockpit.join("config/agentdeck/config.toml"), own).unwrap();
    let tmux = launch(
        &cockpit,
        Launch {
            stack: Some(stack),
            size: (120, rows),
            env: match mode {
                Mode::Direct => "",
                Mode::Remote => "AGENTDECK_TOKEN=red-team-token-0123456789",
            },
            args: served.as_ref().map_or("", |(_, args)| args.as_str()),
            ..Launch::default()
        },
    );
    (root, tmux, served.map(|(served, _)| served))
}

/// What the agent changed, in the cockpit: `c` on a session whose agent wrote a file shows the
/// file with its counts and its diff (the real opencode's, from the sandbox's git folder).
#[test]
fn c_shows_what_the_agent_changed() {
    c_shows_what_the_agent_changed_in(Mode::Direct);
}

/// The same through `serve`: the diff comes over the REST API.
#[test]
fn c_shows_what_the_agent_changed_through_serve() {
    c_shows_what_the_agent_changed_in(Mode::Remote);
}

fn c_shows_what_the_agent_changed_in(mode: Mode) {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let (_root, tmux, _served) = scripted_session(
        &stack,
        mode,
        34,
        "changes check",
        "run: printf 'made in the cockpit' > made.txt",
    );
    let wait = Duration::from_secs(90);
    tmux.wait_for("Ran it", wait);
    // The turn's diff is said once the turn is over: `c` until the file is there.
    let start = Instant::now();
    loop {
        tmux.keys(&["c"]);
        let screen = tmux.wait_for("changes ·", wait);
        if screen.contains("made.txt +1 -0") {
            break;
        }
        assert!(start.elapsed() < wait, "{screen}");
        std::thread::sleep(Duration::from_millis(500));
        tmux.keys(&["Escape"]);
        tmux.wait_for("Sessions (1)", wait);
    }
    let screen = tmux.wait_for("+made in the cockpit", wait);
    assert!(screen.contains("#1 run: printf"), "{screen}");
    assert!(screen.contains("] next file"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sessions (1)", wait);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// An agent's answer reads as a document: its markdown laid out (the heading without its `#`,
/// bullets, code in a gutter, a table with its rule), `M` shows it as written; the tool call
/// and the turn say how long they took. The real opencode, streaming the scripted model's
/// answers through LiteLLM.
#[test]
fn an_answer_reads_as_markdown_with_its_times() {
    an_answer_reads_as_markdown_with_its_times_in(Mode::Direct);
}

/// The same through `serve`: the text streams over the API's live stream.
#[test]
fn an_answer_reads_as_markdown_with_its_times_through_serve() {
    an_answer_reads_as_markdown_with_its_times_in(Mode::Remote);
}

fn an_answer_reads_as_markdown_with_its_times_in(mode: Mode) {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let (_root, tmux, _served) =
        scripted_session(&stack, mode, 40, "markdown check", "run: echo timed-ok");
    let wait = Duration::from_secs(90);
    tmux.wait_for("Sessions (1)", wait);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Ran it. Output: timed-ok", wait);
    // the call's time, and (the turn over) the turn's
    let timed = |screen: &str, prefix: &str| {
        screen.lines().any(|l| {
            l.find(prefix).is_some_and(|at| {
                let rest = &l[at + prefix.len()..];
                rest.starts_with(|c: char| c.is_ascii_digit()) && rest.contains('s')
            })
        })
    };
    let start = Instant::now();
    while !(timed(&tmux.screen(), "[bash done ") && timed(&tmux.screen(), "turn ")) {
        assert!(start.elapsed() < wait, "no times:\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["i"]);
    tmux.wait_for("ctrl-s send", wait);
    tmux.text("markdown: report please");
    tmux.keys(&["C-s"]);
    let screen = tmux.wait_for("lint  │ ok", wait);
    for shown in [
        "  Build report",
        "The build passes now. What I changed:",
        "• removed the unused import in src/lib.rs",
        "• pinned the toolchain",
        "│ fn main() { let answer = 42; }",
        "check │ result",
        "──────┼───────",
    ] {
        assert!(
            screen.contains(shown),
            "{shown:?} is not on screen:\n{screen}"
        );
    }
    for gone in ["# Build", "**", "```", "|---|"] {
        assert!(!screen.contains(gone), "{gone:?} is on screen:\n{screen}");
    }
    // as written
    tmux.keys(&["M"]);
    let screen = tmux.wait_for("```rust", wait);
    assert!(screen.contains("# Build report"), "{screen}");
    assert!(screen.contains("The build **passes** now."), "{screen}");
    tmux.keys(&["M"]);
    tmux.wait_for("• pinned the toolchain", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sessions (1)", wait);
    // ended, it leaves the list (the title counts it); a filter naming a status shows it
    tmux.keys(&["X"]);
    tmux.wait_for("end \"markdown check\"?", wait);
    tmux.keys(&["y"]);
    tmux.wait_for("Sessions (0 · 1 ended hidden)", wait);
    tmux.wait_for("No live session: 1 ended", wait);
    tmux.keys(&["/"]);
    tmux.text("status:ended");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("- ended", wait);
    assert!(screen.contains("markdown check"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// A session that finishes its turn while another is looked at: the terminal's bell rings (tmux
/// marks the window), and the `[notify] command` hook runs with the session, the event and its
/// text in its environment.
#[test]
fn a_turn_finished_elsewhere_rings_and_runs_the_hook() {
    a_turn_finished_elsewhere_rings_and_runs_the_hook_in(Mode::Direct);
}

/// The same through `serve`: the cockpit hears of the turn on the change stream.
#[test]
fn a_turn_finished_elsewhere_rings_and_runs_the_hook_through_serve() {
    a_turn_finished_elsewhere_rings_and_runs_the_hook_in(Mode::Remote);
}

fn a_turn_finished_elsewhere_rings_and_runs_the_hook_in(mode: Mode) {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let hooks = tempfile::tempdir().unwrap();
    let heard = hooks.path().join("heard.txt");
    let (_root, tmux, _served) = scripted_cockpit(
        &stack,
        mode,
        34,
        &format!(
            "[notify]\ncommand = [\"sh\", \"-c\", \"echo \\\"$AGENTDECK_EVENT|$AGENTDECK_TITLE|$AGENTDECK_TEXT\\\" >> {}\"]\n",
            heard.display()
        ),
    );
    let wait = Duration::from_secs(90);
    tmux.wait_for("No sessions yet. Press n to start one.", wait);
    // The first session is made with no message; the second talks, and is left for the
    // first while it answers.
    for (title, prompt) in [("the quiet one", ""), ("the talker", "hello")] {
        tmux.keys(&["n"]);
        tmux.wait_for("New session", wait);
        tmux.keys(&["Tab"]);
        tmux.text(title);
        if !prompt.is_empty() {
            tmux.keys(&["Tab"]);
            tmux.text(prompt);
        }
        tmux.keys(&["C-s"]);
        tmux.wait_for(title, wait);
    }
    tmux.keys(&["j"]);
    let start = Instant::now();
    let said = loop {
        let said = std::fs::read_to_string(&heard).unwrap_or_default();
        if said.contains("done|the talker|") {
            break said;
        }
        assert!(
            start.elapsed() < wait,
            "no hook ran ({said:?}):\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        said.lines()
            .any(|l| l == "done|the talker|the talker finished its turn"),
        "{said}"
    );
    assert!(!said.contains("the quiet one"), "{said}");
    let flag = tmux.run(&["display", "-p", "-t", "deck", "#{window_bell_flag}"]);
    assert_eq!(flag.trim(), "1", "the window rang");
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// `!` gives the terminal to a shell in the session's sandbox (its working folder, with the
/// sandbox's env) and takes it back intact when the shell exits.
#[test]
fn a_shell_in_the_sandbox_and_back() {
    shell_in_the_sandbox_and_back(Mode::Direct);
}

/// The same through `serve` (`--server`): the shell runs where `serve` runs, on a terminal of
/// its own there, carried over a WebSocket; the terminal's size reaches it, and the session's
/// history names the token's holder.
#[test]
fn a_shell_through_serve_and_back() {
    shell_in_the_sandbox_and_back(Mode::Remote);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// The cockpit is a control core of its own.
    Direct,
    /// The cockpit is a client of `serve`, with a team's token.
    Remote,
}

fn shell_in_the_sandbox_and_back(mode: Mode) {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let served = (mode == Mode::Remote).then(|| serve_for_teams(root.path(), Some(&stack)));
    let args = served
        .as_ref()
        .map_or_else(String::new, |(_, url)| format!("--server {url}"));
    let env = match mode {
        Mode::Direct => "SHELL=/bin/sh",
        Mode::Remote => "AGENTDECK_TOKEN=red-team-token-0123456789",
    };
    let tmux = launch(
        &root.path().join("cockpit"),
        Launch {
            stack: Some(&stack),
            env,
            args: &args,
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
    tmux.wait_for("No sessions yet. Press n to start one.", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text("shell check");
    tmux.keys(&["C-s"]);
    tmux.wait_for("Sessions (1)", wait);
    tmux.wait_for("o idle", Duration::from_secs(90));

    tmux.keys(&["!"]);
    tmux.wait_for("a shell in", wait);
    tmux.text("echo \"where=$PWD id=$AGENTDECK_SESSION_ID\"; stty size");
    tmux.keys(&["Enter"]);
    // (what was typed reads `where=$PWD`: the answer is the one with a path)
    let screen = tmux.wait_for("where=/", wait);
    assert!(
        screen.contains("/data/agentdeck/sandboxes/"),
        "the shell starts in the sandbox's folder:\n{screen}"
    );
    assert!(
        screen.contains("id=01"),
        "with the sandbox's env:\n{screen}"
    );
    // On a terminal the size of the window (tmux's 100x30).
    tmux.wait_for("30 100", wait);
    tmux.text("exit");
    tmux.keys(&["Enter"]);
    let screen = match mode {
        Mode::Direct => tmux.wait_for("the shell ended", wait),
        // Through serve the status line's "the shell ended" can be followed at once by a word
        // about the link (it was read while the terminal was the shell's: seen once under a
        // loaded CI): the cockpit being back is what counts.
        Mode::Remote => {
            let start = Instant::now();
            loop {
                let screen = tmux.screen();
                if screen.contains("Sessions (1)") && !screen.contains("a shell in") {
                    break screen;
                }
                assert!(start.elapsed() < wait, "the cockpit is not back:\n{screen}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(
        screen.contains("shell check"),
        "the cockpit is back:\n{screen}"
    );
    // Keys reach the cockpit again.
    tmux.keys(&["?"]);
    tmux.wait_for("On this screen", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_until("the help closed", wait, |s| !s.contains("On this screen"));
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
    if let Some((_serve, url)) = &served {
        // Who opened it: the token's holder, in the history kept by serve.
        let opened = shells_opened_on_the_server(root.path());
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert_eq!(opened[0]["by"], "api:red-operator", "{opened:?}");
        assert_eq!(opened[0]["tty"], true);
        script_through_serve(root.path(), url);
    }
}

/// `agentdeck --server URL sessions shell ID` with a script on standard input (no terminal):
/// the script runs where `serve` runs, its output and errors come out apart, agentdeck exits
/// with its status; a read-only token and another team's token are refused, in words.
fn script_through_serve(root: &Path, url: &str) {
    use std::io::Write;
    let client = root.join("cli");
    let as_token = |token: &str, args: &[&str]| {
        let mut cmd = common::agentdeck(&client);
        cmd.args(["--server", url])
            .args(args)
            .env("AGENTDECK_TOKEN", token);
        cmd
    };
    let listed = as_token(
        "red-team-token-0123456789",
        &["sessions", "list", "-o", "json"],
    )
    .output()
    .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let mut child = as_token("red-team-token-0123456789", &["sessions", "shell", &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo \"id=$AGENTDECK_SESSION_ID\"\necho oops >&2\nexit 5\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert_eq!(stdout, format!("id={id}\n"), "{stderr}");
    assert!(stderr.contains("oops"), "errors apart: {stderr}");
    assert!(stderr.contains("a shell in /"), "{stderr}");

    let watcher = as_token("red-watch-token-0123456789", &["sessions", "shell", &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&watcher.stderr);
    assert_eq!(watcher.status.code(), Some(1), "{said}");
    assert!(said.contains("read-only"), "{said}");
    let blue = as_token("blue-team-token-0123456789", &["sessions", "shell", &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&blue.stderr);
    assert_eq!(blue.status.code(), Some(1), "{said}");
    assert!(said.contains("not found"), "{said}");
    let opened = shells_opened_on_the_server(root);
    assert_eq!(opened.len(), 2, "only the two that opened: {opened:?}");
    assert!(
        opened.iter().any(|e| e["tty"] == false),
        "the script's, without a terminal: {opened:?}"
    );
}

/// The `sandbox.shell` events kept by the `serve` of `serve_for_teams` (its embedded store).
fn shells_opened_on_the_server(root: &Path) -> Vec<serde_json::Value> {
    let url = format!(
        "sqlite://{}",
        root.join("server/data/agentdeck/agentdeck.db").display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = agentdeck::store::open(&url).await.unwrap();
        let sessions = store
            .list_sessions(&agentdeck::model::SessionQuery::default())
            .await
            .unwrap();
        let mut opened = Vec::new();
        for s in sessions {
            for e in store
                .latest_events(s.id, "sandbox.shell", 10)
                .await
                .unwrap()
            {
                opened.push(e.payload);
            }
        }
        opened
    })
}

/// A session whose sandbox is a pod on the FAKE API server (tests/common/fake_kube: no real
/// cluster serves exec here; its exec runs the command on a real pseudo-terminal), made through
/// the core with an in-test harness; and the config and kubeconfig for an agentdeck binary to
/// find it (no worker of its own: the session stays as made).
struct KubeSession {
    rt: tokio::runtime::Runtime,
    _fake: common::fake_kube::FakeKube,
    db: common::TestDb,
    id: uuid::Uuid,
    /// Environment and arguments for the binary.
    env: String,
    args: String,
}

fn kube_session(root: &Path) -> KubeSession {
    use agentdeck::core::{Core, CreateSession};
    use agentdeck::runtime::kubernetes::KubernetesRuntime;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(common::fake_kube::FakeKube::start(Default::default()));
    let db = common::TestDb::sqlite();
    let text = format!(
        "[runtime]\nkind = \"kubernetes\"\n[kubernetes]\nnamespace = \"deck\"\nendpoint = \
         \"pod-ip\"\nharness_port = {}\n[worker]\nenabled = false\n[agents.coder]\nmodel = \
         \"litellm/mock-gpt\"\nimage = \"ghcr.io/example/agent:1\"\n",
        common::free_port()
    );
    std::fs::create_dir_all(root.join("config/agentdeck")).unwrap();
    std::fs::write(root.join("config/agentdeck/config.toml"), &text).unwrap();
    let kubeconfig = root.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\nusers:\n\
             - name: me\n  user:\n    token: t\ncurrent-context: fake\n",
            fake.url
        ),
    )
    .unwrap();
    let config = common::config_with(&text, db.url(), root);
    let id = rt.block_on(async {
        let runtime = KubernetesRuntime::with_client(
            kube::Config::new(fake.url.parse().unwrap()),
            config.kubernetes.clone(),
            false,
        )
        .unwrap();
        let harness = std::sync::Arc::new(common::fakes::InTestHarness::default());
        let core = Core::with_store(
            config,
            db.open().await,
            std::sync::Arc::new(runtime),
            harness,
        );
        let worker =
            agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);
        let session = core
            .create_session(CreateSession {
                agent_id: Some("coder".into()),
                title: Some("kube shell".into()),
                env: [("TICKET".to_string(), "OPS-7".to_string())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
        common::eventually(Duration::from_secs(60), "the session to be up", || async {
            let s = core.get_session(session.id).await.ok()?;
            s.status.is_live().then_some(())
        })
        .await;
        worker.stop(Duration::from_secs(5)).await;
        session.id
    });
    KubeSession {
        env: format!("KUBECONFIG={} SHELL=/bin/sh", kubeconfig.display()),
        args: format!("--database-url '{}'", db.url()),
        rt,
        _fake: fake,
        db,
        id,
    }
}

/// `!` on a session on Kubernetes: the cockpit gives the terminal to a shell in its pod
/// (`pods/exec`), which gets the window's size and its changes, and takes the terminal back
/// when the shell exits, or when the operator leaves with `~.`.
#[test]
fn a_shell_in_a_kubernetes_pod_and_back() {
    let root = tempfile::tempdir().unwrap();
    let kube = kube_session(root.path());
    let tmux = launch(
        root.path(),
        Launch {
            env: &kube.env,
            args: &kube.args,
            size: (100, 30),
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
    tmux.wait_for("kube shell", wait);
    tmux.keys(&["!"]);
    let screen = tmux.wait_for("~. at the start of a line leaves it", wait);
    assert!(screen.contains("a shell in pod deck/ad-"), "{screen}");
    tmux.text("echo \"ticket=$TICKET\"; stty size");
    tmux.keys(&["Enter"]);
    tmux.wait_for("ticket=OPS-7", wait);
    tmux.wait_for("30 100", wait);
    // The window grows: the shell's terminal follows.
    // (the new size travels apart from the keys: asked again until it has come)
    tmux.run(&["resize-window", "-t", "deck", "-x", "120", "-y", "40"]);
    let start = Instant::now();
    while !tmux.screen().contains("40 120") {
        assert!(start.elapsed() < wait, "no new size:\n{}", tmux.screen());
        tmux.text("stty size");
        tmux.keys(&["Enter"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    tmux.text("exit 4");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the shell ended (exit status: 4)", wait);
    assert!(
        screen.contains("kube shell"),
        "the cockpit is back:\n{screen}"
    );

    // Again, and leave with ~. (for a connection that hangs): the cockpit is back, its keys work.
    // (the terminal's main screen still shows the first shell: its banner is there twice now)
    tmux.keys(&["!"]);
    let start = Instant::now();
    while tmux.screen().matches("~. at the start of a line").count() < 2 {
        assert!(
            start.elapsed() < wait,
            "no second shell:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.text("sleep 300");
    tmux.keys(&["Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["Enter"]);
    tmux.text("~.");
    tmux.wait_for("the shell ended (left with ~.)", wait);
    tmux.keys(&["?"]);
    tmux.wait_for("On this screen", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_until("the help closed", wait, |s| !s.contains("On this screen"));
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
    let opened = kube.shells_opened();
    assert_eq!(opened.len(), 2, "each shell is in the history: {opened:?}");
    assert!(
        opened
            .iter()
            .all(|e| e["by"].as_str().unwrap().starts_with("cockpit:") && e["tty"] == true),
        "{opened:?}"
    );
}

/// `agentdeck sessions shell ID` with a script on standard input (no terminal): the script runs
/// in the pod, its output and errors come out apart, and agentdeck exits with its status.
#[test]
fn a_script_through_sessions_shell_on_kubernetes() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let kube = kube_session(root.path());
    let kubeconfig = root.path().join("kubeconfig");
    let mut child = common::agentdeck(root.path())
        .args(["--database-url", kube.db.url()])
        .args(["sessions", "shell", &kube.id.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo \"ticket=$TICKET in $PWD\"\necho oops >&2\nexit 5\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(stdout.contains("ticket=OPS-7"), "{stdout}");
    assert!(!stdout.contains("oops"), "errors stay apart: {stdout}");
    assert!(stderr.contains("oops"), "{stderr}");
    assert!(stderr.contains("a shell in pod deck/ad-"), "{stderr}");
    let opened = kube.shells_opened();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(
        opened[0]["by"].as_str().unwrap().starts_with("cli:"),
        "{opened:?}"
    );
    assert_eq!(opened[0]["tty"], false);
}

impl KubeSession {
    /// The `sandbox.shell` events of the session's history: who opened a shell, newest first.
    fn shells_opened(&self) -> Vec<serde_json::Value> {
        self.rt.block_on(async {
            let store = self.db.open().await;
            let events = store
                .latest_events(self.id, "sandbox.shell", 10)
                .await
                .unwrap();
            events.into_iter().map(|e| e.payload).collect()
        })
    }
}

/// How the cockpit holding the fleet's work stops in the middle of a turn.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stop {
    /// SIGSTOP: a laptop put to sleep, a hung SSH session (its connections stay open).
    Freeze,
    /// SIGKILL: a crash, an OOM kill, a laptop's battery.
    Kill,
}

/// The cockpit, the only process on a Postgres store, runs the fleet's work itself (its top
/// bar says so). Frozen in the middle of a turn, it stalls nothing: a `serve` started beside it
/// takes the session once the frozen cockpit's lease runs out and carries the turn on, stored
/// once. Woken, the cockpit finds its lease gone, writes nothing more, and stands aside for the
/// serve.
#[test]
fn a_frozen_cockpit_hands_the_fleet_over() {
    cockpit_hands_the_fleet_over(Stop::Freeze);
}

/// The same with the cockpit killed (kill -9) in the middle of the turn: the serve carries the
/// turn on once the dead cockpit's lease runs out, every event of it stored once.
#[test]
fn a_killed_cockpit_hands_the_fleet_over() {
    cockpit_hands_the_fleet_over(Stop::Kill);
}

fn cockpit_hands_the_fleet_over(stop: Stop) {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(common::TestDb::postgres());
    let store = rt.block_on(db.open());
    let root = tempfile::tempdir().unwrap();
    let fleet = "[worker]\nfleet_lease = \"3s\"\n";
    let config = common::agent_api::write_config(root.path(), fleet);
    let env = format!(
        "AGENTDECK_CONFIG='{}' AGENTDECK_DATABASE_URL='{}'",
        config.display(),
        db.url()
    );
    let tmux = launch(
        root.path(),
        Launch {
            stack: Some(&stack),
            env: &env,
            size: (160, 40),
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
    tmux.wait_for("fleet: this cockpit", wait);
    let cores = rt.block_on(store.list_cores()).unwrap();
    assert_eq!(cores.len(), 1, "{cores:?}");
    let cockpit_pid: i32 = cores[0].id.split(':').nth(1).unwrap().parse().unwrap();

    // A session with a long turn, made through the store's API as any client would (the
    // cockpit's worker provisions it and follows it).
    let id = rt.block_on(async {
        let core = agentdeck::core::Core::with_store(
            common::config_with(
                &std::fs::read_to_string(&config).unwrap(),
                db.url(),
                root.path(),
            ),
            db.open().await,
            std::sync::Arc::new(common::fakes::InTestRuntime::default()),
            std::sync::Arc::new(common::fakes::InTestHarness::default()),
        );
        core.create_session(agentdeck::core::CreateSession {
            agent_id: Some("coder".into()),
            title: Some("long turn".into()),
            initial_prompt: Some(
                "run: for i in $(seq 1 25); do echo tick-$i; sleep 0.2; done".into(),
            ),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
    });
    let running = || {
        rt.block_on(store.list_messages(id, 0, 100))
            .unwrap()
            .iter()
            .flat_map(|m| m.parts.clone())
            .any(|p| {
                matches!(
                    p,
                    agentdeck::model::Part::Tool {
                        status: agentdeck::model::ToolStatus::Running,
                        ..
                    }
                )
            })
    };
    let start = Instant::now();
    while !running() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the long tool call never ran:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let signal = match stop {
        Stop::Freeze => libc::SIGSTOP,
        Stop::Kill => libc::SIGKILL,
    };
    // SAFETY: signalling the cockpit process this test started.
    assert_eq!(unsafe { libc::kill(cockpit_pid, signal) }, 0);
    if stop == Stop::Kill {
        // Gone (its shell reaps it). Not read off the screen: killed in the middle of writing
        // an escape sequence, the cockpit can leave the terminal swallowing what comes next.
        let start = Instant::now();
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(cockpit_pid, 0) } == 0 {
            assert!(start.elapsed() < wait, "the killed cockpit is still there");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let port = common::free_port();
    let serve = common::agent_api::start_serve_logged(
        root.path(),
        db.url(),
        &stack,
        port,
        fleet,
        "serve.log",
    );
    let api = rt.block_on(common::agent_api::Api::answering(port));
    let messages = rt.block_on(api.reply_containing(&id.to_string(), "Output: tick-1"));
    let tools = messages
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "tool")
        .collect::<Vec<_>>();
    assert_eq!(tools.len(), 1, "one tool call: {tools:?}");
    assert!(
        tools[0]["output"]
            .as_str()
            .is_some_and(|o| o.contains("tick-25")),
        "{tools:?}"
    );
    let stored = common::agent_api::texts(&messages);

    if stop == Stop::Kill {
        let cores = rt.block_on(store.list_cores()).unwrap();
        assert!(
            cores
                .iter()
                .all(|c| c.kind != agentdeck::model::CoreKind::Cockpit),
            "the dead cockpit's lease ran out: {cores:?}"
        );
        end_session(&rt, &api, id, wait);
        drop(serve);
        return;
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(cockpit_pid, libc::SIGCONT) }, 0);
    tmux.wait_for("fleet: 1 serve", wait);
    let log = root.path().join("state/agentdeck/agentdeck.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("fleet lease had run out")
    {
        assert!(
            start.elapsed() < wait,
            "the woken cockpit never said its lease ran out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cores = rt.block_on(store.list_cores()).unwrap();
    let cockpit = cores
        .iter()
        .find(|c| c.kind == agentdeck::model::CoreKind::Cockpit)
        .unwrap();
    assert!(!cockpit.fleet && cockpit.sessions == 0, "{cockpit:?}");
    let now = rt.block_on(api.messages(&id.to_string()));
    assert_eq!(
        common::agent_api::texts(&now),
        stored,
        "the woken cockpit wrote nothing"
    );

    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
    end_session(&rt, &api, id, wait);
    drop(serve);
}

/// Ends a session through the API and waits until it is.
fn end_session(
    rt: &tokio::runtime::Runtime,
    api: &common::agent_api::Api,
    id: uuid::Uuid,
    wait: Duration,
) {
    let resp = rt
        .block_on(
            api.http
                .delete(format!("{}/api/sessions/{id}", api.base))
                .send(),
        )
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    rt.block_on(common::eventually(wait, "the session to end", || async {
        (api.get(&format!("/api/sessions/{id}")).await["status"] == "dead").then_some(())
    }));
}

/// `serve` on its own store (the embedded SQLite of its own folder), with a token per team,
/// as a platform runs it: the process ends with the guard.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_for_teams(root: &Path, stack: Option<&common::stack::Stack>) -> (Served, String) {
    let port = common::free_port();
    let served = serve_at(root, stack, port, None, "serve");
    (served, format!("http://127.0.0.1:{port}"))
}

/// `serve` on `port`, on `db` (else the embedded store of `root/server`), logging to
/// `root/NAME.log`; returns once it listens.
fn serve_at(
    root: &Path,
    stack: Option<&common::stack::Stack>,
    port: u16,
    db: Option<&str>,
    name: &str,
) -> Served {
    serve_with(root, stack, port, db, name, "")
}

/// [`serve_at`] with `extra` in its configuration.
fn serve_with(
    root: &Path,
    stack: Option<&common::stack::Stack>,
    port: u16,
    db: Option<&str>,
    name: &str,
    extra: &str,
) -> Served {
    let config = root.join("serve.toml");
    std::fs::write(
        &config,
        format!("{extra}\n")
            + "[[api.tokens]]\ntoken = \"red-team-token-0123456789\"\nteam = \"red\"\n\
         name = \"red-operator\"\n\
         [[api.tokens]]\ntoken = \"red-watch-token-0123456789\"\nteam = \"red\"\nread_only = true\n\
         [[api.tokens]]\ntoken = \"blue-team-token-0123456789\"\nteam = \"blue\"\n\
         [agents.coder]\nmodel = \"litellm/mock-gpt\"\n\
         command = [\"opencode\", \"serve\", \"--hostname\", \"{host}\", \"--port\", \"{port}\"]\n\
         [agents.guarded]\nmodel = \"litellm/scripted\"\n\
         command = [\"opencode\", \"serve\", \"--hostname\", \"{host}\", \"--port\", \"{port}\"]\n\
         [agents.guarded.permission]\nbash = \"ask\"\n",
    )
    .unwrap();
    let log = root.join(format!("{name}.log"));
    let mut cmd = common::agentdeck(&root.join("server"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("AGENTDECK_CONFIG", &config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(db) = db {
        cmd.env("AGENTDECK_DATABASE_URL", db);
    }
    if let Some(stack) = stack {
        cmd.env("PATH", &stack.path)
            .env("AGENTDECK_GATEWAY_URL", &stack.gateway_url);
    }
    let served = Served(cmd.spawn().expect("start serve"));
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    served
}

/// One cockpit over two servers (two `serve`s on two stores, `[[servers]]` with a token each):
/// one merged list with a SERVER column and `server:NAME` in the filter, each server's link on
/// the top bar, a command reaching the session's own server, and one server down while the
/// other keeps working (its sessions still listed as last read), then back by itself.
#[test]
fn one_cockpit_over_two_servers() {
    let root = tempfile::tempdir().unwrap();
    let (eu_port, us_port) = (common::free_port(), common::free_port());
    for place in ["eu", "us"] {
        std::fs::create_dir_all(root.path().join(place)).unwrap();
    }
    let _eu = serve_at(&root.path().join("eu"), None, eu_port, None, "eu");
    let us = serve_at(&root.path().join("us"), None, us_port, None, "us");
    let (eu_url, us_url) = (
        format!("http://127.0.0.1:{eu_port}"),
        format!("http://127.0.0.1:{us_port}"),
    );
    red_session(&eu_url, "eu first");
    red_session(&us_url, "us first");
    let cockpit = root.path().join("cockpit");
    std::fs::create_dir_all(cockpit.join("config/agentdeck")).unwrap();
    std::fs::write(
        cockpit.join("config/agentdeck/config.toml"),
        format!(
            "[tui]\nshow_ended = true\n\
             [[servers]]\nname = \"eu\"\nurl = \"{eu_url}\"\ntoken_env = \"EU_TOKEN\"\n\
             [[servers]]\nname = \"us\"\nurl = \"{us_url}\"\ntoken_env = \"US_TOKEN\"\n"
        ),
    )
    .unwrap();
    let tmux = launch(
        &cockpit,
        Launch {
            env: "EU_TOKEN=red-team-token-0123456789 US_TOKEN=red-team-token-0123456789",
            size: (150, 30),
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
    tmux.wait_for("eu ok us ok", wait);
    tmux.wait_for("eu first", wait);
    let screen = tmux.wait_for("us first", wait);
    assert!(screen.contains("SERVER"), "{screen}");
    let row = |screen: &str, title: &str| {
        screen
            .lines()
            .find(|l| l.contains(title))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row(&screen, "us first").contains(" us "), "{screen}");
    assert!(row(&screen, "eu first").contains(" eu "), "{screen}");

    // Only us's: the one row left is ended, on us and only there.
    tmux.keys(&["/"]);
    tmux.text("server:us");
    tmux.keys(&["Enter"]);
    tmux.wait_for("filter: server:us", wait);
    let start = Instant::now();
    while tmux.screen().contains("eu first") {
        assert!(start.elapsed() < wait, "{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["X"]);
    tmux.wait_for("us first", wait);
    tmux.keys(&["y"]);
    let ended = |url: &str| -> Vec<String> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{url}/api/sessions?status=dead")])
            .args(["-H", "Authorization: Bearer red-team-token-0123456789"])
            .output()
            .expect("curl");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        body["sessions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["title"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let start = Instant::now();
    while ended(&us_url) != ["us first"] {
        assert!(
            start.elapsed() < wait,
            "not ended on us:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ended(&eu_url).is_empty(), "nothing ended on eu");
    tmux.keys(&["/"]);
    tmux.keys(&["C-u"]);
    tmux.keys(&["Enter"]);
    // (`[tui] show_ended`: the ended session stays in the list)
    let screen = tmux.wait_for("- ended", wait);
    assert!(row(&screen, "us first").contains("- ended"), "{screen}");

    // us goes away: said on the top bar; eu goes on, and us's sessions stay listed.
    drop(us);
    tmux.wait_for("us reconnecting", wait);
    red_session(&eu_url, "eu while us is down");
    let screen = tmux.wait_for("eu while us is down", wait);
    assert!(screen.contains("eu ok"), "{screen}");
    assert!(
        screen.contains("us first"),
        "us's sessions as last read:\n{screen}"
    );
    let _us = serve_at(&root.path().join("us"), None, us_port, None, "us-again");
    tmux.wait_for("eu ok us ok", wait);
    tmux.wait_for("us answers again", wait);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// A session made through `serve` at `url` with red's token.
fn red_session(url: &str, title: &str) {
    red_session_of(url, "coder", title, None);
}

/// A session of `agent` made through `serve` at `url` with red's token (and a first message);
/// its id.
fn red_session_of(url: &str, agent: &str, title: &str, prompt: Option<&str>) -> String {
    let body = serde_json::json!({"agent_id": agent, "title": title, "initial_prompt": prompt});
    let made = Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("{url}/api/sessions")])
        .args(["-H", "Authorization: Bearer red-team-token-0123456789"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", &body.to_string()])
        .output()
        .expect("curl");
    assert!(made.status.success(), "{made:?}");
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    made["id"].as_str().unwrap().to_string()
}

/// Through `serve`, the rest of what an operator does: an agent that asks before it runs a
/// command waits (`? waiting` in the list), is reached with `w` and answered from the list's
/// preview, without attaching; the
/// session is forked at its first message (the fork is attached); its sandbox's log is
/// followed, and a line written after it opened (the harness started again) comes.
#[test]
fn asks_fork_and_logs_through_serve() {
    let Some(stack) = common::stack::stack() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (_serve, url) = serve_for_teams(root.path(), Some(&stack));
    let id = red_session_of(
        &url,
        "guarded",
        "guarded work",
        Some("run: echo asked-remotely"),
    );
    let args = format!("--server {url}");
    let tmux = launch(
        &root.path().join("cockpit"),
        Launch {
            stack: Some(&stack),
            env: "AGENTDECK_TOKEN=red-team-token-0123456789",
            args: &args,
            size: (140, 34),
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(90);
    tmux.wait_for("1 waiting for you", wait);
    tmux.wait_for("? waiting", wait);
    // The inbox: w goes to it, the preview shows what it asks, a answers it from the list.
    tmux.keys(&["w"]);
    tmux.wait_for("bash wants to run: echo asked-remotely", wait);
    tmux.keys(&["a"]);
    let screen = tmux.wait_for("Ran it. Output: asked-remotely", wait);
    assert!(screen.contains("Sessions (1)"), "never attached:\n{screen}");
    tmux.keys(&["Enter"]);
    // Attached (the transcript's hints: the preview's title reads like the transcript's) with
    // its messages read (a fork needs one to fork at).
    let start = Instant::now();
    loop {
        let screen = tmux.screen();
        if screen.contains("i write") && screen.contains("Ran it. Output: asked-remotely") {
            break;
        }
        assert!(start.elapsed() < wait, "not attached:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }

    tmux.keys(&["f"]);
    tmux.wait_for("Fork at message #", wait);
    // (it offers the last message: taken back, then the first)
    tmux.keys(&["BSpace"]);
    tmux.text("1");
    tmux.keys(&["Enter"]);
    tmux.wait_for("fork of guarded work", wait);
    // esc walks back: to the transcript forked from, then the list (one esc at a time).
    tmux.keys(&["Escape"]);
    tmux.wait_for("o idle · guarded work · guarded", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sessions (2)", wait);

    // The log of the first session, following: the harness starts again (a restart through
    // the API) and its new line comes on its own.
    tmux.keys(&["/"]);
    tmux.text("title:guarded");
    tmux.keys(&["Enter"]);
    tmux.wait_for("filter: title:guarded", wait);
    tmux.keys(&["G"]);
    tmux.keys(&["l"]);
    tmux.wait_for("Log · guarded work", wait);
    tmux.wait_for("opencode server listening", wait);
    let restarted = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            &format!("{url}/api/sessions/{id}/restart"),
        ])
        .args(["-H", "Authorization: Bearer red-team-token-0123456789"])
        .output()
        .expect("curl");
    assert!(restarted.status.success(), "{restarted:?}");
    let start = Instant::now();
    while tmux.screen().matches("opencode server listening").count() < 2 {
        assert!(
            start.elapsed() < wait,
            "no new line in the followed log:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tmux.keys(&["Escape"]);

    // Suspend, resume and restart from the list, through serve, each confirmed where it
    // stops the agent; the row says where the session is.
    let row = |screen: &str| {
        screen
            .lines()
            .find(|l| l.contains("guarded work") && !l.contains("fork of"))
            .unwrap_or_default()
            .to_string()
    };
    tmux.wait_until("the list, filtered", wait, |s| row(s).contains("o idle"));
    tmux.keys(&["S"]);
    tmux.wait_for("suspend \"guarded work\"?", wait);
    tmux.keys(&["y"]);
    tmux.wait_until("guarded work suspended", wait, |s| {
        row(s).contains("suspended")
    });
    tmux.keys(&["U"]);
    tmux.wait_until("guarded work idle again", wait, |s| {
        row(s).contains("o idle")
    });
    tmux.keys(&["R"]);
    tmux.wait_for("restart \"guarded work\"?", wait);
    tmux.keys(&["n"]);
    tmux.wait_for("cancelled", wait);
    tmux.keys(&["R"]);
    tmux.wait_for("restart \"guarded work\"?", wait);
    tmux.keys(&["y"]);
    tmux.wait_until("guarded work restarting", wait, |s| {
        !row(s).contains("o idle")
    });
    tmux.wait_until("guarded work idle after its restart", wait, |s| {
        row(s).contains("o idle")
    });
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", Duration::from_secs(60));
}

/// A remote cockpit rides out its `serve` going away (restarted, or a replica swapped): the
/// top bar says it reconnects, it comes back by itself when the server does, what was typed
/// is still there, and what changed meanwhile (through another replica on the same store)
/// is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cockpit_through_serve_rides_out_a_restart() {
    let db = common::TestDb::postgres().await;
    let root = tempfile::tempdir().unwrap();
    let (a_port, b_port) = (common::free_port(), common::free_port());
    let serve_a = serve_at(root.path(), None, a_port, Some(db.url()), "a");
    let _serve_b = serve_at(root.path(), None, b_port, Some(db.url()), "b");
    let (a, b) = (
        format!("http://127.0.0.1:{a_port}"),
        format!("http://127.0.0.1:{b_port}"),
    );
    red_session(&a, "before the restart");
    let args = format!("--server {a}");
    let tmux = launch(
        &root.path().join("red"),
        Launch {
            env: "AGENTDECK_TOKEN=red-team-token-0123456789",
            args: &args,
            size: (140, 30),
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
    tmux.wait_for("before the restart", wait);
    tmux.wait_for("server ok", wait);
    tmux.keys(&["Enter"]);
    tmux.keys(&["i"]);
    tmux.wait_for("ctrl-s send", wait);
    tmux.text("typed while it was away");
    drop(serve_a);
    tmux.wait_for("server reconnecting", wait);
    red_session(&b, "made while it was away");
    let _serve_a = serve_at(root.path(), None, a_port, Some(db.url()), "a-again");
    tmux.wait_for("server ok", wait);
    let screen = tmux.wait_for("typed while it was away", wait);
    assert!(
        screen.contains("ctrl-s send"),
        "the composer is still open:\n{screen}"
    );
    // One esc at a time (two at once can read as one escape sequence): the composer closes,
    // keeping the draft, then back to the list.
    tmux.keys(&["Escape"]);
    tmux.wait_for("draft kept", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("made while it was away", wait);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);
}

/// The cockpit as a client of `serve` (`--server`, a team's token): it holds no database and
/// no cluster credentials, sees only its team's sessions, and creates, attaches, talks,
/// shows the sandboxes, a log and a diagnosis through the REST API. A wrong token is said in
/// words, not a blank screen.
#[test]
fn a_cockpit_through_serve_sees_only_its_team() {
    let stack = common::stack::stack();
    let root = tempfile::tempdir().unwrap();
    let (_serve, url) = serve_for_teams(root.path(), stack.as_ref());
    // Blue's session, made through the API: red's cockpit never shows it.
    let made = Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("{url}/api/sessions")])
        .args(["-H", "Authorization: Bearer blue-team-token-0123456789"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"agent_id": "coder", "title": "blue secret"}"#])
        .output()
        .expect("curl");
    assert!(made.status.success(), "{made:?}");

    let wrong = launch(
        &root.path().join("wrong"),
        Launch {
            env: "AGENTDECK_TOKEN=not-a-token-0123456789",
            args: &format!("--server {url}"),
            ..Launch::default()
        },
    );
    let screen = wrong.wait_for("EXITED 1", Duration::from_secs(60));
    assert!(screen.contains("unknown token"), "{screen}");

    let args = format!("--server {url}");
    let tmux = launch(
        &root.path().join("red"),
        Launch {
            stack: stack.as_ref(),
            env: "AGENTDECK_TOKEN=red-team-token-0123456789",
            args: &args,
            size: (140, 30),
            ..Launch::default()
        },
    );
    let wait = Duration::from_secs(60);
    let screen = tmux.wait_for("No sessions yet. Press n to start one.", wait);
    assert!(
        screen.contains(&url),
        "the server on the top bar:\n{screen}"
    );
    tmux.keys(&["n"]);
    tmux.wait_for("New session", wait);
    tmux.keys(&["Tab"]);
    tmux.text("remote check");
    tmux.keys(&["Tab"]);
    tmux.text("hello through serve");
    tmux.keys(&["C-s"]);
    let screen = tmux.wait_for("Sessions (1)", wait);
    tmux.wait_for("remote check", wait);
    assert!(!screen.contains("blue secret"), "{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("hello through serve", wait);
    if stack.is_some() {
        tmux.wait_for("Hello from mock", Duration::from_secs(90));
        tmux.wait_for("o idle", Duration::from_secs(30));
    }
    tmux.keys(&["h"]);
    let screen = tmux.wait_for("Sandboxes (1)", wait);
    assert!(!screen.contains("blue secret"), "{screen}");
    tmux.keys(&["d"]);
    tmux.wait_for("What to do", wait);
    tmux.wait_for("Phase history", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("Sandboxes (1)", wait);
    tmux.keys(&["Escape"]);
    tmux.wait_for("hello through serve", wait);
    tmux.keys(&["Escape"]);
    let screen = tmux.wait_for("Sessions (1)", wait);
    assert!(
        screen.contains("1 sessions"),
        "blue's is not counted:\n{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", wait);

    // A read-only token makes a read-only cockpit: it sees red's sessions and acts on none.
    let watcher = launch(
        &root.path().join("watcher"),
        Launch {
            env: "AGENTDECK_TOKEN=red-watch-token-0123456789",
            args: &args,
            size: (140, 30),
            ..Launch::default()
        },
    );
    watcher.wait_for("remote check", wait);
    watcher.wait_for("[read-only]", wait);
    watcher.keys(&["n"]);
    watcher.keys(&[":"]);
    watcher.text("new");
    watcher.keys(&["Enter"]);
    let screen = watcher.wait_for("read-only: this cockpit", wait);
    assert!(!screen.contains("New session"), "{screen}");
    watcher.keys(&["q"]);
    watcher.wait_for("EXITED 0", wait);
}
