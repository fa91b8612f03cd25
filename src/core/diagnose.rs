//! A session's diagnosis: everything about one session an operator needs at 3 a.m. (its status
//! and failure, its latest phases, its sandbox's health, the tail of its log, whether the
//! gateway answers) and plain advice on what to do. Assembled here, once, for every front end:
//! the cockpit's diagnose page, `agentdeck sessions diagnose` and
//! `GET /api/sessions/{id}/diagnosis`.

use super::{Core, Result};
use crate::model::{Event, HealthPhase, LogOptions, SandboxHealth, Session};
use futures::StreamExt;
use std::time::Duration;
use uuid::Uuid;

/// Phase changes kept, latest last.
const PHASES: i64 = 12;
/// Log lines kept, latest last.
const LOG_TAIL: usize = 15;
/// Longest wait for the log's tail (a sandbox that does not answer must not hold the page).
const LOG_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub session: Session,
    /// The latest phase changes (`session.phase` events), oldest first.
    pub phases: Vec<Event>,
    /// `None` when the session has no sandbox; an error when the runtime cannot tell.
    pub health: Option<std::result::Result<SandboxHealth, String>>,
    pub log_tail: std::result::Result<Vec<String>, String>,
    pub gateway: std::result::Result<(), String>,
    /// The sessions forked from this one, newest first.
    pub forks: Vec<Session>,
}

impl Core {
    /// Looks at everything that can be wrong with a session, at once.
    pub async fn diagnose(&self, id: Uuid) -> Result<Diagnosis> {
        let session = self.get_session(id).await?;
        let phases = async {
            self.store()
                .latest_events(id, "session.phase", PHASES)
                .await
                .unwrap_or_else(|err| {
                    tracing::warn!(session = %id, %err, "cannot read the phase history");
                    Vec::new()
                })
        };
        let health = async { self.sandbox_health(id).await.unwrap_or(None) };
        let log_tail = async {
            let tail = LogOptions {
                tail: Some(LOG_TAIL),
                since: None,
                follow: false,
            };
            match self.sandbox_logs(id, tail).await {
                Ok(stream) => {
                    match tokio::time::timeout(LOG_WAIT, stream.collect::<Vec<_>>()).await {
                        Ok(lines) => Ok(lines.into_iter().filter_map(|l| l.ok()).collect()),
                        Err(_) => Err(format!(
                            "the log did not answer within {}s",
                            LOG_WAIT.as_secs()
                        )),
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        };
        let gateway = self.gateway_health();
        let forks = async {
            self.forks(id).await.unwrap_or_else(|err| {
                tracing::warn!(session = %id, %err, "cannot list the session's forks");
                Vec::new()
            })
        };
        let (phases, health, log_tail, gateway, forks) =
            tokio::join!(phases, health, log_tail, gateway, forks);
        Ok(Diagnosis {
            session,
            phases,
            health,
            log_tail,
            gateway,
            forks,
        })
    }
}

impl Diagnosis {
    /// Plain advice for what was found, in words every front end can show.
    pub fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        let s = &self.session;
        if let Some(reason) = &s.failure_reason {
            out.push(if reason.contains("not found on PATH") {
                "Install the agent's command, or run `eval \"$(scripts/offline-stack.sh up)\"`, then restart the session.".into()
            } else if reason.contains("ImagePullBackOff") || reason.contains("ErrImagePull") {
                "The image cannot be pulled: check the agent's image name and the registry credentials.".into()
            } else if reason.contains("not ready within") {
                "The sandbox did not come up in time: look at its log and events below, then restart the session.".into()
            } else {
                "The session failed: fix the cause above, then restart the session or end it.".into()
            });
        }
        match &self.health {
            Some(Ok(h))
                if h.last_termination
                    .as_deref()
                    .is_some_and(|t| t.contains("OOMKilled")) =>
            {
                out.push(
                    "The agent ran out of memory: raise memory_limit under [agents.ID].".into(),
                )
            }
            Some(Ok(h)) if h.phase == HealthPhase::CrashLooping => {
                out.push("The agent keeps crashing: its log says why.".into())
            }
            Some(Ok(h)) if h.phase == HealthPhase::Scheduling => out.push(
                "No node can take the sandbox: check resource requests and cluster capacity."
                    .into(),
            ),
            Some(Err(e)) => out.push(format!("The runtime cannot tell the sandbox's health: {e}")),
            _ => {}
        }
        if let Err(e) = &self.gateway {
            out.push(format!(
                "The gateway is not answering ({e}): agents cannot reach their model."
            ));
        }
        if out.is_empty() {
            out.push("Nothing looks wrong.".into());
        }
        out
    }

    /// The diagnosis as JSON (REST and `-o json`): every part present, an error where a part
    /// could not be read, and the advice.
    pub fn to_json(&self) -> serde_json::Value {
        let part = |r: std::result::Result<serde_json::Value, &String>| match r {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "error": e }),
        };
        serde_json::json!({
            "session": self.session,
            "phases": self.phases,
            "sandbox": match &self.health {
                None => serde_json::Value::Null,
                Some(h) => part(h.as_ref().map(|h| serde_json::json!(h))),
            },
            "log_tail": part(self.log_tail.as_ref().map(|l| serde_json::json!(l))),
            "gateway": part(self.gateway.as_ref().map(|_| serde_json::json!({"answering": true}))),
            "forks": self.forks.iter().map(|f| serde_json::json!({"id": f.id, "title": f.title, "status": f.status, "fork_seq": f.fork_seq})).collect::<Vec<_>>(),
            "advice": self.advice(),
        })
    }
}
