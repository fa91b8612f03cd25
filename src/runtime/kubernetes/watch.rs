//! What agentdeck knows of its sandboxes in the cluster, kept current by watches: one watcher
//! per kind (Sandboxes, Pods, Events) and namespace, never one per session and never polling.
//! A dropped watch or a 410 Gone makes `kube::runtime::watcher` relist by itself; a relist
//! replaces what was known of that kind and namespace at once.

use super::names;
use super::template::Version;
use crate::runtime::{HealthChange, SandboxHealth, SandboxRef};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch as tokio_watch};

/// (namespace, name)
pub type Key = (String, String);

/// Events kept per pod.
const EVENTS_PER_POD: usize = 20;
/// Objects per page of a (re)list: whole objects are held a page at a time before they are
/// trimmed, so a small page keeps a big namespace's first list from growing the heap for good.
const LIST_PAGE: u32 = 100;

/// Gives the memory a (re)list freed back to the system. The pages of whole objects it read are
/// freed once trimmed, but the allocator keeps freed memory for reuse: after a thousand pods'
/// first list that was tens of megabytes of a cockpit's resident memory for nothing.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas to the system;
    // it takes the arenas' locks and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[derive(Default)]
pub struct State {
    pub sandboxes: HashMap<Key, serde_json::Value>,
    pub pods: HashMap<Key, Pod>,
    /// Events about pods, by the pod's key.
    pub events: HashMap<Key, Vec<Event>>,
    pub health: HashMap<Key, SandboxHealth>,
}

/// A pod of a warm pool, as watched.
#[derive(Debug, Clone)]
pub struct PoolPod {
    pub pool: String,
    /// The agent (as a label value).
    pub agent: String,
    pub fingerprint: String,
    pub ready: bool,
    /// Ended or being deleted: neither ready nor coming.
    pub ended: bool,
}

/// The session a watched sandbox is for (see [`Watches::session_of`]).
fn session_in(state: &State, key: &Key) -> Option<uuid::Uuid> {
    state
        .sandboxes
        .get(key)
        .and_then(|s| s["metadata"]["labels"][names::LABEL_SESSION].as_str())
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .or_else(|| names::session_of(&key.1))
}

/// Computes a sandbox's endpoint from what is known of it (the runtime decides how).
pub type EndpointFn =
    dyn Fn(&Key, Option<&serde_json::Value>, Option<&Pod>) -> Option<String> + Send + Sync;

pub struct Watches {
    pub state: Mutex<State>,
    pub changes: broadcast::Sender<HealthChange>,
    /// How many watchers have finished their first list.
    synced: tokio_watch::Sender<usize>,
    pub expected: usize,
    version: Version,
    endpoint: Box<EndpointFn>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

enum Kind {
    Sandbox,
    Pod,
    Event,
}

/// An object as it is kept: only what health and endpoints read of it (see `trim`), so that a
/// thousand sandboxes cost what their rows show, not their managed fields, specs and
/// annotations.
pub(super) enum Object {
    Sandbox(serde_json::Value),
    Pod(Box<Pod>),
    Event(Box<Event>),
}

impl Object {
    fn name(&self) -> String {
        match self {
            Object::Sandbox(v) => v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            Object::Pod(p) => p.metadata.name.clone().unwrap_or_default(),
            Object::Event(e) => e.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// A watcher event with its object trimmed (one code path for every kind).
fn trimmed<K>(event: watcher::Event<K>, trim: fn(K) -> Object) -> watcher::Event<Object> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(trim(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(trim(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(trim(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

fn key_of(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

impl Watches {
    /// Starts the watchers for `namespaces`.
    pub fn start(
        client: &Client,
        version: Version,
        namespaces: &[String],
        endpoint: Box<EndpointFn>,
    ) -> Arc<Watches> {
        let (changes, _) = broadcast::channel(1024);
        let (synced, _) = tokio_watch::channel(0);
        let watches = Arc::new(Watches {
            state: Mutex::new(State::default()),
            changes,
            synced,
            expected: namespaces.len() * 3,
            version,
            endpoint,
            tasks: Mutex::new(Vec::new()),
        });
        let managed = format!("{}={}", names::LABEL_MANAGED, names::MANAGED_BY);
        let mut tasks = Vec::new();
        for ns in namespaces {
            let sandboxes: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &version.api_resource());
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let events: Api<Event> = Api::namespaced(client.clone(), ns);
            let cfg = watcher::Config::default()
                .labels(&managed)
                .page_size(LIST_PAGE);
            tasks.push(tokio::spawn(Self::run(
                watches.clone(),
                ns.clone(),
                Kind::Sandbox,
                watcher(sandboxes, cfg.clone())
                    .default_backoff()
                    .map(|e| e.map(|e| trimmed(e, super::trim::sandbox)))
                    .boxed(),
            )));
            tasks.push(tokio::spawn(Self::run(
                watches.clone(),
                ns.clone(),
                Kind::Pod,
                watcher(pods, cfg)
                    .default_backoff()
                    .map(|e| e.map(|e| trimmed(e, super::trim::pod)))
                    .boxed(),
            )));
            tasks.push(tokio::spawn(Self::run(
                watches.clone(),
                ns.clone(),
                Kind::Event,
                watcher(
                    events,
                    watcher::Config::default()
                        .fields("involvedObject.kind=Pod")
                        .page_size(LIST_PAGE),
                )
                .default_backoff()
                .map(|e| e.map(|e| trimmed(e, super::trim::event)))
                .boxed(),
            )));
        }
        if let Ok(mut slot) = watches.tasks.lock() {
            *slot = tasks;
        }
        watches
    }

    /// Waits (up to `timeout`) until every watcher listed once; false on timeout.
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.synced.subscribe();
        let expected = self.expected;
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= expected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn run(
        self: Arc<Self>,
        ns: String,
        kind: Kind,
        mut stream: futures::stream::BoxStream<
            'static,
            Result<watcher::Event<Object>, watcher::Error>,
        >,
    ) {
        let mut buffer: Option<Vec<Object>> = None;
        let mut first = true;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => buffer = Some(Vec::new()),
                Ok(watcher::Event::InitApply(o)) => buffer.get_or_insert_with(Vec::new).push(o),
                Ok(watcher::Event::InitDone) => {
                    let objects = buffer.take().unwrap_or_default();
                    self.replace_all(&ns, &kind, objects);
                    release_freed_memory();
                    if first {
                        first = false;
                        self.synced.send_modify(|n| *n += 1);
                    }
                }
                Ok(watcher::Event::Apply(o)) => self.apply(&ns, o, false),
                Ok(watcher::Event::Delete(o)) => self.apply(&ns, o, true),
                Err(err) => {
                    tracing::warn!(namespace = %ns, %err, "watch interrupted; it resumes by itself");
                }
            }
        }
    }

    fn apply(&self, ns: &str, object: Object, deleted: bool) {
        let affected = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let name = object.name();
            match object {
                Object::Sandbox(sandbox) => {
                    let key = key_of(ns, &name);
                    if deleted {
                        state.sandboxes.remove(&key);
                    } else {
                        state.sandboxes.insert(key.clone(), sandbox);
                    }
                    vec![key]
                }
                Object::Pod(pod) => {
                    let key = key_of(ns, &name);
                    if deleted {
                        state.pods.remove(&key);
                    } else {
                        state.pods.insert(key.clone(), *pod);
                    }
                    vec![key]
                }
                Object::Event(event) => {
                    let Some(pod) = event.involved_object.name.clone() else {
                        return;
                    };
                    if !pod.starts_with("ad-") {
                        return;
                    }
                    let key = key_of(ns, &pod);
                    let list = state.events.entry(key.clone()).or_default();
                    list.retain(|e| e.metadata.name != event.metadata.name);
                    if !deleted {
                        list.push(*event);
                    }
                    let excess = list.len().saturating_sub(EVENTS_PER_POD);
                    list.drain(..excess);
                    vec![key]
                }
            }
        };
        self.recompute(&affected);
    }

    fn replace_all(&self, ns: &str, kind: &Kind, objects: Vec<Object>) {
        let affected: Vec<Key> = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let mut affected: Vec<Key> = state
                .sandboxes
                .keys()
                .chain(state.pods.keys())
                .filter(|(n, _)| n == ns)
                .cloned()
                .collect();
            match kind {
                Kind::Sandbox => state.sandboxes.retain(|(n, _), _| n != ns),
                Kind::Pod => state.pods.retain(|(n, _), _| n != ns),
                Kind::Event => state.events.retain(|(n, _), _| n != ns),
            }
            for o in objects {
                let name = o.name();
                match o {
                    Object::Sandbox(sandbox) => {
                        affected.push(key_of(ns, &name));
                        state.sandboxes.insert(key_of(ns, &name), sandbox);
                    }
                    Object::Pod(pod) => {
                        affected.push(key_of(ns, &name));
                        state.pods.insert(key_of(ns, &name), *pod);
                    }
                    Object::Event(event) => {
                        if let Some(pod) = event.involved_object.name.clone()
                            && pod.starts_with("ad-")
                        {
                            affected.push(key_of(ns, &pod));
                            let list = state.events.entry(key_of(ns, &pod)).or_default();
                            list.push(*event);
                            let excess = list.len().saturating_sub(EVENTS_PER_POD);
                            list.drain(..excess);
                        }
                    }
                }
            }
            affected.sort();
            affected.dedup();
            affected
        };
        self.recompute(&affected);
    }

    /// Recomputes the health of `keys` and announces those that changed.
    fn recompute(&self, keys: &[Key]) {
        let mut changed = Vec::new();
        {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            for key in keys {
                let sandbox = state.sandboxes.get(key);
                let pod = state.pods.get(key);
                if sandbox.is_none() && pod.is_none() {
                    if state.health.remove(key).is_some() {
                        let mut gone =
                            super::health::derive(self.version, None, None, &[], None, None);
                        gone.reason = Some("the Sandbox was deleted".to_string());
                        changed.push((key.clone(), gone, names::session_of(&key.1)));
                    }
                    continue;
                }
                let endpoint = (self.endpoint)(key, sandbox, pod);
                let events = state.events.get(key).map(Vec::as_slice).unwrap_or_default();
                let health = super::health::derive(
                    self.version,
                    sandbox,
                    pod,
                    events,
                    endpoint,
                    state.health.get(key),
                );
                if state.health.get(key) != Some(&health) {
                    let session = session_in(&state, key);
                    state.health.insert(key.clone(), health.clone());
                    changed.push((key.clone(), health, session));
                }
            }
        }
        for ((ns, name), health, session_id) in changed {
            let _ = self.changes.send(HealthChange {
                session_id,
                sandbox: SandboxRef {
                    runtime: "kubernetes".to_string(),
                    name: names::sandbox_ref(&ns, &name),
                },
                health,
            });
        }
    }

    /// The current health of a sandbox, if it is known.
    pub fn health(&self, key: &Key) -> Option<SandboxHealth> {
        let state = self.state.lock().ok()?;
        if !state.sandboxes.contains_key(key) {
            return None;
        }
        state.health.get(key).cloned()
    }

    /// The session a sandbox is for: its label (a Sandbox taken from a warm pool has a name
    /// of the pool's), else its name.
    pub fn session_of(&self, key: &Key) -> Option<uuid::Uuid> {
        let state = self.state.lock().ok()?;
        session_in(&state, key)
    }

    /// A Sandbox's label, as watched.
    pub fn sandbox_label(&self, key: &Key, label: &str) -> Option<String> {
        let state = self.state.lock().ok()?;
        state.sandboxes.get(key)?["metadata"]["labels"][label]
            .as_str()
            .map(str::to_string)
    }

    /// The pods of warm pools in `ns` not (yet) taken by a session.
    pub fn pool_pods(&self, ns: &str) -> Vec<PoolPod> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .pods
            .iter()
            .filter(|((n, _), _)| n == ns)
            .filter(|(key, _)| session_in(&state, key).is_none())
            .filter_map(|(_, pod)| {
                let labels = pod.metadata.labels.as_ref()?;
                let status = pod.status.as_ref();
                let condition = |kind: &str| {
                    status
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == kind && c.status == "True")
                };
                let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                Some(PoolPod {
                    pool: labels.get(names::LABEL_POOL)?.clone(),
                    agent: labels.get(names::LABEL_AGENT).cloned().unwrap_or_default(),
                    fingerprint: labels
                        .get(names::LABEL_FINGERPRINT)
                        .cloned()
                        .unwrap_or_default(),
                    ready: condition("Ready") && pod.metadata.deletion_timestamp.is_none(),
                    ended: matches!(phase, "Failed" | "Succeeded")
                        || pod.metadata.deletion_timestamp.is_some(),
                })
            })
            .collect()
    }

    pub fn pod_uid(&self, key: &Key) -> Option<String> {
        let state = self.state.lock().ok()?;
        state.pods.get(key).and_then(|p| p.uid())
    }

    /// Every sandbox known, by key.
    pub fn sandboxes(&self) -> Vec<Key> {
        self.state
            .lock()
            .map(|s| s.sandboxes.keys().cloned().collect())
            .unwrap_or_default()
    }
}
