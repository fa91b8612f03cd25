//! One container: its processes, one run after the other as the restart policy says, with
//! back-off, logs, readiness probe and graceful stop.

use super::setup::{self, Launch, SetupError, Volumes};
use super::{ContainerRecord, PodEntry, RunState, Shared, Terminated, lock, logs, now_secs, probe};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The first back-off before a restart; it doubles up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_START: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run at least this long starts the back-off again from [`BACKOFF_START`].
pub(crate) const BACKOFF_RESET: Duration = Duration::from_secs(20);
/// How long a setup that failed (a missing Secret …) waits before it is tried again.
pub(crate) const SETUP_RETRY: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Pod) -> RestartPolicy {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }
}

/// Sends `signal` to a process group (a container's processes).
pub(crate) fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid > 1 {
        // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH, ignored.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

type SpawnJob = (Command, oneshot::Sender<std::io::Result<Child>>);

/// Starts processes from a thread of the kubelet's own, so that `PR_SET_PDEATHSIG` (which
/// fires when the thread that forked a process ends) kills them exactly when the kubelet goes:
/// on stop, on drop, or when its process dies.
pub(crate) struct Spawner {
    jobs: Mutex<Option<std::sync::mpsc::Sender<SpawnJob>>>,
}

impl Spawner {
    pub fn start() -> anyhow::Result<Spawner> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("the test kubelet needs a tokio runtime: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("test-kubelet-spawner".into())
            .spawn(move || {
                let _runtime = handle.enter();
                while let Ok((mut command, reply)) = rx.recv() {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(|e| anyhow::anyhow!("starting the kubelet's process thread: {e}"))?;
        Ok(Spawner {
            jobs: Mutex::new(Some(tx)),
        })
    }

    pub async fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let gone = || std::io::Error::other("the kubelet is stopping");
        let jobs = lock(&self.jobs).clone().ok_or_else(gone)?;
        let (reply, answer) = oneshot::channel();
        jobs.send((command, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Ends the thread: processes still running get SIGKILL from the kernel.
    pub fn close(&self) {
        lock(&self.jobs).take();
    }
}

/// Everything a container task needs.
pub(crate) struct ContainerTask {
    pub shared: Arc<Shared>,
    pub entry: Arc<PodEntry>,
    pub index: usize,
    pub pod: Arc<Pod>,
    pub container: Container,
    pub volumes: Arc<Volumes>,
    pub policy: RestartPolicy,
}

/// A started process.
struct Process {
    child: Child,
    pid: u32,
    log: tokio::task::JoinHandle<()>,
}

impl ContainerTask {
    fn set(&self, f: impl FnOnce(&mut ContainerRecord)) {
        self.entry.container(self.index, f);
    }

    fn pid_file(&self) -> PathBuf {
        self.entry
            .dir
            .join("containers")
            .join(format!("{}.pid", self.container.name))
    }

    /// Runs the container until it is done: stopped (deletion, vanished pod, kubelet stop) or
    /// ended for good as its restart policy says.
    pub async fn run(self) {
        let name = self.container.name.clone();
        let entry = self.entry.clone();
        let mut backoff = BACKOFF_START;
        let mut reported: Option<String> = None;
        let mut pulled = false;
        // Starts tried so far: the next one's restartCount.
        let mut attempts = 0u32;
        loop {
            if entry.stop.is_cancelled() {
                break;
            }
            let launch = match setup::launch(
                &self.shared,
                &entry,
                &self.pod,
                &self.container,
                &self.volumes,
            )
            .await
            {
                Ok(launch) => launch,
                Err(e) => {
                    let (reason, message) = match e {
                        SetupError::Config(m) => ("CreateContainerConfigError", m),
                        SetupError::Container(m) => ("CreateContainerError", m),
                    };
                    self.set(|c| {
                        c.state = RunState::Waiting {
                            reason: reason.to_string(),
                            message: Some(message.clone()),
                        }
                    });
                    if reported.as_deref() != Some(message.as_str()) {
                        self.shared.event(
                            &entry,
                            Some(&name),
                            true,
                            "Failed",
                            format!("Error: {message}"),
                        );
                        reported = Some(message);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(SETUP_RETRY) => continue,
                        _ = entry.stop.cancelled() => break,
                    }
                }
            };
            reported = None;
            if !pulled {
                pulled = true;
                self.shared.event(
                    &entry,
                    Some(&name),
                    false,
                    "Pulled",
                    format!(
                        "Container image \"{}\" already present on machine \
                         (the test kubelet pulls nothing)",
                        self.container.image.as_deref().unwrap_or_default()
                    ),
                );
            }
            let began = Instant::now();
            let attempt = attempts;
            attempts += 1;
            let ended = match self.start(&launch, attempt).await {
                Ok((process, started_at)) => match self.wait(process, &launch, started_at).await {
                    (terminated, true) => {
                        self.set(|c| c.state = RunState::Terminated(terminated));
                        break;
                    }
                    (terminated, false) => terminated,
                },
                Err(message) => {
                    self.set(|c| c.restart_count = attempt);
                    self.shared.event(
                        &entry,
                        Some(&name),
                        true,
                        "Failed",
                        format!("Error: {message}"),
                    );
                    let now = now_secs();
                    Terminated {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".to_string(),
                        message: Some(message),
                        started_at: now.clone(),
                        finished_at: now,
                        container_id: None,
                    }
                }
            };
            let restart = match self.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => ended.exit_code != 0,
                RestartPolicy::Never => false,
            };
            if !restart || entry.stop.is_cancelled() {
                self.set(|c| c.state = RunState::Terminated(ended));
                break;
            }
            if began.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_START;
            }
            let previous = entry.lock().containers[self.index].last.clone();
            let message = format!(
                "back-off {}s restarting failed container={name} pod={}",
                backoff.as_secs(),
                entry.describe()
            );
            self.set(|c| {
                c.last = Some(ended.clone());
                c.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".to_string(),
                    message: Some(message),
                };
            });
            self.shared.event(
                &entry,
                Some(&name),
                true,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    entry.describe()
                ),
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = entry.stop.cancelled() => {
                    // Stopped while waiting: it stays as it ended.
                    self.set(|c| {
                        c.last = previous;
                        c.state = RunState::Terminated(ended);
                    });
                    break;
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.set(|c| {
            c.done = true;
            c.ready = false;
        });
    }

    /// Starts a run (the `attempt`-th start): the process, its log, and the record says so.
    async fn start(&self, launch: &Launch, attempt: u32) -> Result<(Process, String), String> {
        let name = &self.container.name;
        let (run, log_path) = {
            let state = self.entry.lock();
            let run = state.containers[self.index].runs;
            (run, logs::path(&self.entry.dir, name, run))
        };
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = self.shared.spawner.spawn(command).await.map_err(|e| {
            format!(
                "failed to start container {name:?}: exec: {:?}: {e}",
                launch.program
            )
        })?;
        let Some(pid) = child.id() else {
            return Err(format!("container {name:?} exited at once"));
        };
        let log = tokio::spawn(logs::write(
            log_path,
            child.stdout.take(),
            child.stderr.take(),
        ));
        let _ = std::fs::create_dir_all(self.entry.dir.join("containers"));
        let _ = std::fs::write(self.pid_file(), pid.to_string());
        let started_at = now_secs();
        let probed = self.container.readiness_probe.is_some();
        self.set(|c| {
            c.restart_count = attempt;
            c.runs = run + 1;
            c.pid = Some(pid);
            c.launch = Some(Arc::new(launch.clone()));
            c.log_open = true;
            c.ready = !probed;
            c.state = RunState::Running {
                started_at: started_at.clone(),
                pid,
            };
        });
        self.shared.event(
            &self.entry,
            Some(name),
            false,
            "Created",
            format!("Created container: {name}"),
        );
        self.shared.event(
            &self.entry,
            Some(name),
            false,
            "Started",
            format!("Started container {name}"),
        );
        Ok((Process { child, pid, log }, started_at))
    }

    /// Waits for the run to end: by itself (false) or stopped (true).
    async fn wait(
        &self,
        mut process: Process,
        launch: &Launch,
        started_at: String,
    ) -> (Terminated, bool) {
        let probe_stop = CancellationToken::new();
        if let Some(readiness) = self.container.readiness_probe.clone() {
            tokio::spawn(probe::readiness(
                self.shared.clone(),
                self.entry.clone(),
                self.index,
                process.pid,
                self.container.clone(),
                readiness,
                Arc::new(launch.clone()),
                probe_stop.clone(),
            ));
        }
        let (status, stopped) = tokio::select! {
            status = process.child.wait() => (status, false),
            _ = self.entry.stop.cancelled() => (self.stop(&mut process).await, true),
        };
        probe_stop.cancel();
        // What the main process left behind in its group dies with it, as in a container.
        signal_group(process.pid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut process.log).await;
        let _ = std::fs::remove_file(self.pid_file());
        let terminated = terminated(status, started_at, process.pid);
        self.set(|c| {
            c.pid = None;
            c.launch = None;
            c.ready = false;
            c.log_open = false;
            c.state = RunState::Terminated(terminated.clone());
        });
        (terminated, stopped)
    }

    /// SIGTERM to the group, SIGKILL after the grace period (or at once when the pod vanished).
    async fn stop(&self, process: &mut Process) -> std::io::Result<ExitStatus> {
        let name = &self.container.name;
        if !self.entry.gone.is_cancelled() {
            self.shared.event(
                &self.entry,
                Some(name),
                false,
                "Killing",
                format!("Stopping container {name}"),
            );
            signal_group(process.pid, libc::SIGTERM);
            tokio::select! {
                status = process.child.wait() => return status,
                _ = tokio::time::sleep(self.entry.grace()) => {}
                _ = self.entry.gone.cancelled() => {}
            }
        }
        signal_group(process.pid, libc::SIGKILL);
        process.child.wait().await
    }
}

/// A run's end as the status shows it.
fn terminated(status: std::io::Result<ExitStatus>, started_at: String, pid: u32) -> Terminated {
    let (exit_code, signal, message) = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None, None),
            (None, Some(signal)) => (128 + signal, Some(signal), None),
            (None, None) => (255, None, None),
        },
        Err(e) => (255, None, Some(format!("waiting for the process: {e}"))),
    };
    Terminated {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.to_string(),
        message,
        started_at,
        finished_at: now_secs(),
        container_id: Some(container_id(pid)),
    }
}

pub(crate) fn container_id(pid: u32) -> String {
    format!("testkubelet://{pid}")
}
