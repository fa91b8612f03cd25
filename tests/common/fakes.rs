//! An in-test sandbox runtime and harness: in-memory stand-ins that let the core's own tests
//! drive sessions through their whole lifecycle before the real runtimes and harness exist
//! (those are tested against real processes in their own test files). Named as what they are.

use agentdeck::config::AgentSpec;
use agentdeck::harness::{
    Endpoint, EventStream, GatewayAccess, Harness, HarnessError, HarnessMessage, Prompt,
};
use agentdeck::runtime::{
    Check, HealthChange, HealthPhase, ListedSandbox, LogOptions, LogStream, RuntimeError,
    SandboxHealth, SandboxRef, SandboxRuntime, SandboxSpec,
};
use async_trait::async_trait;
use std::collections::BTreeMap as Map;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug, Clone)]
pub struct InTestSandbox {
    pub env: BTreeMap<String, String>,
    pub suspended: bool,
    pub restarts: u32,
}

pub struct InTestRuntime {
    pub changes: tokio::sync::broadcast::Sender<HealthChange>,
    pub sandboxes: Mutex<HashMap<String, InTestSandbox>>,
    /// When set, provisioning fails with this (permanent) reason.
    pub refuse: Mutex<Option<String>>,
    pub provisions: Mutex<u32>,
    /// How long a health read takes (none by default), and how many were in flight at most.
    pub health_delay: Mutex<std::time::Duration>,
    pub health_in_flight: std::sync::atomic::AtomicUsize,
    pub health_most_in_flight: std::sync::atomic::AtomicUsize,
    /// How long a suspend takes (none by default).
    pub suspend_delay: Mutex<std::time::Duration>,
    /// While set, sandboxes are starting, not ready (pods waiting for a node); [`Self::start_all`]
    /// makes them ready and says so on `watch()`.
    pub hold: AtomicBool,
}

impl Default for InTestRuntime {
    fn default() -> Self {
        InTestRuntime {
            changes: tokio::sync::broadcast::channel(16).0,
            sandboxes: Mutex::default(),
            refuse: Mutex::default(),
            provisions: Mutex::default(),
            health_delay: Mutex::default(),
            health_in_flight: Default::default(),
            health_most_in_flight: Default::default(),
            suspend_delay: Mutex::default(),
            hold: AtomicBool::new(false),
        }
    }
}

impl InTestRuntime {
    /// Lets held sandboxes start: each is ready, and a health change says so.
    pub fn start_all(&self) {
        self.hold.store(false, Ordering::SeqCst);
        let names: Vec<String> = self
            .sandboxes
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        for name in names {
            let mut health = SandboxHealth::new(HealthPhase::Ready);
            health.endpoint = Some(format!("in-test://{name}"));
            let _ = self.changes.send(HealthChange {
                session_id: name.strip_prefix("sbx-").and_then(|id| id.parse().ok()),
                sandbox: SandboxRef {
                    runtime: "in-test".into(),
                    name,
                },
                health,
            });
        }
    }
    pub fn sandbox(&self, name: &str) -> Option<InTestSandbox> {
        self.sandboxes.lock().ok()?.get(name).cloned()
    }
    /// Makes a sandbox vanish, as if someone deleted it behind agentdeck's back.
    pub fn vanish(&self, name: &str) {
        if let Ok(mut s) = self.sandboxes.lock() {
            s.remove(name);
        }
    }
}

#[async_trait]
impl SandboxRuntime for InTestRuntime {
    fn kind(&self) -> &'static str {
        "in-test"
    }
    async fn provision(&self, spec: &SandboxSpec) -> Result<SandboxRef, RuntimeError> {
        if let Some(reason) = self.refuse.lock().ok().and_then(|r| r.clone()) {
            return Err(RuntimeError::Failed(reason));
        }
        let name = format!("sbx-{}", spec.session_id);
        *self
            .provisions
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))? += 1;
        self.sandboxes
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?
            .entry(name.clone())
            .or_insert(InTestSandbox {
                env: spec.env.clone(),
                suspended: false,
                restarts: 0,
            });
        Ok(SandboxRef {
            runtime: "in-test".into(),
            name,
        })
    }
    async fn health(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        use std::sync::atomic::Ordering::SeqCst;
        let delay = *self
            .health_delay
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?;
        if !delay.is_zero() {
            let now = self.health_in_flight.fetch_add(1, SeqCst) + 1;
            self.health_most_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(delay).await;
            self.health_in_flight.fetch_sub(1, SeqCst);
        }
        let s = self
            .sandbox(&sandbox.name)
            .ok_or_else(|| RuntimeError::NotFound(sandbox.name.clone()))?;
        let held = self.hold.load(Ordering::SeqCst);
        let mut health = SandboxHealth::new(if s.suspended {
            HealthPhase::Suspended
        } else if held {
            HealthPhase::Starting
        } else {
            HealthPhase::Ready
        });
        health.restarts = s.restarts;
        health.endpoint = (!s.suspended && !held).then(|| format!("in-test://{}", sandbox.name));
        Ok(health)
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<HealthChange> {
        self.changes.subscribe()
    }
    async fn list(&self) -> Result<Vec<ListedSandbox>, RuntimeError> {
        let all = self
            .sandboxes
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?;
        Ok(all
            .keys()
            .map(|name| ListedSandbox {
                sandbox: SandboxRef {
                    runtime: "in-test".into(),
                    name: name.clone(),
                },
                session_id: name.strip_prefix("sbx-").and_then(|id| id.parse().ok()),
            })
            .collect())
    }
    async fn logs(&self, sandbox: &SandboxRef, _: LogOptions) -> Result<LogStream, RuntimeError> {
        Err(RuntimeError::Unavailable(format!(
            "the in-test runtime keeps no logs for {}",
            sandbox.name
        )))
    }
    async fn restart(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let mut all = self
            .sandboxes
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?;
        let s = all
            .get_mut(&sandbox.name)
            .ok_or_else(|| RuntimeError::NotFound(sandbox.name.clone()))?;
        s.restarts += 1;
        s.suspended = false;
        Ok(())
    }
    async fn suspend(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let delay = *self
            .suspend_delay
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?;
        tokio::time::sleep(delay).await;
        let mut all = self
            .sandboxes
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?;
        let s = all
            .get_mut(&sandbox.name)
            .ok_or_else(|| RuntimeError::NotFound(sandbox.name.clone()))?;
        s.suspended = true;
        Ok(())
    }
    async fn resume(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let mut all = self
            .sandboxes
            .lock()
            .map_err(|_| RuntimeError::Transient("poisoned".into()))?;
        let s = all
            .get_mut(&sandbox.name)
            .ok_or_else(|| RuntimeError::NotFound(sandbox.name.clone()))?;
        s.suspended = false;
        Ok(())
    }
    async fn destroy(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        self.vanish(&sandbox.name);
        Ok(())
    }
    async fn check(&self) -> Vec<Check> {
        Vec::new()
    }
}

#[derive(Default)]
pub struct InTestHarness {
    /// (endpoint, harness session, text) of every message sent.
    pub sent: Mutex<Vec<(String, String, String)>>,
    /// The password each call came with, in order.
    pub passwords: Mutex<Vec<Option<String>>>,
    pub sessions: Mutex<u32>,
    pub aborts: Mutex<u32>,
    /// While set, the conversation lists no prompt: what opencode lists between accepting a
    /// prompt and writing its user message.
    pub hide_echoes: AtomicBool,
    /// Changed to end every open event bus (the pump reconnects and catches up).
    pub bus: tokio::sync::watch::Sender<u32>,
    /// How often what waits for a person was read: once per catch-up, after its messages.
    pub ask_reads: AtomicUsize,
}

impl InTestHarness {
    /// Ends the event buses open now: every pump reconnects and catches up.
    pub fn drop_bus(&self) {
        self.bus.send_modify(|n| *n += 1);
    }
    pub fn catch_ups(&self) -> usize {
        self.ask_reads.load(Ordering::SeqCst)
    }
    pub fn sent_texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .map(|s| s.iter().map(|(_, _, t)| t.clone()).collect())
            .unwrap_or_default()
    }
    /// The passwords calls came with, each once, in the order first seen.
    pub fn passwords_seen(&self) -> Vec<Option<String>> {
        let mut seen: Vec<Option<String>> = Vec::new();
        for p in self.passwords.lock().map(|p| p.clone()).unwrap_or_default() {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen
    }
    fn note(&self, endpoint: &Endpoint) {
        if let Ok(mut p) = self.passwords.lock() {
            p.push(endpoint.password().map(str::to_string));
        }
    }
}

#[async_trait]
impl Harness for InTestHarness {
    async fn health(&self, endpoint: &Endpoint) -> Result<(), HarnessError> {
        self.note(endpoint);
        Ok(())
    }
    async fn create_session(&self, endpoint: &Endpoint, _: &str) -> Result<String, HarnessError> {
        self.note(endpoint);
        let mut n = self
            .sessions
            .lock()
            .map_err(|_| HarnessError::Refused("poisoned".into()))?;
        *n += 1;
        Ok(format!("hs-{n}"))
    }
    async fn has_session(&self, _: &Endpoint, session: &str) -> Result<bool, HarnessError> {
        let n = *self
            .sessions
            .lock()
            .map_err(|_| HarnessError::Refused("poisoned".into()))?;
        Ok(session
            .strip_prefix("hs-")
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|k| k <= n))
    }
    async fn send(
        &self,
        endpoint: &Endpoint,
        session: &str,
        prompt: &Prompt,
    ) -> Result<(), HarnessError> {
        self.note(endpoint);
        self.sent
            .lock()
            .map_err(|_| HarnessError::Refused("poisoned".into()))?
            .push((
                endpoint.url.clone(),
                session.to_string(),
                prompt.text.clone(),
            ));
        Ok(())
    }
    /// The prompts sent to `session`, each a user message the agent has not answered (the
    /// in-test agent never answers): a turn that is still open, as a real harness would list it.
    async fn messages(
        &self,
        _: &Endpoint,
        session: &str,
    ) -> Result<Vec<HarnessMessage>, HarnessError> {
        let sent = self
            .sent
            .lock()
            .map_err(|_| HarnessError::Refused("poisoned".into()))?;
        if self.hide_echoes.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        Ok(sent
            .iter()
            .filter(|(_, s, _)| s == session)
            .enumerate()
            .map(|(n, (_, _, text))| HarnessMessage {
                info: agentdeck::harness::MessageInfo {
                    id: format!("msg_user_{n}"),
                    role: agentdeck::model::MessageRole::User,
                    done: true,
                    error: None,
                    aborted: false,
                    usage: None,
                    diffs: None,
                },
                parts: vec![(format!("prt_user_{n}"), agentdeck::model::Part::text(text))],
            })
            .collect())
    }
    async fn events(&self, _: &Endpoint) -> Result<EventStream, HarnessError> {
        // The in-test harness says nothing on its bus; it stays open until `drop_bus`.
        use futures::StreamExt;
        let mut dropped = self.bus.subscribe();
        Ok(Box::pin(
            futures::stream::once(async move {
                let _ = dropped.changed().await;
            })
            .filter_map(|()| async { None }),
        ))
    }
    async fn pending_asks(
        &self,
        _: &Endpoint,
    ) -> Result<Vec<(String, agentdeck::model::NewAsk)>, HarnessError> {
        self.ask_reads.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    }
    fn auth_env(&self, password: &str) -> Map<String, String> {
        Map::from([("IN_TEST_HARNESS_PASSWORD".to_string(), password.to_string())])
    }
    fn sandbox_files(&self, agent: &AgentSpec, gateway: &GatewayAccess) -> Map<String, String> {
        Map::from([(
            "harness.json".to_string(),
            format!(
                "{{\"model\": \"{}\", \"gateway\": \"{}\"}}",
                agent.model, gateway.base_url
            ),
        )])
    }
    async fn abort(&self, _: &Endpoint, _: &str) -> Result<(), HarnessError> {
        *self
            .aborts
            .lock()
            .map_err(|_| HarnessError::Refused("poisoned".into()))? += 1;
        Ok(())
    }
}
