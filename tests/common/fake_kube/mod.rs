//! A **fake** Kubernetes API server, in process, for testing the Kubernetes runtime with the
//! real `kube::Client` over real HTTP (there is no kube-apiserver on these machines; see
//! `../shared/notes/kubernetes-testing.md`).
//!
//! What it serves (axum on 127.0.0.1, an ephemeral port):
//! - core v1 `pods` (+ `status`, `log`), `secrets`, `services` (+ `status`), `events`,
//!   `configmaps`, `namespaces` (+ `status`; any namespace may be used without creating it);
//!   `agents.x-k8s.io` `sandboxes` (+ `status`) in the versions the test asks for, stored once and
//!   answered with the requested apiVersion; `authorization.k8s.io/v1` `selfsubjectaccessreviews`.
//! - get, list, watch, create (`generateName`, 409 AlreadyExists), replace (resourceVersion
//!   precondition, 409 Conflict), delete (answers the deleted object, `preconditions`),
//!   deletecollection, and patch: merge, strategic (merge semantics plus element-wise merging of
//!   lists keyed by `name` or `type`; refused with 415 on Sandboxes, like a real CRD), JSON patch,
//!   and server-side apply (merge semantics; needs `fieldManager`; creates when missing).
//! - label and field selectors, all-namespace lists, `metadata.resourceVersion` on every list;
//!   watches as the real server does them (resume from a resourceVersion, bookmarks,
//!   `sendInitialEvents`, `timeoutSeconds`, 410 Gone inside the stream).
//! - discovery (`/version`, `/api`, `/apis`, `/apis/{group}/{version}`, also aggregated v2).
//! - `pods/{name}/log` with `tailLines`, `sinceSeconds`, `timestamps` and `follow`.
//! - `pods/{name}/portforward` over WebSocket (`v4.channel.k8s.io`, one port per connection),
//!   dialled to the pod's `status.podIP` (see `forward.rs`).
//! - `pods/{name}/exec` over WebSocket (`v5.channel.k8s.io`, else v4): the command run as a local
//!   process with the pod's container env, on a real pseudo-terminal when `tty` (see `exec.rs`).
//!
//! A simulation (on by default) plays the agent-sandbox controller (Sandbox → Pod + headless
//! Service + status) and a kubelet (Pod phases, conditions, container states, Events), see
//! `sim.rs`.
//!
//! What it does **not** model, so no test may rely on it: field ownership and conflicts of
//! server-side apply (apply is a merge), schema validation and defaulting (beyond a Pod starting
//! Pending, a Service's clusterIP and Secret `stringData`), admission, authorization of real
//! requests (only SelfSubjectAccessReview answers are faked, and a denied `create pods/exec`), graceful deletion and finalizers
//! (deletes are immediate), general garbage collection (only a Sandbox's Pod and Service go with
//! it, and only when simulating; deleting a namespace deletes nothing in it), version conversion,
//! paging (`limit` is ignored, there is never a `continue`), Table output, `/openapi`,
//! attach, and port-forwards of several ports at once.

mod discovery;
mod exec;
mod forward;
mod http;
mod objects;
mod patch;
mod select;
mod sim;
mod verbs;

use objects::{Store, kind_of, present};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The Sandbox versions served: `["v1alpha1"]` (agent-sandbox 0.4) or both (0.5+).
    pub sandbox_versions: Vec<&'static str>,
    /// Run the controller and kubelet simulation.
    pub simulate: bool,
    /// The podIP the simulated kubelet gives pods.
    pub pod_ip: String,
    /// How long a new pod takes to become Ready (Running after half of it).
    pub ready_after: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            sandbox_versions: vec!["v1alpha1", "v1beta1"],
            simulate: true,
            pod_ip: "127.0.0.1".to_string(),
            ready_after: Duration::from_millis(200),
        }
    }
}

/// What the simulated kubelet does with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodScenario {
    /// Pending → Running → Ready.
    Ready,
    /// Running, then the container is OOMKilled (exit 137) and waits in CrashLoopBackOff.
    OomKilled,
    /// Pending with the container waiting in ImagePullBackOff (event Failed).
    ImagePullBackOff,
    /// Running, then the container exits 1 and waits in CrashLoopBackOff.
    CrashLoopBackOff,
    /// Pending, PodScheduled False reason Unschedulable (event FailedScheduling).
    Unschedulable,
    /// Running, then the container exits with this code: the pod ends Succeeded/Failed under
    /// restartPolicy Never (or OnFailure with 0), otherwise it restarts into CrashLoopBackOff.
    Exit(i32),
    /// Scheduled but held in Pending (ContainerCreating).
    Hold,
}

/// Everything behind one lock: the store and the simulation's knobs.
pub(crate) struct World {
    pub store: Store,
    pub sim: sim::SimState,
    pub denied: HashSet<(String, String)>,
}

pub(crate) struct Cluster {
    world: Mutex<World>,
    requests: Mutex<Vec<String>>,
    pub sandbox_versions: Vec<String>,
    pub ready_after: Duration,
    pub changed: Arc<Notify>,
    pub shutdown: watch::Sender<bool>,
    pub host: String,
}

impl Cluster {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn log_request(&self, line: String) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

/// A running fake API server; it stops when dropped.
pub struct FakeKube {
    pub url: String,
    cluster: Arc<Cluster>,
    sim: Option<tokio::task::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the server (listening when this returns) and, if asked, the simulation.
    pub async fn start(options: FakeOptions) -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("fake API server address");
        let changed = Arc::new(Notify::new());
        let cluster = Arc::new(Cluster {
            world: Mutex::new(World {
                store: Store::new(changed.clone()),
                sim: sim::SimState::new(options.pod_ip.clone()),
                denied: HashSet::new(),
            }),
            requests: Mutex::new(Vec::new()),
            sandbox_versions: options
                .sandbox_versions
                .iter()
                .map(|v| v.to_string())
                .collect(),
            ready_after: options.ready_after,
            changed,
            shutdown: watch::channel(false).0,
            host: addr.to_string(),
        });
        let app = http::router(cluster.clone());
        let mut stop = cluster.shutdown.subscribe();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        let sim = options.simulate.then(|| sim::spawn(cluster.clone()));
        FakeKube {
            url: format!("http://{addr}"),
            cluster,
            sim,
        }
    }

    /// A real client for this server, default namespace "default".
    pub fn client(&self) -> kube::Client {
        agentdeck::net::ensure_crypto();
        let url = self.url.parse().expect("fake API server URL");
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".to_string();
        kube::Client::try_from(config).expect("client for the fake API server")
    }

    /// A stored object by plural resource name (`namespace` is ignored for cluster-scoped ones).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = kind_of(resource)?;
        let world = self.cluster.world();
        let obj = world.store.get(kind, namespace, name)?;
        Some(present(obj, kind, obj_version(obj)))
    }

    /// Stored objects of a resource, in one namespace or (None) all.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(kind) = kind_of(resource) else {
            return Vec::new();
        };
        let world = self.cluster.world();
        world
            .store
            .list(kind, namespace)
            .iter()
            .map(|obj| present(obj, kind, obj_version(obj)))
            .collect()
    }

    /// Every request so far, as "METHOD /path?query", in order.
    pub fn requests(&self) -> Vec<String> {
        self.cluster
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts an existing pod into `scenario` now (panics if the pod does not exist).
    pub fn set_pod(&self, namespace: &str, name: &str, scenario: PodScenario) {
        let mut world = self.cluster.world();
        assert!(
            sim::set_pod(&mut world, namespace, name, scenario),
            "set_pod: no pod {namespace}/{name}"
        );
    }

    /// The scenario for pods created from now on.
    pub fn default_pod_scenario(&self, scenario: PodScenario) {
        self.cluster.world().sim.default = scenario;
    }

    /// The podIP for pods that start running from now on.
    pub fn set_pod_ip(&self, ip: &str) {
        self.cluster.world().sim.pod_ip = ip.to_string();
    }

    /// Deletes an object (as a client would, watches see it).
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        if let Some(kind) = kind_of(resource) {
            self.cluster.world().store.remove(kind, namespace, name);
        }
    }

    /// Adds a line to a pod's log (followers see it at once).
    pub fn append_log(&self, namespace: &str, pod: &str, line: &str) {
        let mut world = self.cluster.world();
        let key = (namespace.to_string(), pod.to_string());
        world
            .store
            .logs
            .entry(key)
            .or_default()
            .push((chrono::Utc::now(), line.to_string()));
        world.store.log_seq.send_modify(|n| *n += 1);
    }

    /// SelfSubjectAccessReviews for this verb ("*" for any) and resource (e.g. "pods" or
    /// "pods/log") answer `allowed: false` from now on.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.cluster
            .world()
            .denied
            .insert((verb.to_string(), resource.to_string()));
    }

    /// Breaks every open watch connection (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.cluster.world().store.drop_watches();
    }

    /// Forgets the watch history and sends 410 Gone inside every open watch (clients relist).
    pub fn expire_watches(&self) {
        self.cluster.world().store.expire_watches();
    }
}

/// The version an object was last written through (for presenting it).
fn obj_version(obj: &Value) -> &str {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    api_version.rsplit('/').next().unwrap_or("v1")
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.cluster.shutdown.send(true);
        if let Some(sim) = self.sim.take() {
            sim.abort();
        }
    }
}
