//! A configuration read again while running (SIGHUP, the cockpit's `:reload`): what is read
//! each time it is used changes in place (the agents, the session defaults and timeouts, the
//! API tokens, the cockpit's keys and theme); what was built from it at start (the store, the
//! runtime, the listener, the worker, the gateway client) stays as it was, and the report says
//! that it needs a restart, so nothing changes silently.

use super::{Core, Result};
use crate::config::Config;
use std::sync::Arc;

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reloaded {
    /// What changed and applies now: `agent coder changed`, `[sessions]`, `API tokens` …
    pub applied: Vec<String>,
    /// What changed and applies only once agentdeck is restarted: `[store] database_url` …
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    /// One line for a status bar or a log.
    pub fn summary(&self) -> String {
        let applied = if self.applied.is_empty() {
            "config reloaded: nothing changed".to_string()
        } else {
            format!("config reloaded: {}", self.applied.join(", "))
        };
        if self.needs_restart.is_empty() {
            applied
        } else {
            format!(
                "{applied}; needs a restart to apply: {}",
                self.needs_restart.join(", ")
            )
        }
    }
}

impl Core {
    /// Puts `new` in effect where it can be: see the module's note. The agents are recorded
    /// in the store again when they changed.
    pub async fn reload(&self, new: Config) -> Result<Reloaded> {
        let old = self.config();
        let mut report = Reloaded::default();
        for (id, agent) in &new.agents {
            match old.agents.get(id) {
                None => report.applied.push(format!("agent {id} added")),
                Some(before) if before != agent => {
                    report.applied.push(format!("agent {id} changed"))
                }
                Some(_) => {}
            }
        }
        for id in old.agents.keys().filter(|id| !new.agents.contains_key(*id)) {
            report.applied.push(format!("agent {id} removed"));
        }
        let agents_changed = !report.applied.is_empty();
        for (changed, what) in [
            (old.sessions != new.sessions, "[sessions]"),
            (old.tokens != new.tokens, "[api] tokens"),
            (old.tui != new.tui, "[tui]"),
        ] {
            if changed {
                report.applied.push(what.to_string());
            }
        }
        for (changed, what) in [
            (old.database_url != new.database_url, "[store] database_url"),
            (old.runtime != new.runtime, "[runtime] kind"),
            (old.listen != new.listen, "[api] listen"),
            (old.worker != new.worker, "[worker]"),
            (old.gateway != new.gateway, "[gateway]"),
            (old.local != new.local, "[local]"),
            (old.kubernetes != new.kubernetes, "[kubernetes]"),
        ] {
            if changed {
                report.needs_restart.push(what.to_string());
            }
        }
        // What needs a restart stays as running, so `config()` says what is in effect.
        let effective = Config {
            database_url: old.database_url.clone(),
            runtime: old.runtime,
            listen: old.listen,
            worker: old.worker.clone(),
            gateway: old.gateway.clone(),
            local: old.local.clone(),
            kubernetes: old.kubernetes.clone(),
            ..new
        };
        match self.inner.config.write() {
            Ok(mut c) => *c = Arc::new(effective),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(effective),
        }
        if agents_changed {
            self.sync_agents().await?;
        }
        tracing::info!(
            applied = ?report.applied,
            needs_restart = ?report.needs_restart,
            "configuration reloaded"
        );
        Ok(report)
    }
}

impl Core {
    /// Reads the configuration again from where it was read at start, and puts it in effect.
    /// A file that no longer reads is refused whole, with the error, and nothing changes.
    pub async fn reload_from_files(&self) -> Result<Reloaded> {
        let new = self.config().read_again().map_err(|e| {
            super::CoreError::Invalid(format!("the configuration was not reloaded: {e}"))
        })?;
        self.reload(new).await
    }

    /// Reloads on each SIGHUP (`kill -HUP`, what service managers send for a reload), saying
    /// what applied and what needs a restart in the log. For `serve` and `worker`; the cockpit
    /// says it on its status line instead.
    pub fn reload_on_hangup(&self) -> tokio::task::JoinHandle<()> {
        let core = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut hangups = match signal(SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::warn!(%err, "cannot listen for SIGHUP: reload by restarting");
                        return;
                    }
                };
                while hangups.recv().await.is_some() {
                    match core.reload_from_files().await {
                        Ok(report) => {
                            tracing::info!("{}", report.summary());
                            eprintln!("agentdeck: {}", report.summary());
                        }
                        Err(err) => {
                            tracing::error!(%err, "SIGHUP");
                            eprintln!("agentdeck: {err}");
                        }
                    }
                }
            }
        })
    }
}
