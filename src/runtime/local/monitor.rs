//! The background task behind each run: waits for the process to exit (our own child: an
//! event; an adopted process: /proc looked at every 500 ms), and until the harness answers,
//! probes its health endpoint to tell `Starting` from `Ready`.

use super::launch::HOST;
use super::process::{self, ExitInfo};
use super::sandbox::Sandbox;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Child;
use tokio::task::AbortHandle;

/// How often an adopted process (not our child) is looked at.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// How often the harness is asked whether it is up, while it is starting: a new question
/// every interval, whether or not the last ones were answered. A harness that listens before
/// it serves (opencode does, for about half a second) leaves a connection made in that
/// window unanswered until the probe's time runs out; the next one is answered at once.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// At most this many questions open at once.
const PROBES_OPEN: usize = 8;

/// What a run's exit is learnt from.
pub enum Watched {
    Child(Child),
    Adopted { pid: i32, start_time: Option<u64> },
}

async fn poll_until_gone(pid: i32, start_time: Option<u64>) -> ExitInfo {
    loop {
        tokio::time::sleep(ADOPTED_POLL).await;
        if !process::is_alive(pid, start_time) {
            return ExitInfo::Unknown;
        }
    }
}

impl Watched {
    async fn wait(&mut self, pid: i32) -> ExitInfo {
        match self {
            Watched::Child(child) => match child.wait().await {
                Ok(status) => ExitInfo::from_status(status),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot wait for the sandbox's process; watching /proc instead");
                    poll_until_gone(pid, None).await
                }
            },
            Watched::Adopted { pid, start_time } => poll_until_gone(*pid, *start_time).await,
        }
    }
}

pub fn endpoint(port: u16) -> String {
    format!("http://{HOST}:{port}")
}

/// Whether the harness on `port` answers its health endpoint now, within the client's time.
/// A harness that asks for its password (401) is up too: the runtime does not hold the
/// password; the core checks health with it.
pub async fn answers(http: &reqwest::Client, port: u16) -> bool {
    let url = format!("{}/global/health", endpoint(port));
    matches!(http.get(&url).send().await,
        Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::UNAUTHORIZED)
}

/// Starts watching run `generation` (pid `pid`, harness on `port`).
pub fn spawn(
    sandbox: Arc<Sandbox>,
    generation: u64,
    pid: i32,
    port: u16,
    mut watched: Watched,
    http: reqwest::Client,
) -> AbortHandle {
    let task = tokio::spawn(async move {
        let mut ready = false;
        let mut probes = FuturesUnordered::new();
        let mut every = tokio::time::interval(PROBE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            tokio::select! {
                exit = watched.wait(pid) => break exit,
                _ = every.tick(), if !ready && probes.len() < PROBES_OPEN => {
                    probes.push(answers(&http, port));
                }
                Some(up) = probes.next(), if !ready => {
                    if up {
                        sandbox.mark_ready(generation, endpoint(port));
                        ready = true;
                        probes.clear();
                    }
                }
            }
        };
        if sandbox.mark_exited(generation, exit) {
            // What the leader left behind in its group (its children) goes with it.
            process::kill_leftovers(pid);
        }
    });
    task.abort_handle()
}
