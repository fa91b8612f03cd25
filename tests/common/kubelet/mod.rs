//! The tests' kubelet: it makes pods of a REAL Kubernetes control plane (kube-apiserver + etcd,
//! no nodes, no container runtime: `scripts/test-cluster.sh`) run as local processes, so that
//! agentdeck's Kubernetes runtime is tested end to end against the real API server. It plays
//! the kube-scheduler for its namespaces and the kubelet of one Node. Used in-process by tests
//! ([`TestKubelet::start`]) and as a program (`cargo run --example test-kubelet -- --help`).
//!
//! # What it does
//!
//! - **Node.** Registers a `Node` (InternalIP 127.0.0.1, Ready, cpu 8, memory 32Gi, 110 pods,
//!   `daemonEndpoints.kubeletEndpoint.Port` = its HTTPS port), replacing one left over with the
//!   same name, and deletes it on [`TestKubelet::stop`].
//! - **Scheduling.** Pods of ITS namespaces with no `spec.nodeName` (and the default scheduler)
//!   are bound to its node through the real `pods/{name}/binding` subresource, with a `Scheduled`
//!   event as the scheduler writes. Several kubelets run at once, each for its own namespaces.
//! - **Running.** Every pod bound to its node (whatever the namespace) runs: each container's
//!   `command` + `args` is a local process in a process group of its own, with a cleared
//!   environment: `PATH` (the kubelet's), `HOSTNAME` (the pod's name), then `envFrom` and `env`
//!   (`value` with `$(VAR)` expansion, `secretKeyRef` / `configMapKeyRef` read from the REAL
//!   objects, `fieldRef` for metadata.name/namespace/uid/labels/annotations, spec.nodeName,
//!   spec.serviceAccountName, status.podIP/hostIP). The image is never pulled: it is only written
//!   back into the status. A container with no `command` cannot run here (the image's entrypoint
//!   is unknown): it waits with reason `CreateContainerError`. A missing Secret, ConfigMap or key
//!   (not `optional`) waits with `CreateContainerConfigError` and the API's message, and is tried
//!   again every 2 s, as a kubelet does.
//! - **Volumes.** `emptyDir` is a folder `<root>/pods/<uid>/volumes/<name>`; `secret`,
//!   `configMap`, `downwardAPI` and `projected` (secret, configMap, downwardAPI and
//!   serviceAccountToken through the TokenRequest API) are folders with one file per key (or per
//!   `items`); `hostPath` is the host's path itself. A missing Secret/ConfigMap of a volume waits
//!   with `ContainerCreating` and a `FailedMount` event, tried again every 2 s. Other volume types
//!   (PVCs …) are refused the same way.
//! - **Paths are TRANSLATED, there being no mount namespace.** Each `volumeMount` maps its
//!   `mountPath` to a host path (the volume's folder, or with `subPath`/`subPathExpr` the file or
//!   folder inside it). The container's `workingDir`, each element of `command` and `args` and
//!   each env value that EQUALS a mountPath or STARTS WITH it followed by `/` is rewritten to the
//!   host path (the longest mountPath wins). A mount inside another mount (agentdeck's
//!   `/workspace/opencode.json` with `subPath`, inside the `/workspace` emptyDir) is also made
//!   visible there, as a symlink in the outer volume's folder. A `workingDir` under no mount is
//!   the folder `<root>/pods/<uid>/rootfs/<workingDir>` (no workingDir:
//!   `<root>/pods/<uid>/rootfs`).
//!   Paths inside a longer string (`sh -c 'cat /data/x'`) are NOT rewritten: pass them by env.
//! - **Network.** Each pod gets a loopback address of its own as its IP (Linux routes all of
//!   127.0.0.0/8 to `lo`): `127.X.Y.Z`, X random per kubelet instance (1..=254, held by a
//!   `flock` in `$TMPDIR/agentdeck-test-kubelet` so that kubelets of parallel test processes
//!   take different ones), Y.Z counting up (`hostNetwork` pods get 127.0.0.1). Processes share
//!   the host's network, so `0.0.0.0` ("listen everywhere") as a whole word in a command
//!   element, arg or env value (also as in `0.0.0.0:8080` or `--bind=0.0.0.0`) is rewritten to
//!   the pod IP: two pods can then listen on the same port. A process that binds `::` or
//!   `0.0.0.0` by itself takes the port from every other pod.
//! - **Status**, written through the real `/status` subresource (a merge patch with whole lists):
//!   phase Pending → Running → Succeeded/Failed, podIP(s), hostIP(s), startTime, conditions
//!   PodReadyToStartContainers, Initialized, ContainersReady, Ready (PodScheduled as the binding
//!   set it), containerStatuses (image as given, containerID `testkubelet://<pid>`, state
//!   waiting/running/terminated, lastState, restartCount, ready, started). Exit 0 is `Completed`,
//!   any other `Error`; killed by signal N is exit code 128+N with `signal: N`.
//! - **Restarts.** restartPolicy Always (the default) restarts any exit, OnFailure a non-zero
//!   one, after a back-off of 1 s doubling to 10 s (reset after a run of 20 s), waiting meanwhile
//!   with `CrashLoopBackOff` ("back-off 2s restarting failed container=NAME pod=NAME_NS(UID)");
//!   `restartCount` counts restarts, `lastState.terminated` keeps the previous run.
//! - **Readiness.** `readinessProbe` `tcpSocket` (connect to podIP:port), `httpGet` (HTTP only;
//!   2xx/3xx is ready) and `exec` (the command run like the container, exit 0) every
//!   `periodSeconds` (default 10) after `initialDelaySeconds`, with `timeoutSeconds`,
//!   `successThreshold` and `failureThreshold`. No probe: ready once started.
//! - **Deletion.** A pod with a `deletionTimestamp` gets SIGTERM to its process groups, SIGKILL
//!   after the grace period (capped at 3 s), `Killing` events, a last status, and is then deleted
//!   with `gracePeriodSeconds=0` (the kubelet's part of a graceful delete: without it the pod
//!   would stay Terminating for ever). A pod that vanishes (a forced delete) is killed at once and
//!   its folders removed. Events as a kubelet writes them: Scheduled, Pulled, Created, Started,
//!   Killing, BackOff, Failed, FailedMount, Unhealthy.
//! - **Logs.** stdout and stderr go to `<root>/pods/<uid>/logs/<container>/<run>.log`, one line
//!   per line as CRI writes them (`<RFC3339Nano> stdout|stderr F <text>`).
//! - **HTTPS server** on 127.0.0.1 (the API server does not verify a kubelet's certificate: the
//!   one given, or a self-signed one made with `openssl` in the root): `/containerLogs/NS/POD/C`
//!   (`tailLines`, `follow`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes`,
//!   `stream`), which `kubectl logs` and kube's `Api::<Pod>::logs` reach through the API server;
//!   `/portForward/NS/POD` (WebSocket, `v4.channel.k8s.io`, see [`tunnel`]), where kube's
//!   `Api::<Pod>::portforward` lands; `/exec/NS/POD/C` (WebSocket, `v5.channel.k8s.io` or v4,
//!   see [`exec`]: the command with the running container's env, folder and translated paths,
//!   on a pseudo-terminal with `tty`), where kube's `Api::<Pod>::exec` and `kubectl exec` land:
//!   the Node declares `ExtendWebSocketsToKubelet`, so the 1.36 API server passes their
//!   WebSocket through rather than speaking SPDY to the kubelet; `/healthz`.
//!
//! Processes die with their kubelet: on [`TestKubelet::stop`], on drop, and (through
//! `PR_SET_PDEATHSIG`) when the kubelet's process dies; a kubelet started again on the same
//! root kills what an earlier one left behind.
//!
//! # What it does not model
//!
//! Images and their entrypoints, users, capabilities and security contexts, resource limits (no
//! cgroups, so no OOMKilled: use [`TestKubelet::kill`], which shows as exit 137), init,
//! ephemeral and sidecar containers (a pod with init containers waits with
//! `CreateContainerError`), liveness and startup probes, `lifecycle` hooks, the termination
//! message, readiness gates, `attach`, SPDY (an exec or port-forward the API server translates
//! to SPDY: a client that asks for SPDY itself, or an API server before 1.36), Services, DNS and `KUBERNETES_SERVICE_HOST`, paths a
//! program has built in (in-cluster clients look for `/var/run/secrets/…`, which is not
//! translated), node heartbeats and leases, pod resizing, and changes to a running pod's spec
//! (only its deletion is acted on).
//!
//! Note for clusters without the `root-ca-cert-publisher` controller: a pod that automounts its
//! service account token gets a projected volume with the ConfigMap `kube-root-ca.crt`, and
//! waits in `ContainerCreating` (FailedMount) until that ConfigMap exists, as with a real
//! kubelet; `automountServiceAccountToken: false` avoids it.

// The example uses only part of the API.
#![allow(dead_code)]

mod container;
pub mod exec;
mod forward;
mod logs;
mod node;
mod pods;
mod probe;
mod scheduler;
mod server;
mod setup;

#[allow(unused_imports)]
pub use forward::{PORT_FORWARD_PROTOCOL, tunnel};
// (the fake API server's WebSocket upgrades too; the example program does not use them)
#[allow(unused_imports)]
pub use server::{switching, websocket};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a graceful stop waits for a process at most before SIGKILL, whatever the pod's
/// grace period (tests should not wait 30 s).
const GRACE_CAP: Duration = Duration::from_secs(3);

/// What a kubelet needs to start.
pub struct KubeletOptions {
    /// A client of the API server with rights on nodes, pods (and their status and binding),
    /// events, secrets, configmaps and serviceaccounts/token (the admin's).
    pub client: kube::Client,
    /// The Node's name: unique per kubelet.
    pub node: String,
    /// The namespaces whose unscheduled pods this kubelet binds to its node.
    pub namespaces: Vec<String>,
    /// A folder of its own: pods' folders, logs, its certificate.
    pub root: PathBuf,
    /// The HTTPS server's certificate and key (PEM files); `None` makes a self-signed one.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running kubelet. Stop it with [`TestKubelet::stop`]. Dropping it kills its processes too,
/// and deletes its Node when a runtime is there to do it (waiting up to 5 s for that on a
/// multi-thread runtime; in the background on a current-thread one, so maybe not at all).
pub struct TestKubelet {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl TestKubelet {
    /// Registers the Node, starts the HTTPS server, the scheduler of `namespaces` and the pod
    /// workers. Returns once the node is registered and the server listens.
    pub async fn start(options: KubeletOptions) -> anyhow::Result<TestKubelet> {
        let KubeletOptions {
            client,
            node,
            namespaces,
            root,
            tls,
        } = options;
        std::fs::create_dir_all(root.join("pods"))
            .with_context(|| format!("creating the kubelet root {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        setup::kill_leftovers(&root);
        let (listener, acceptor) = server::bind(&root, tls.as_ref()).await?;
        let port = listener
            .local_addr()
            .context("the kubelet server's address")?
            .port();
        let shared = Arc::new(Shared {
            client,
            node,
            namespaces,
            root,
            port,
            ip_prefix: IpPrefix::take(),
            next_ip: AtomicU32::new(0),
            pods: Mutex::new(HashMap::new()),
            spawner: container::Spawner::start()?,
            shutdown: CancellationToken::new(),
            path_env: std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string()),
        });
        node::register(&shared).await?;
        let mut tasks = vec![tokio::spawn(server::serve(
            shared.clone(),
            listener,
            acceptor,
        ))];
        tasks.push(tokio::spawn(pods::dispatch(shared.clone())));
        for ns in &shared.namespaces {
            tasks.push(tokio::spawn(scheduler::schedule(
                shared.clone(),
                ns.clone(),
            )));
        }
        tracing::info!(node = %shared.node, port, "test kubelet started");
        Ok(TestKubelet {
            shared,
            tasks,
            stopped: false,
        })
    }

    /// The Node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The HTTPS server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The kubelet's folder (canonical).
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The pod's IP, once this kubelet runs it.
    pub fn pod_ip(&self, namespace: &str, pod: &str) -> Option<Ipv4Addr> {
        self.shared.find(namespace, pod).map(|entry| entry.ip)
    }

    /// The process ids (= process group ids) of the pod's running containers.
    pub fn pids(&self, namespace: &str, pod: &str) -> Vec<u32> {
        self.shared
            .find(namespace, pod)
            .map(|entry| {
                entry
                    .lock()
                    .containers
                    .iter()
                    .filter_map(|c| c.pid)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The host folder of one of the pod's volumes.
    pub fn volume_path(&self, namespace: &str, pod: &str, volume: &str) -> Option<PathBuf> {
        self.shared
            .find(namespace, pod)
            .map(|entry| entry.dir.join("volumes").join(volume))
    }

    /// SIGKILLs the process group of every running container of the pod, as an OOM kill or a
    /// crash would end it, and returns once the kubelet has seen them end (the status then
    /// shows exit code 137, signal 9, and the container is restarted as its restartPolicy
    /// says). Fails when nothing of the pod runs here.
    pub async fn kill(&self, namespace: &str, pod: &str) -> anyhow::Result<()> {
        self.kill_where(namespace, pod, |_| true).await
    }

    /// [`TestKubelet::kill`] for one container of the pod.
    pub async fn kill_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> anyhow::Result<()> {
        self.kill_where(namespace, pod, |name| name == container)
            .await
    }

    async fn kill_where(
        &self,
        namespace: &str,
        pod: &str,
        which: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let entry = self
            .shared
            .find(namespace, pod)
            .with_context(|| format!("pod {namespace}/{pod} does not run on this kubelet"))?;
        let pids: Vec<u32> = entry
            .lock()
            .containers
            .iter()
            .filter(|c| which(&c.name))
            .filter_map(|c| c.pid)
            .collect();
        anyhow::ensure!(
            !pids.is_empty(),
            "no container of pod {namespace}/{pod} is running"
        );
        for pid in &pids {
            container::signal_group(*pid, libc::SIGKILL);
        }
        let seen = async {
            while entry
                .lock()
                .containers
                .iter()
                .any(|c| c.pid.is_some_and(|p| pids.contains(&p)))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .with_context(|| format!("pod {namespace}/{pod}: the killed processes did not end"))
    }

    /// Stops: kills every process at once (pods stay as they are in the API, as when a node
    /// dies), stops the server and the watches, and deletes the Node.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stopped = true;
        self.shared.shutdown.cancel();
        for entry in self.shared.entries() {
            entry.gone.cancel();
        }
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.shared.kill_all();
        self.shared.spawner.close();
        node::delete(&self.shared).await
    }
}

impl Drop for TestKubelet {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.shared.shutdown.cancel();
        for entry in self.shared.entries() {
            entry.gone.cancel();
        }
        self.shared.kill_all();
        self.shared.spawner.close();
        for task in &self.tasks {
            task.abort();
        }
        // Best effort: the Node goes too when a runtime is still there to do it (waiting for
        // it on a multi-thread runtime, in the background on a current-thread one).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let delete = async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), node::delete(&shared)).await;
            };
            match handle.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| handle.block_on(delete));
                }
                _ => {
                    handle.spawn(delete);
                }
            }
        }
    }
}

/// The kubelet's state, shared by its tasks.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub node: String,
    pub namespaces: Vec<String>,
    pub root: PathBuf,
    pub port: u16,
    ip_prefix: IpPrefix,
    next_ip: AtomicU32,
    /// Pods this kubelet runs, by uid.
    pods: Mutex<HashMap<String, Arc<PodEntry>>>,
    pub spawner: container::Spawner,
    pub shutdown: CancellationToken,
    /// The kubelet's own PATH, given to every container.
    pub path_env: String,
}

impl Shared {
    /// A new pod IP: 127.X.Y.Z.
    fn allocate_ip(&self) -> Ipv4Addr {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let y = (n / 254) % 256;
        let z = n % 254 + 1;
        Ipv4Addr::new(127, self.ip_prefix.0, y as u8, z as u8)
    }

    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<PodEntry>> {
        lock(&self.pods)
            .values()
            .filter(|e| e.namespace == namespace && e.name == name && !e.gone.is_cancelled())
            .max_by_key(|e| e.serial)
            .cloned()
    }

    fn entries(&self) -> Vec<Arc<PodEntry>> {
        lock(&self.pods).values().cloned().collect()
    }

    fn insert(&self, entry: Arc<PodEntry>) {
        lock(&self.pods).insert(entry.uid.clone(), entry);
    }

    fn remove(&self, uid: &str) {
        lock(&self.pods).remove(uid);
    }

    /// SIGKILL to every process group still running.
    fn kill_all(&self) {
        for entry in self.entries() {
            for pid in entry.lock().containers.iter().filter_map(|c| c.pid) {
                container::signal_group(pid, libc::SIGKILL);
            }
        }
    }

    pub fn pods_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Writes a core/v1 Event about a pod (in the background; a failure is only logged).
    pub fn event(
        &self,
        entry: &PodEntry,
        container: Option<&str>,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        self.event_from("kubelet", entry, container, warning, reason, message);
    }

    pub fn event_from(
        &self,
        component: &str,
        entry: &PodEntry,
        container: Option<&str>,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let mut involved = json!({
            "apiVersion": "v1", "kind": "Pod", "namespace": entry.namespace,
            "name": entry.name, "uid": entry.uid,
        });
        if let Some(c) = container {
            involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
        }
        event(
            &self.client,
            component,
            &self.node,
            &entry.namespace,
            &entry.name,
            involved,
            warning,
            reason,
            message,
        );
    }

    /// Deletes the pod with grace 0 (this uid only): the kubelet's last word on a pod.
    pub async fn finalise(&self, entry: &PodEntry) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(entry.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .pods_api(&entry.namespace)
            .delete(&entry.name, &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %entry.name, "deleting a terminated pod: {e}"),
        }
    }
}

/// Writes an Event in the background.
#[allow(clippy::too_many_arguments)]
pub(crate) fn event(
    client: &kube::Client,
    component: &str,
    host: &str,
    namespace: &str,
    object: &str,
    involved: Value,
    warning: bool,
    reason: &str,
    message: String,
) {
    let now = now_secs();
    let body = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {
            "name": format!("{object}.{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            "namespace": namespace,
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component, "host": host},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": host,
    });
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), namespace);
    let reason = reason.to_string();
    tokio::spawn(async move {
        let event = match serde_json::from_value(body) {
            Ok(event) => event,
            Err(e) => return tracing::warn!("an event {reason}: {e}"),
        };
        if let Err(e) = api.create(&Default::default(), &event).await {
            tracing::debug!("writing event {reason}: {e}");
        }
    });
}

/// X of 127.X.Y.Z: random, held by an exclusive `flock` on `<tmp>/agentdeck-test-kubelet/X.lock`
/// for the kubelet's life so that kubelets of other processes on this machine take another
/// (several test binaries run at once), and not given twice in one process until all 254 were
/// (an address a finished test's pod had is not another's while stale clients may call it).
struct IpPrefix(u8, Option<std::fs::File>);

static PREFIXES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

impl IpPrefix {
    fn take() -> IpPrefix {
        use rand::seq::SliceRandom as _;
        let mut taken = lock(&PREFIXES);
        let mut free: Vec<u8> = (1..=254u8).filter(|x| !taken.contains(x)).collect();
        if free.is_empty() {
            taken.clear();
            free = (1..=254u8).collect();
        }
        free.shuffle(&mut rand::rng());
        let dir = std::env::temp_dir().join("agentdeck-test-kubelet");
        let _ = std::fs::create_dir_all(&dir);
        let claimed = free.iter().find_map(|x| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{x}.lock")))
                .ok()?;
            use std::os::fd::AsRawFd as _;
            // SAFETY: flock on a file descriptor this function owns.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            (locked == 0).then_some(IpPrefix(*x, Some(file)))
        });
        // No lock to be had (a read-only /tmp …): a random one all the same.
        let prefix = claimed.unwrap_or(IpPrefix(free[0], None));
        taken.push(prefix.0);
        prefix
    }
}

/// A pod this kubelet runs.
pub(crate) struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Orders entries of the same name (a pod deleted and made again).
    serial: u64,
    pub ip: Ipv4Addr,
    pub host_network: bool,
    /// `<root>/pods/<uid>`.
    pub dir: PathBuf,
    /// status.startTime (kept from the pod when it had one).
    pub start_time: String,
    /// The PodScheduled condition as the binding wrote it.
    pub scheduled: Option<Value>,
    state: Mutex<PodState>,
    /// Something in `state` changed: the status writer looks.
    pub changed: Notify,
    /// The pod is gone from the API (or the kubelet stops): kill at once, write nothing more.
    pub gone: CancellationToken,
    /// The pod is being deleted: stop gracefully (a child of `gone`).
    pub stop: CancellationToken,
    /// The grace period of the deletion, capped.
    pub grace: Mutex<Duration>,
    /// The last status written, to write only changes (held across the write).
    pub written: tokio::sync::Mutex<Option<Value>>,
}

impl PodEntry {
    pub fn lock(&self) -> MutexGuard<'_, PodState> {
        lock(&self.state)
    }

    /// Changes the state and tells the status writer.
    pub fn update<R>(&self, f: impl FnOnce(&mut PodState) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_one();
        r
    }

    pub fn container<R>(&self, index: usize, f: impl FnOnce(&mut ContainerRecord) -> R) -> R {
        self.update(|state| f(&mut state.containers[index]))
    }

    pub fn grace(&self) -> Duration {
        *lock(&self.grace)
    }

    /// `NAME_NAMESPACE(UID)`, as kubelet messages name a pod.
    pub fn describe(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }
}

/// What the kubelet knows of a pod's containers and conditions.
pub(crate) struct PodState {
    pub containers: Vec<ContainerRecord>,
    /// Conditions as last computed: type → (status, lastTransitionTime).
    pub conditions: HashMap<&'static str, (bool, String)>,
    /// Sandbox and volumes are ready (PodReadyToStartContainers).
    pub volumes_ready: bool,
    /// The pod was deleted (or ended) and is no longer restarted: the phase is final.
    pub finished: bool,
}

/// One container, as its status shows it.
pub(crate) struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: RunState,
    pub last: Option<Terminated>,
    pub restart_count: u32,
    pub ready: bool,
    /// The running process (its process group).
    pub pid: Option<u32>,
    /// Runs started so far: their logs are `0.log` .. `(runs-1).log`.
    pub runs: u32,
    /// The latest run's log is still being written.
    pub log_open: bool,
    /// It will not run again.
    pub done: bool,
    /// How the running process was started (for `exec`: its env, folder and paths).
    pub launch: Option<Arc<setup::Launch>>,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.to_string(),
            image: image.to_string(),
            state: RunState::Waiting {
                reason: "ContainerCreating".to_string(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            pid: None,
            runs: 0,
            log_open: false,
            done: false,
            launch: None,
        }
    }
}

pub(crate) enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
        pid: u32,
    },
    Terminated(Terminated),
}

#[derive(Clone)]
pub(crate) struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: Option<String>,
}

impl Terminated {
    pub fn to_json(&self) -> Value {
        let mut t = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        });
        if let Some(signal) = self.signal {
            t["signal"] = json!(signal);
        }
        if let Some(message) = &self.message {
            t["message"] = json!(message);
        }
        if let Some(id) = &self.container_id {
            t["containerID"] = json!(id);
        }
        t
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Now, as the API's `metav1.Time` (seconds).
pub(crate) fn now_secs() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now as Go's RFC3339Nano (trailing zeros of the fraction dropped), as CRI logs stamp lines.
pub(crate) fn now_nanos() -> String {
    let text = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match text.split_once('.') {
        Some((secs, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{digits}Z")
            }
        }
        None => text,
    }
}

/// The uids of pods whose folders exist under the root.
pub(crate) fn pod_dirs(root: &Path) -> HashSet<String> {
    std::fs::read_dir(root.join("pods"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
