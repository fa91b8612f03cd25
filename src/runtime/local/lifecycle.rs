//! Provision, restart, suspend, resume and destroy. Each holds the sandbox's `op` lock for its
//! whole length, so operations on one sandbox happen one at a time.

use super::LocalRuntime;
use super::launch::{self, LaunchSpec};
use super::monitor::{self, Watched};
use super::process::{self, ExitInfo};
use super::record;
use super::sandbox::{Run, Sandbox};
use super::workdir::{self, LOG_FILE};
use crate::runtime::{HealthPhase, RuntimeError, SandboxRef, SandboxSpec};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a stopped process's own watcher gets to report its exit status.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(1);

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    First,
    Restart,
    Resume,
}

impl Start {
    fn reason(self) -> &'static str {
        match self {
            Start::First => "Started",
            Start::Restart => "Restarted",
            Start::Resume => "Resumed",
        }
    }
}

impl LocalRuntime {
    /// Starts a new run of the sandbox's agent. The caller holds `op`.
    fn start(&self, sandbox: &Arc<Sandbox>, why: Start) -> Result<(), RuntimeError> {
        let (launch, preferred) = {
            let state = sandbox.state();
            (state.launch.clone(), state.port)
        };
        let launch = launch.ok_or_else(|| {
            RuntimeError::Failed(format!(
                "sandbox {} cannot be started again: its launch.json is missing or unreadable; \
                 end the session and create a new one",
                sandbox.id
            ))
        })?;
        let port = workdir::free_port(preferred, &self.ports_in_use(sandbox.id))?;
        let prepared =
            launch.prepare(&self.allowlist, port, &sandbox.dir, &sandbox.id.to_string())?;
        let spawned = process::spawn(&prepared, &sandbox.dir, &sandbox.dir.join(LOG_FILE))?;
        let pid = spawned.pid;
        tracing::info!(
            sandbox = %sandbox.id,
            pid,
            port,
            program = %prepared.program.display(),
            "{}", why.reason().to_lowercase()
        );
        let mut state = sandbox.state();
        state.generation += 1;
        let generation = state.generation;
        if why == Start::Restart {
            state.health.restarts += 1;
        }
        state.exists = true;
        state.suspended = false;
        state.port = Some(port);
        state.set_phase(
            HealthPhase::Starting,
            Some(format!("waiting for the harness on port {port}")),
        );
        state.event(false, why.reason(), format!("pid {pid}, port {port}"));
        let handle = monitor::spawn(
            sandbox.clone(),
            generation,
            pid,
            port,
            Watched::Child(spawned.child),
            self.shared.http.clone(),
        );
        state.run = Some(Run {
            generation,
            pid,
            start_time: spawned.start_time,
            port,
            stopping: false,
            exit: None,
            monitor: Some(handle),
        });
        sandbox.commit(&mut state);
        // A warm pool's sandbox started again takes the claim it kept (see `bootstrap`).
        Ok(())
    }

    /// Starts a run; when that fails the sandbox is marked failed with the reason.
    fn start_or_fail(&self, sandbox: &Arc<Sandbox>, why: Start) -> Result<(), RuntimeError> {
        self.start(sandbox, why).inspect_err(|e| {
            let mut state = sandbox.state();
            state.set_phase(HealthPhase::Failed, Some(e.to_string()));
            state.event(true, "FailedToStart", e.to_string());
            sandbox.commit(&mut state);
        })
    }

    /// Stops the current run's whole process group, if any. The caller holds `op`.
    async fn stop(&self, sandbox: &Sandbox) -> Result<(), RuntimeError> {
        let target = {
            let mut state = sandbox.state();
            state.run.as_mut().map(|run| {
                run.stopping = true;
                (run.pid, run.start_time)
            })
        };
        let Some((pid, start_time)) = target else {
            return Ok(());
        };
        process::stop_group(pid, start_time, self.grace).await?;
        // Let the run's watcher report how it ended (for `last_termination`).
        let deadline = tokio::time::Instant::now() + EXIT_REPORT_WAIT;
        loop {
            {
                let mut state = sandbox.state();
                let Some(run) = state.run.as_mut() else {
                    return Ok(());
                };
                if run.exit.is_some() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    if let Some(monitor) = run.monitor.take() {
                        monitor.abort();
                    }
                    run.exit = Some(ExitInfo::Unknown);
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sandbox of `id` with its `op` lock held, or NotFound.
    async fn locked(
        &self,
        id: Uuid,
    ) -> Result<(Arc<Sandbox>, tokio::sync::OwnedMutexGuard<()>), RuntimeError> {
        let not_found = || RuntimeError::NotFound(id.to_string());
        let sandbox = self.entry(id, false).ok_or_else(not_found)?;
        let guard = sandbox.op_lock().await;
        sandbox.refresh();
        let state = sandbox.state();
        if state.removed || !state.exists {
            return Err(not_found());
        }
        drop(state);
        Ok((sandbox, guard))
    }

    pub(super) async fn provision_sandbox(
        &self,
        spec: &SandboxSpec,
    ) -> Result<SandboxRef, RuntimeError> {
        let agent = &spec.agent;
        if agent.command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(launch::empty_command(&agent.id));
        }
        for path in spec.files.keys() {
            workdir::check_relative(path).map_err(RuntimeError::Failed)?;
        }
        let launch = LaunchSpec {
            agent_id: agent.id.clone(),
            command: agent.command.clone(),
            env: spec.env.clone(),
        };
        loop {
            let Some(sandbox) = self.entry(spec.session_id, true) else {
                continue;
            };
            let _guard = sandbox.op_lock().await;
            sandbox.refresh();
            let (removed, exists, running, suspended) = {
                let state = sandbox.state();
                (
                    state.removed,
                    state.exists,
                    state.running().is_some_and(|r| !r.stopping),
                    state.suspended,
                )
            };
            if removed {
                continue;
            }
            if running && !suspended {
                return Ok(sandbox.reference());
            }
            if !exists {
                return self
                    .create(&sandbox, spec, launch)
                    .map(|()| sandbox.reference());
            }
            // Found stopped or failed: start it again with what the core asks for now.
            prepare(&sandbox, spec, &launch)?;
            sandbox.state().launch = Some(launch);
            let why = if suspended {
                Start::Resume
            } else {
                Start::Restart
            };
            return self
                .start_or_fail(&sandbox, why)
                .map(|()| sandbox.reference());
        }
    }

    /// A new sandbox: its folder, files and first run. On failure nothing of it is left.
    pub(super) fn create(
        &self,
        sandbox: &Arc<Sandbox>,
        spec: &SandboxSpec,
        launch: LaunchSpec,
    ) -> Result<(), RuntimeError> {
        let result = workdir::create(&sandbox.dir)
            .and_then(|()| prepare(sandbox, spec, &launch))
            .map(|()| workdir::track_changes(&sandbox.dir))
            .and_then(|()| {
                sandbox.state().launch = Some(launch);
                self.start(sandbox, Start::First)
            });
        if let Err(e) = &result {
            tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot create the sandbox");
            if let Err(e) = std::fs::remove_dir_all(&sandbox.dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot remove the sandbox's folder");
            }
            sandbox.state().removed = true;
            self.forget(sandbox);
        }
        result
    }

    pub(super) async fn restart_sandbox(&self, id: Uuid) -> Result<(), RuntimeError> {
        let (sandbox, _guard) = self.locked(id).await?;
        self.stop(&sandbox).await?;
        self.start_or_fail(&sandbox, Start::Restart)
    }

    pub(super) async fn suspend_sandbox(&self, id: Uuid) -> Result<(), RuntimeError> {
        let (sandbox, _guard) = self.locked(id).await?;
        if sandbox.state().suspended {
            return Ok(());
        }
        self.stop(&sandbox).await?;
        let mut state = sandbox.state();
        state.suspended = true;
        state.set_phase(HealthPhase::Suspended, None);
        state.event(
            false,
            "Suspended",
            "stopped; its folder is kept".to_string(),
        );
        sandbox.commit(&mut state);
        tracing::info!(sandbox = %id, "suspended");
        Ok(())
    }

    pub(super) async fn resume_sandbox(&self, id: Uuid) -> Result<(), RuntimeError> {
        let (sandbox, _guard) = self.locked(id).await?;
        let (suspended, running) = {
            let state = sandbox.state();
            (state.suspended, state.running().is_some())
        };
        if running && !suspended {
            return Ok(());
        }
        let why = if suspended {
            Start::Resume
        } else {
            Start::Restart
        };
        self.start_or_fail(&sandbox, why)
    }

    pub(super) async fn destroy_sandbox(&self, id: Uuid) -> Result<(), RuntimeError> {
        let Some(sandbox) = self.entry(id, false) else {
            return Ok(());
        };
        let _guard = sandbox.op_lock().await;
        sandbox.refresh();
        if sandbox.state().removed {
            return Ok(());
        }
        self.stop(&sandbox).await?;
        match std::fs::remove_dir_all(&sandbox.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RuntimeError::Transient(format!(
                    "cannot remove {}: {e}",
                    sandbox.dir.display()
                )));
            }
        }
        {
            let mut state = sandbox.state();
            if let Some(monitor) = state.run.as_mut().and_then(|r| r.monitor.take()) {
                monitor.abort();
            }
            state.removed = true;
            state.set_phase(HealthPhase::Gone, Some("destroyed".to_string()));
            state.event(false, "Destroyed", "its folder was removed".to_string());
            sandbox.announce(&state);
        }
        self.forget(&sandbox);
        tracing::info!(sandbox = %id, "destroyed");
        Ok(())
    }
}

/// Writes the core's files and the launch record into the sandbox's folder.
fn prepare(sandbox: &Sandbox, spec: &SandboxSpec, launch: &LaunchSpec) -> Result<(), RuntimeError> {
    workdir::write_files(&sandbox.dir, &spec.files)?;
    record::write_launch(&sandbox.dir, launch).map_err(|e| {
        RuntimeError::Failed(format!(
            "cannot write {}: {e}",
            sandbox.dir.join(workdir::LAUNCH_FILE).display()
        ))
    })
}
