//! A session's diagnosis: everything about one session an operator needs at 3 a.m. (its status
//! and failure, its latest phases, its sandbox's health, the tail of its log, whether the
//! gateway answers) and plain advice on what to do. Assembled here, once, for every front end:
//! the cockpit's diagnose page, `agentdeck sessions diagnose` and
//! `GET /api/sessions/{id}/diagnosis`.

use super::{Core, Result};
use crate::model::{
    Ask, AskKind, Event, HealthPhase, LogOptions, SandboxHealth, Session, SessionStatus,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::time::Duration;
use uuid::Uuid;

/// Phase changes kept, latest last.
const PHASES: i64 = 12;
/// Log lines kept, latest last.
const LOG_TAIL: usize = 15;
/// Longest wait for the log's tail (a sandbox that does not answer must not hold the page).
const LOG_WAIT: Duration = Duration::from_secs(5);
/// A turn that has shown nothing for this long is a finding: the agent or one of its tools may
/// hang (a long quiet build shows here too, and the finding says how to tell).
pub const STUCK_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

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
    /// What the agent waits for a person to answer, oldest first.
    pub asks: Vec<Ask>,
    /// The session's latest event of any kind (how long its turn has been quiet).
    pub last_event: Option<Event>,
    /// When this diagnosis was taken (the findings' ages count from here).
    pub at: DateTime<Utc>,
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
        let asks = async {
            self.store()
                .list_asks(id, true)
                .await
                .unwrap_or_else(|err| {
                    tracing::warn!(session = %id, %err, "cannot list what the agent asks");
                    Vec::new()
                })
        };
        let last_event = async {
            let after = session.last_event_seq.saturating_sub(1);
            match self.store().list_events(id, after, 1).await {
                Ok(mut events) => events.pop(),
                Err(err) => {
                    tracing::warn!(session = %id, %err, "cannot read the latest event");
                    None
                }
            }
        };
        let (phases, health, log_tail, gateway, forks, asks, last_event) =
            tokio::join!(phases, health, log_tail, gateway, forks, asks, last_event);
        Ok(Diagnosis {
            session,
            phases,
            health,
            log_tail,
            gateway,
            forks,
            asks,
            last_event,
            at: Utc::now(),
        })
    }
}

impl Diagnosis {
    /// A diagnosis of `session` with nothing looked at yet (the cockpit's page while the core
    /// looks; tests fill in the parts they need).
    pub fn of(session: Session) -> Self {
        Diagnosis {
            session,
            phases: Vec::new(),
            health: None,
            log_tail: Ok(Vec::new()),
            gateway: Ok(()),
            forks: Vec::new(),
            asks: Vec::new(),
            last_event: None,
            at: Utc::now(),
        }
    }

    /// What was found and what to do about it, most pressing first, in words every front end
    /// can show; "Nothing looks wrong." when nothing was.
    pub fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        let s = &self.session;
        if let Some(reason) = &s.failure_reason {
            out.push(failure_advice(reason).to_string());
        }
        let id = s.id;
        for ask in &self.asks {
            let waited = ago(ask.asked_at, self.at);
            out.push(match ask.kind {
                AskKind::Permission => format!(
                    "The agent has waited {waited} for a person's permission ({}). Answer it in \
                     the transcript (a allow, r reject) or with `agentdeck sessions answer {id} \
                     {} --reply once`.",
                    ask.summary(),
                    ask.id
                ),
                AskKind::Question => format!(
                    "The agent has waited {waited} for a person to answer: {}. Answer it in the \
                     transcript or with `agentdeck sessions answer {id} {} --label LABEL`.",
                    ask.summary(),
                    ask.id
                ),
            });
        }
        if let Some(Ok(h)) = &self.health {
            if let Some(crash) = self.crash(h) {
                out.push(crash);
            }
            match h.phase {
                HealthPhase::Scheduling => out.push(
                    "No node can take the sandbox: check resource requests and cluster capacity."
                        .into(),
                ),
                HealthPhase::Gone if s.status.wants_sandbox() => out.push(
                    "The sandbox is gone: the reconciler provisions it again; if it does not, \
                     restart the session."
                        .into(),
                ),
                _ => {}
            }
        }
        if let Some(Err(e)) = &self.health {
            out.push(format!("The runtime cannot tell the sandbox's health: {e}"));
        }
        if let Some(stuck) = self.stuck() {
            out.push(stuck);
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

    /// The agent's last run ended on its own (a restart of its container, or a process that
    /// exited): when, how, and what that usually means.
    fn crash(&self, h: &SandboxHealth) -> Option<String> {
        let last = h.last_termination.as_deref()?;
        if h.restarts == 0 && h.phase != HealthPhase::Failed {
            return None;
        }
        let when = h
            .last_termination_at
            .map(|at| format!(" {} ago", ago(at, self.at)))
            .unwrap_or_default();
        let runs = match h.restarts {
            0 => "The agent's process ended".to_string(),
            1 => "The agent's container restarted once; its last run ended".to_string(),
            n => format!("The agent's container restarted {n} times; its last run ended"),
        };
        let meaning = if last.contains("OOMKilled") {
            " It ran out of memory: raise memory_limit under [agents.ID]."
        } else if last.contains("137") || last.contains("signal 9") {
            " It was killed (SIGKILL: out of memory, or killed by someone); its log and events say which."
        } else if h.phase == HealthPhase::CrashLooping {
            " It keeps crashing: its log says why."
        } else {
            " Its log says why."
        };
        let sanitized = crate::sanitize::line(last);
        Some(format!("{runs}{when}: {sanitized}.{meaning}"))
    }

    /// A turn that has shown nothing for [`STUCK_AFTER`].
    fn stuck(&self) -> Option<String> {
        let s = &self.session;
        if s.status != SessionStatus::Busy || !self.asks.is_empty() {
            return None;
        }
        let last = self
            .last_event
            .as_ref()
            .map_or(s.last_activity_at, |e| e.at);
        let quiet = self.at - last;
        if quiet < STUCK_AFTER {
            return None;
        }
        let id = s.id;
        Some(format!(
            "The turn has shown nothing for {} (busy since {} ago): the agent or a tool it runs \
             may hang. Look at its log; abort the turn (A in the cockpit, `agentdeck sessions \
             abort {id}`), or restart the session.",
            ago(last, self.at),
            ago(s.updated_at.min(last), self.at)
        ))
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
            "asks": self.asks,
            "last_event_at": self.last_event.as_ref().map(|e| e.at),
            "last_event": self.last_event,
            "forks": self.forks,
            "at": self.at,
            "advice": self.advice(),
        })
    }

    /// A diagnosis read back from [`to_json`](Self::to_json) (a client of `serve`).
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Diagnosis, String> {
        fn read<T: serde::de::DeserializeOwned>(
            v: &serde_json::Value,
            what: &str,
        ) -> std::result::Result<T, String> {
            serde_json::from_value(v.clone()).map_err(|e| format!("the diagnosis's {what}: {e}"))
        }
        let error = |part: &serde_json::Value| part["error"].as_str().map(str::to_string);
        let session = read(&v["session"], "session")?;
        let health = match &v["sandbox"] {
            serde_json::Value::Null => None,
            part => Some(match error(part) {
                Some(e) => Err(e),
                None => Ok(read(part, "sandbox")?),
            }),
        };
        let log_tail = match error(&v["log_tail"]) {
            Some(e) => Err(e),
            None => Ok(read(&v["log_tail"], "log")?),
        };
        let gateway = match error(&v["gateway"]) {
            Some(e) => Err(e),
            None => Ok(()),
        };
        let or_empty = |part: &serde_json::Value| {
            if part.is_null() {
                serde_json::json!([])
            } else {
                part.clone()
            }
        };
        Ok(Diagnosis {
            session,
            phases: read(&or_empty(&v["phases"]), "phases")?,
            health,
            log_tail,
            gateway,
            forks: read(&or_empty(&v["forks"]), "forks")?,
            asks: read(&or_empty(&v["asks"]), "asks")?,
            last_event: read(&v["last_event"], "last event")?,
            at: read(&v["at"], "time").unwrap_or_else(|_| Utc::now()),
        })
    }
}

/// What to do about a session that failed, by its reason (the cockpit shows it over a failed
/// session's transcript and list row; the diagnosis says it first).
pub fn failure_advice(reason: &str) -> &'static str {
    if reason.contains("not found on PATH") {
        "Install the agent's command, or run `eval \"$(scripts/offline-stack.sh up)\"`, then restart the session."
    } else if reason.contains("ImagePullBackOff") || reason.contains("ErrImagePull") {
        "The image cannot be pulled: check the agent's image name and the registry credentials."
    } else if reason.contains("not ready within") {
        "The sandbox did not come up in time: look at its log and events, then restart the session."
    } else if reason.contains("has no image") {
        "Give the agent an image under [agents.ID] in the config, then restart the session."
    } else {
        "The session failed: fix the cause above, then restart the session or end it."
    }
}

/// A duration in the largest unit that matters: `40s`, `3m`, `2h 5m`, `3d`.
pub fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => match (s % 3600) / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h {m}m", s / 3600),
        },
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AskStatus, HealthPhase};
    use crate::tui::sessions::tests::session;

    fn at(secs_ago: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::TimeDelta::seconds(secs_ago)
    }

    fn diagnosis(status: SessionStatus) -> Diagnosis {
        let mut d = Diagnosis::of(session(1, "coder", status));
        d.health = Some(Ok(SandboxHealth::new(HealthPhase::Ready)));
        d
    }

    #[test]
    fn a_healthy_session_has_no_finding() {
        assert_eq!(
            diagnosis(SessionStatus::Idle).advice(),
            ["Nothing looks wrong."]
        );
    }

    #[test]
    fn a_person_awaited_is_a_finding() {
        let mut d = diagnosis(SessionStatus::Busy);
        d.asks.push(Ask {
            session_id: d.session.id,
            id: "per_1".into(),
            kind: AskKind::Permission,
            status: AskStatus::Pending,
            title: "bash".into(),
            detail: serde_json::json!({"patterns": ["rm -rf build"]}),
            asked_at: at(190, d.at),
            answer: None,
            message: None,
            answered_by: None,
            answered_at: None,
        });
        // Quiet for long, but waiting for a person is not a stuck turn.
        d.last_event = Some(Event {
            session_id: d.session.id,
            seq: 9,
            at: at(3600, d.at),
            kind: "harness.permission.asked".into(),
            payload: serde_json::json!({}),
        });
        let advice = d.advice();
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(advice[0].contains("waited 3m"), "{advice:?}");
        assert!(
            advice[0].contains("permission (bash wants to run: rm -rf build)"),
            "{advice:?}"
        );
        assert!(advice[0].contains("per_1 --reply once"), "{advice:?}");
    }

    #[test]
    fn a_recent_crash_is_a_finding() {
        let mut d = diagnosis(SessionStatus::Idle);
        let mut h = SandboxHealth::new(HealthPhase::Ready);
        h.restarts = 1;
        h.last_termination = Some("Error (exit code 137)".into());
        h.last_termination_at = Some(at(65, d.at));
        d.health = Some(Ok(h));
        let advice = d.advice();
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(advice[0].contains("restarted once"), "{advice:?}");
        assert!(
            advice[0].contains("1m ago: Error (exit code 137)"),
            "{advice:?}"
        );
        assert!(advice[0].contains("SIGKILL"), "{advice:?}");
        // The same on a local sandbox whose process was killed.
        let mut h = SandboxHealth::new(HealthPhase::Failed);
        h.last_termination = Some("killed by signal 9".into());
        d.health = Some(Ok(h));
        let advice = d.advice();
        assert!(
            advice[0].starts_with("The agent's process ended"),
            "{advice:?}"
        );
        assert!(advice[0].contains("SIGKILL"), "{advice:?}");
    }

    #[test]
    fn a_stuck_turn_is_a_finding() {
        let mut d = diagnosis(SessionStatus::Busy);
        d.session.updated_at = at(900, d.at);
        let quiet = |secs| Event {
            session_id: d.session.id,
            seq: 9,
            at: at(secs, d.at),
            kind: "harness.message.part.updated".into(),
            payload: serde_json::json!({}),
        };
        d.last_event = Some(quiet(60));
        assert_eq!(
            d.advice(),
            ["Nothing looks wrong."],
            "a minute is not stuck"
        );
        d.last_event = Some(quiet(STUCK_AFTER.num_seconds() + 60));
        let advice = d.advice();
        assert!(advice[0].contains("shown nothing for 6m"), "{advice:?}");
        assert!(advice[0].contains("busy since 15m"), "{advice:?}");
        assert!(advice[0].contains("sessions abort"), "{advice:?}");
        // An idle session is not in a turn.
        d.session.status = SessionStatus::Idle;
        assert_eq!(d.advice(), ["Nothing looks wrong."]);
    }

    /// What `serve` sends is what a client reads back.
    #[test]
    fn a_diagnosis_reads_back_from_its_json() {
        let mut d = diagnosis(SessionStatus::Failed);
        d.session.failure_reason = Some("cannot create the sandbox".into());
        d.log_tail = Err("no log".into());
        d.gateway = Err("nothing listens at http://x".into());
        d.forks = vec![session(2, "coder", SessionStatus::Idle)];
        let back = Diagnosis::from_json(&d.to_json()).expect("read back");
        assert_eq!(back.session, d.session);
        assert_eq!(back.health, d.health);
        assert_eq!(back.log_tail, d.log_tail);
        assert_eq!(back.gateway, d.gateway);
        assert_eq!(back.forks, d.forks);
        assert_eq!(back.advice(), d.advice());
    }

    #[test]
    fn ages_read_in_the_largest_unit() {
        let now = Utc::now();
        assert_eq!(ago(at(5, now), now), "5s");
        assert_eq!(ago(at(125, now), now), "2m");
        assert_eq!(ago(at(7500, now), now), "2h 5m");
        assert_eq!(ago(at(7200, now), now), "2h");
        assert_eq!(ago(at(3 * 86_400, now), now), "3d");
        assert_eq!(ago(at(-5, now), now), "0s");
    }
}
