//! The bootstrap of a warm sandbox (`agentdeck bootstrap -- HARNESS…`): runs as the sandbox's
//! first process, starts the harness at once on a port of its own (with a password made here,
//! which never leaves the sandbox), warms it up with a turn whose model answer it gives itself,
//! and waits for a session to claim the sandbox. The claim (the session's password, gateway key
//! and environment, see [`handover`]) arrives as a file in its hand-over folder; from then on
//! the sandbox's port passes that session's calls on to the harness, the harness's model calls
//! go to the gateway with the session's key, and every command the agent runs has the session's
//! environment (a script named by `BASH_ENV`, which bash reads before each command).
//!
//! So a pool of sandboxes can be started before anyone asks for one, with nothing of a session
//! in any pod spec, template or stored object, and no password shared between sandboxes.

pub mod doors;
pub mod handover;

use crate::harness::{Endpoint, Harness, Prompt};
use anyhow::{Context, Result};
use doors::{Doors, Opened, Stage};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the hand-over folder is looked at.
const CLAIM_POLL: Duration = Duration::from_millis(20);
/// How long the harness may take to answer after it starts.
const HARNESS_START: Duration = Duration::from_secs(120);
/// How long the warm-up turn may take.
const WARM_UP: Duration = Duration::from_secs(60);

/// Where the harness listens, in a command a runtime fills in first (its own `{host}` and
/// `{port}` are the bootstrap's).
pub const HOST_MARK: &str = "{harness_host}";
pub const PORT_MARK: &str = "{harness_port}";
/// Where the harness's model calls come in, in a file the bootstrap renders.
pub const DOOR_MARK: &str = "{gateway_door}";

#[derive(Debug, Clone)]
pub struct Options {
    /// The sandbox's port (the harness's, as the runtime sees it).
    pub listen: SocketAddr,
    /// Where the harness's model calls come in (loopback; its config names it).
    pub gateway_listen: SocketAddr,
    /// The real gateway's base URL.
    pub gateway: String,
    /// The hand-over folder.
    pub dir: PathBuf,
    /// The model of the warm-up turn (`provider/model`, as the agent's).
    pub model: String,
    /// Files written before the harness starts (from, to): `{gateway_door}` in them becomes
    /// where the harness's model calls come in, which is known only here when
    /// `gateway_listen`'s port is 0 (the harness's config, on Kubernetes).
    pub render: Vec<(PathBuf, PathBuf)>,
    /// The harness's command; `{harness_host}` and `{harness_port}` (or `{host}` and `{port}`)
    /// are where it listens.
    pub command: Vec<String>,
}

/// Runs the bootstrap until the harness exits; its exit code.
pub async fn run(options: Options) -> Result<i32> {
    private_dir(&options.dir)?;
    let harness = crate::harness::opencode::Opencode::new()
        .context("cannot start the opencode harness client")?;
    let inner_port = free_loopback_port().context("cannot find a port for the harness")?;
    let inner_password = new_password();
    let inner = format!("http://127.0.0.1:{inner_port}");
    let http = crate::net::direct_http_client_untimed().context("cannot build an HTTP client")?;
    let doors = Doors {
        stage: tokio::sync::watch::channel(Stage::Starting).0,
        harness: inner.clone(),
        harness_auth: doors::basic(crate::harness::opencode::USERNAME, &inner_password),
        gateway: options.gateway.trim_end_matches('/').to_string(),
        http,
    };
    let front = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let gateway = tokio::net::TcpListener::bind(options.gateway_listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.gateway_listen))?;
    let door = gateway
        .local_addr()
        .context("cannot read the gateway door's address")?;
    render(&options.render, &format!("http://{door}"))?;
    tokio::spawn(serve(front, doors.clone().front()));
    tokio::spawn(serve(gateway, doors.clone().gateway_door()));

    let mut child = spawn_harness(&options, &harness, inner_port, &inner_password)?;
    let endpoint = Endpoint::new(inner, Some(inner_password));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;

    let ready = async {
        let deadline = tokio::time::Instant::now() + HARNESS_START;
        while harness.health(&endpoint).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = warm_up(&harness, &endpoint, &options.model).await {
            tracing::warn!(error = %e, "the harness's warm-up failed; its first turn will be slower");
        }
        true
    };
    tokio::select! {
        up = ready => {
            if !up {
                tracing::error!("the harness did not answer within {HARNESS_START:?}");
                let _ = child.start_kill();
                return Ok(1);
            }
        }
        status = child.wait() => return Ok(exit_code(status)),
        _ = terminate.recv() => return Ok(stop(&mut child).await),
    }
    doors.stage.send_replace(Stage::Warm);
    tracing::info!(dir = %options.dir.display(), "warm: waiting for a session's claim");

    // A claim this sandbox took before its harness started again (the same pod's container
    // restarted; its hand-over folder is kept): the session's again at once.
    let mut claimed = false;
    match handover::saved(&options.dir) {
        Ok(Some(claim)) => {
            claimed = open_to(&doors, &options.dir, &claim);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "an unreadable saved claim was ignored"),
    }
    let mut every = tokio::time::interval(CLAIM_POLL);
    loop {
        tokio::select! {
            status = child.wait() => return Ok(exit_code(status)),
            _ = terminate.recv() => return Ok(stop(&mut child).await),
            _ = every.tick(), if !claimed => {
                match handover::read(&options.dir) {
                    Ok(None) => {}
                    Ok(Some(claim)) => claimed = open_to(&doors, &options.dir, &claim),
                    Err(e) => tracing::warn!(error = %e, "an unreadable claim was dropped"),
                }
            }
        }
    }
}

/// Opens the sandbox to the session of `claim`: its environment written for the agent's
/// commands, the claim kept (for a restart of the harness) and said taken. False when it
/// could not be (the claim is left waiting: whoever handed it over gives the sandbox up).
fn open_to(doors: &Doors, dir: &std::path::Path, claim: &handover::Claim) -> bool {
    if let Err(e) = handover::put_env(dir, &claim.env) {
        tracing::error!(error = %e, "cannot write the session's environment; the claim is not taken");
        return false;
    }
    if let Err(e) = handover::save(dir, claim) {
        tracing::warn!(error = %e, "cannot keep the claim; a restart of the harness will need it again");
    }
    let opened = Opened {
        auth: doors::basic(crate::harness::opencode::USERNAME, &claim.password),
        gateway_auth: claim.gateway_key.as_ref().map(|k| format!("Bearer {k}")),
    };
    doors.stage.send_replace(Stage::Claimed(Arc::new(opened)));
    // Open first, then said taken: whoever waits for it calls in at once.
    if let Err(e) = handover::taken(dir) {
        tracing::warn!(error = %e, "cannot say the claim was taken");
    }
    tracing::info!(session = %claim.session, variables = claim.env.len(), "claimed");
    true
}

/// Writes each (from, to) with `{gateway_door}` replaced by `door`.
fn render(files: &[(PathBuf, PathBuf)], door: &str) -> Result<()> {
    for (from, to) in files {
        let text = std::fs::read_to_string(from)
            .with_context(|| format!("cannot read {}", from.display()))?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make {}", parent.display()))?;
        }
        std::fs::write(to, text.replace(DOOR_MARK, door))
            .with_context(|| format!("cannot write {}", to.display()))?;
    }
    Ok(())
}

/// How long a hand-over waits to be taken.
const HAND_OVER: Duration = Duration::from_secs(10);

/// `agentdeck hand-over`: puts the claim read on stdin (one line of JSON) in `dir` and waits
/// until the bootstrap took it (run through `pods/exec`, so that the claim goes from agentdeck
/// to the sandbox's memory and nowhere else). Exit 0 once taken, or at once when the sandbox
/// already holds this session's claim; 3 when it holds another session's; 1 if not taken in
/// time (the claim is removed).
pub async fn hand_over(dir: &std::path::Path) -> Result<i32> {
    use tokio::io::AsyncBufReadExt;
    // One line, not everything to the end: an exec's standard input may never say it ended.
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .context("cannot read the claim on stdin")?;
    let claim: handover::Claim =
        serde_json::from_str(line.trim()).context("the claim on stdin is not one")?;
    match handover::saved(dir) {
        Ok(Some(held)) if held.session == claim.session => return Ok(0),
        Ok(Some(held)) => {
            eprintln!(
                "agentdeck: this sandbox is claimed by session {}, not {}",
                held.session, claim.session
            );
            return Ok(3);
        }
        _ => {}
    }
    handover::put(dir, &claim.to_bytes())
        .with_context(|| format!("cannot write the claim in {}", dir.display()))?;
    let deadline = tokio::time::Instant::now() + HAND_OVER;
    while handover::waiting(dir) {
        if tokio::time::Instant::now() > deadline {
            let _ = std::fs::remove_file(dir.join(handover::CLAIM_FILE));
            eprintln!("agentdeck: no bootstrap took the claim within {HAND_OVER:?}");
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(0)
}

async fn serve(listener: tokio::net::TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "a door of the bootstrap stopped");
    }
}

fn spawn_harness(
    options: &Options,
    harness: &crate::harness::opencode::Opencode,
    port: u16,
    password: &str,
) -> Result<tokio::process::Child> {
    let argv: Vec<String> = options
        .command
        .iter()
        .map(|a| {
            a.replace(HOST_MARK, "127.0.0.1")
                .replace(PORT_MARK, &port.to_string())
                .replace("{host}", "127.0.0.1")
                .replace("{port}", &port.to_string())
        })
        .collect();
    let Some((program, args)) = argv.split_first() else {
        anyhow::bail!("no harness command given after --");
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(harness.auth_env(password))
        .env("BASH_ENV", options.dir.join(handover::ENV_FILE))
        .kill_on_drop(true);
    // The agent's commands read the session's environment through bash.
    if std::path::Path::new("/bin/bash").exists() {
        command.env("SHELL", "/bin/bash");
    }
    command
        .spawn()
        .with_context(|| format!("cannot start the harness ({program})"))
}

/// A turn in a conversation of its own, deleted afterwards: the harness's one-time work for its
/// first prompt (about 2 s of opencode's) is done before any session's.
async fn warm_up(harness: &dyn Harness, endpoint: &Endpoint, model: &str) -> Result<()> {
    let session = harness
        .create_session(endpoint, "agentdeck warm-up")
        .await?;
    let prompt = Prompt {
        text: "warm up".into(),
        model: model.to_string(),
        system: None,
        no_reply: false,
    };
    harness.send(endpoint, &session, &prompt).await?;
    let deadline = tokio::time::Instant::now() + WARM_UP;
    loop {
        let messages = harness.messages(endpoint, &session).await?;
        if messages
            .iter()
            .any(|m| m.info.role == crate::model::MessageRole::Assistant && m.info.done)
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the warm-up turn did not end within {WARM_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness.delete_session(endpoint, &session).await?;
    Ok(())
}

async fn stop(child: &mut tokio::process::Child) -> i32 {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => exit_code(status),
        Err(_) => {
            let _ = child.start_kill();
            143
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 1,
    }
}

/// Makes the hand-over folder, readable by its owner only.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make the hand-over folder {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn new_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
