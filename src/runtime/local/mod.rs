//! Sandboxes as local processes: one process group per session, for the embedded default and
//! a laptop's dev loop.
//!
//! Each session gets a working folder `<root>/<session-id>/` holding its agent's home and XDG
//! dirs (`home/`), the files the core hands over, the agent's output (`sandbox.log`), and what
//! agentdeck knows about it (`sandbox.json`; `launch.json`, mode 0600, to start it again). The
//! agent runs there in a session and process group of its own, with an environment built from
//! nothing (see [`launch::environment`]), on a loopback port chosen here. A later agentdeck over
//! the same root finds its sandboxes again and takes over those still running.
//!
//! This is not a security boundary: the agent runs as the same user as agentdeck.
//! Adoption needs Linux's `/proc`.

mod adopt;
mod launch;
mod lifecycle;
mod logs;
mod monitor;
mod pool;
mod process;
mod record;
mod sandbox;
mod workdir;

pub use launch::LaunchSpec;
pub use record::{RecordState, SandboxRecord};
pub use workdir::{LOG_FILE, RECORD_FILE};

use crate::config::LocalConfig;
use crate::runtime::{
    Check, HealthChange, HealthPhase, ListedSandbox, LogOptions, LogStream, RuntimeError,
    SandboxHealth, SandboxRef, SandboxRuntime, SandboxSpec, Shell, ShellOptions, ShellSpec,
};
use async_trait::async_trait;
use sandbox::{Sandbox, Shared};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The runtime's name, as stored on sessions.
pub const KIND: &str = "local";
/// How long a stopping group has between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// The harness's health check gets this long to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The local process runtime. Dropping it leaves its sandboxes running (a later one adopts
/// them); it only stops watching them.
pub struct LocalRuntime {
    root: PathBuf,
    allowlist: Vec<String>,
    sandboxes: Mutex<HashMap<Uuid, Arc<Sandbox>>>,
    shared: Shared,
    grace: Duration,
    /// The agentdeck binary warm sandboxes run (this one when absent).
    program: Option<PathBuf>,
    pool_stats: Mutex<HashMap<String, pool::PoolStats>>,
}

/// This machine's name.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec())
        .ok()
        .filter(|s| !s.is_empty())
}

impl LocalRuntime {
    /// A runtime over `config.root`, which takes over the sandboxes found there. Must be called
    /// inside a Tokio runtime (it starts a task per running sandbox it finds). A root that
    /// cannot be created is not an error here: `check()` reports it and `provision` fails.
    pub fn new(config: &LocalConfig) -> Result<LocalRuntime, RuntimeError> {
        tokio::runtime::Handle::try_current().map_err(|_| {
            RuntimeError::Unavailable(
                "the local sandbox runtime must be created inside a Tokio runtime".to_string(),
            )
        })?;
        let root = std::path::absolute(&config.root).map_err(|e| {
            RuntimeError::Unavailable(format!(
                "invalid [local] root {}: {e}",
                config.root.display()
            ))
        })?;
        if let Err(e) = std::fs::create_dir_all(&root) {
            tracing::warn!(root = %root.display(), error = %e, "cannot create the sandboxes' folder");
        }
        let http = crate::net::direct_http_client(PROBE_TIMEOUT)
            .map_err(|e| RuntimeError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        let runtime = LocalRuntime {
            root,
            allowlist: config.env_allowlist.clone(),
            sandboxes: Mutex::new(HashMap::new()),
            shared: Shared {
                changes: broadcast::channel(256).0,
                http,
                node: hostname(),
            },
            grace: DEFAULT_STOP_GRACE,
            program: config.program.clone(),
            pool_stats: Mutex::new(HashMap::new()),
        };
        for id in runtime.folders() {
            runtime.entry(id, false);
        }
        Ok(runtime)
    }

    /// How long a stopping sandbox has between SIGTERM and SIGKILL (default 5 s).
    pub fn with_stop_grace(mut self, grace: Duration) -> LocalRuntime {
        self.grace = grace;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A session's working folder (whether or not it exists).
    pub fn workdir(&self, session_id: Uuid) -> PathBuf {
        workdir::path_for(&self.root, &session_id)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Sandbox>>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session ids of the folders under root.
    fn folders(&self) -> Vec<Uuid> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Uuid::parse_str(e.file_name().to_str()?).ok())
            .collect()
    }

    /// The sandbox of session `id`: known already, or found in its folder (and adopted), or
    /// (with `create`) a blank one about to be provisioned.
    fn entry(&self, id: Uuid, create: bool) -> Option<Arc<Sandbox>> {
        let mut map = self.map();
        if let Some(sandbox) = map.get(&id) {
            sandbox.refresh();
            if !sandbox.state().removed {
                return Some(sandbox.clone());
            }
            map.remove(&id);
        }
        let dir = self.workdir(id);
        let sandbox = if dir.is_dir() {
            let (state, adopted) = adopt::load(id, &dir, self.shared.node.clone());
            let sandbox = Arc::new(Sandbox::new(id, dir, state, self.shared.clone()));
            if let Some(adopted) = adopted {
                let mut state = sandbox.state();
                sandbox.watch_adopted(&mut state, adopted);
            }
            sandbox
        } else if create {
            Arc::new(Sandbox::new(
                id,
                dir,
                Sandbox::blank(self.shared.node.clone()),
                self.shared.clone(),
            ))
        } else {
            return None;
        };
        map.insert(id, sandbox.clone());
        Some(sandbox)
    }

    /// Forgets `sandbox` (when it is still the one known for its session).
    fn forget(&self, sandbox: &Arc<Sandbox>) {
        let mut map = self.map();
        if map
            .get(&sandbox.id)
            .is_some_and(|s| Arc::ptr_eq(s, sandbox))
        {
            map.remove(&sandbox.id);
        }
    }

    /// Ports of the other sandboxes' runs (a new run should not take one being started).
    fn ports_in_use(&self, except: Uuid) -> Vec<u16> {
        let sandboxes: Vec<Arc<Sandbox>> = self
            .map()
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(_, s)| s.clone())
            .collect();
        sandboxes
            .iter()
            .filter_map(|s| s.state().running().map(|r| r.port))
            .collect()
    }
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        for sandbox in self.map().values() {
            if let Some(monitor) = sandbox.state().run.as_mut().and_then(|r| r.monitor.take()) {
                monitor.abort();
            }
        }
    }
}

/// The session id a reference names, when it is one of ours.
fn session_of(sandbox: &SandboxRef) -> Result<Uuid, RuntimeError> {
    if sandbox.runtime != KIND {
        return Err(RuntimeError::NotFound(sandbox.name.clone()));
    }
    Uuid::parse_str(&sandbox.name).map_err(|_| RuntimeError::NotFound(sandbox.name.clone()))
}

#[async_trait]
impl SandboxRuntime for LocalRuntime {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn provision(&self, spec: &SandboxSpec) -> Result<SandboxRef, RuntimeError> {
        self.provision_sandbox(spec).await
    }

    async fn health(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        let id = session_of(sandbox)?;
        let entry = self
            .entry(id, false)
            .ok_or_else(|| RuntimeError::NotFound(sandbox.name.clone()))?;
        // A sandbox still starting as far as this process knows (one it has just found running
        // from its folder, as a short-lived CLI command does) is asked at once rather than at
        // its monitor's next probe: a command run once needs the harness now.
        let starting = {
            let state = entry.state();
            if state.health.phase == HealthPhase::Starting && !state.removed {
                state.running().map(|r| (r.generation, r.port))
            } else {
                None
            }
        };
        if let Some((generation, port)) = starting {
            // Asked here, unless the monitor's own questions get an answer first: a connection
            // the harness leaves unanswered while it starts holds up nobody.
            let mut changes = self.shared.changes.subscribe();
            let heard = async {
                loop {
                    match changes.recv().await {
                        Ok(c) if c.sandbox == *sandbox => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            tokio::select! {
                up = monitor::answers(&self.shared.http, port) => if up {
                    entry.mark_ready(generation, monitor::endpoint(port));
                },
                () = heard => {}
            }
        }
        let state = entry.state();
        if state.removed {
            return Err(RuntimeError::NotFound(sandbox.name.clone()));
        }
        let mut health = state.health.clone();
        if state.pool.is_some() {
            health.launch = Some("warm".to_string());
        }
        Ok(health)
    }

    fn watch(&self) -> broadcast::Receiver<HealthChange> {
        self.shared.changes.subscribe()
    }

    async fn list(&self) -> Result<Vec<ListedSandbox>, RuntimeError> {
        let mut ids = self.folders();
        ids.extend(
            self.map()
                .iter()
                .filter(|(_, s)| {
                    let state = s.state();
                    state.exists && !state.removed
                })
                .map(|(id, _)| *id),
        );
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .map(|id| {
                // A warm pool's sandbox is its claiming session's (none's while unclaimed).
                let known = self.map().get(&id).cloned();
                let session_id = match known {
                    Some(sandbox) => sandbox.session(&sandbox.state()),
                    None => match record::SandboxRecord::read(&self.workdir(id)) {
                        Ok(record) => record.pool.map_or(Some(id), |m| m.claimed_by),
                        Err(_) => Some(id),
                    },
                };
                ListedSandbox {
                    sandbox: SandboxRef {
                        runtime: KIND.to_string(),
                        name: id.to_string(),
                    },
                    session_id,
                }
            })
            .collect())
    }

    /// `options.since` is approximate: see [`logs::stream`].
    async fn logs(
        &self,
        sandbox: &SandboxRef,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        let id = session_of(sandbox)?;
        let entry = self
            .entry(id, false)
            .ok_or_else(|| RuntimeError::NotFound(sandbox.name.clone()))?;
        logs::stream(entry.dir.join(LOG_FILE), options).await
    }

    async fn restart(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        self.restart_sandbox(session_of(sandbox)?).await
    }

    async fn suspend(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        self.suspend_sandbox(session_of(sandbox)?).await
    }

    async fn resume(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        self.resume_sandbox(session_of(sandbox)?).await
    }

    fn keeps_warm_pools(&self) -> bool {
        true
    }

    async fn keep_warm(&self, pools: &[crate::runtime::WarmPool]) -> Result<(), RuntimeError> {
        self.keep(pools).await
    }

    async fn claim_warm(
        &self,
        pool: &crate::runtime::WarmPool,
        _team: &str,
        claim: &crate::bootstrap::handover::Claim,
    ) -> Result<Option<SandboxRef>, RuntimeError> {
        self.claim(pool, claim).await
    }

    async fn pool_health(&self) -> Vec<crate::model::PoolHealth> {
        self.pools().await
    }

    async fn destroy(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        match session_of(sandbox) {
            Ok(id) => self.destroy_sandbox(id).await,
            // Not one of ours: nothing of it is here.
            Err(_) => Ok(()),
        }
    }

    /// The operator's shell (`$SHELL`, else `/bin/sh`) in the sandbox's working folder, with
    /// the environment the sandbox's agent gets (and the operator's `TERM`). It runs on the
    /// operator's terminal itself, or on the streams it is given when there is none.
    async fn shell(
        &self,
        sandbox: &SandboxRef,
        options: &ShellOptions,
    ) -> Result<Shell, RuntimeError> {
        let id = session_of(sandbox)?;
        let dir = self.workdir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound(sandbox.name.clone()));
        }
        let launch = record::read_launch(&dir).map_err(RuntimeError::Failed)?;
        let mut env = launch::environment(
            &self.allowlist,
            |name| std::env::var_os(name),
            &launch.env,
            &dir,
            &id.to_string(),
        );
        if let Some(term) = &options.term {
            env.insert("TERM".to_string(), term.into());
        }
        let program = std::env::var_os("SHELL")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_file())
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        env.insert("SHELL".to_string(), program.clone().into_os_string());
        Ok(Shell::Process(ShellSpec {
            program,
            args: Vec::new(),
            cwd: dir,
            env,
        }))
    }

    async fn check(&self) -> Vec<Check> {
        let root = self.root.display().to_string();
        let probe = self
            .root
            .join(format!(".agentdeck-check-{}", std::process::id()));
        let result = std::fs::create_dir_all(&self.root)
            .and_then(|()| std::fs::write(&probe, b"ok"))
            .and_then(|()| std::fs::remove_file(&probe));
        let sandboxes: Vec<Arc<Sandbox>> = self.map().values().cloned().collect();
        let running = sandboxes
            .iter()
            .filter(|s| s.state().running().is_some())
            .count();
        vec![match result {
            Ok(()) => Check {
                name: "local runtime".to_string(),
                ok: true,
                detail: format!("sandboxes go to {root} ({running} running)"),
                fix: None,
            },
            Err(e) => Check {
                name: "local runtime".to_string(),
                ok: false,
                detail: format!("cannot write to {root}: {e}"),
                fix: Some(format!(
                    "make {root} writable, or set root = \"…\" under [local] to a folder you can write"
                )),
            },
        }]
    }
}
