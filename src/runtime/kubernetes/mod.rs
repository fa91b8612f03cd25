//! Sandboxes on Kubernetes through kubernetes-sigs/agent-sandbox: one `Sandbox` (and one
//! `Secret`) per session; health from watches; restart by deleting the pod (the controller
//! recreates it); suspend and resume through `replicas` (v1alpha1) or `operatingMode`
//! (v1beta1); logs through the pod's log stream.

mod check;
mod exec;
mod forward;
mod health;
pub mod names;
mod pool;
pub mod pool_objects;
pub mod template;
mod trim;
mod watch;

use crate::config::{EndpointMode, KubernetesConfig, SandboxApiVersion};
use crate::runtime::{
    Check, HealthChange, ListedSandbox, LogOptions, LogStream, RuntimeError, SandboxHealth,
    SandboxRef, SandboxRuntime, SandboxSpec, Shell, ShellOptions,
};
use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use template::Version;
use tokio::sync::OnceCell;
use watch::{Key, Watches};

pub use check::NEEDS as RBAC_NEEDS;

/// The field manager agentdeck applies with.
const MANAGER: &str = "agentdeck";
/// How long a call waits for the watches' first lists.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

pub struct KubernetesRuntime {
    client: Client,
    config: KubernetesConfig,
    in_cluster: bool,
    /// The kubeconfig context connected with (see [`SandboxRuntime::context`]).
    context: Option<String>,
    /// Resolved on first use (the cluster may be unreachable when agentdeck starts).
    ready: OnceCell<(Version, Arc<Watches>)>,
    forwards: Arc<forward::Forwards>,
    pools: pool::Pools,
}

/// A kube error as a runtime error an operator can act on.
fn classify(what: &str, err: kube::Error) -> RuntimeError {
    match &err {
        kube::Error::Api(status) => match status.code {
            404 => RuntimeError::NotFound(format!("{what}: {}", status.message)),
            401 | 403 => RuntimeError::Unavailable(format!(
                "{what}: the cluster refused ({}): {}; apply config/kubernetes/rbac.yaml",
                status.code, status.message
            )),
            400 | 409 | 422 => RuntimeError::Failed(format!("{what}: {}", status.message)),
            _ => RuntimeError::Transient(format!("{what}: {}", status.message)),
        },
        _ => RuntimeError::Transient(format!("{what}: {err}")),
    }
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

fn key_of(sandbox: &SandboxRef) -> Result<Key, RuntimeError> {
    names::split_ref(&sandbox.name)
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .ok_or_else(|| {
            RuntimeError::NotFound(format!("not a Kubernetes sandbox: {}", sandbox.name))
        })
}

impl KubernetesRuntime {
    /// Connects with the configured context (in-cluster config, else the current context).
    pub async fn connect(config: &KubernetesConfig) -> Result<Self, RuntimeError> {
        let kube_config = match &config.context {
            Some(context) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                RuntimeError::Unavailable(format!("cannot use kubeconfig context {context:?}: {e}"))
            })?,
            None => kube::Config::infer().await.map_err(|e| {
                RuntimeError::Unavailable(format!(
                    "no Kubernetes configuration found (in-cluster or ~/.kube/config): {e}"
                ))
            })?,
        };
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let context = match (&config.context, in_cluster) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => Some("in-cluster".to_string()),
            (None, false) => kube::config::Kubeconfig::read()
                .ok()
                .and_then(|k| k.current_context),
        };
        let mut runtime = Self::with_client(kube_config, config.clone(), in_cluster)?;
        runtime.context = context;
        Ok(runtime)
    }

    /// A runtime over a given client configuration (tests point it at a fake API server).
    pub fn with_client(
        kube_config: kube::Config,
        config: KubernetesConfig,
        in_cluster: bool,
    ) -> Result<Self, RuntimeError> {
        crate::net::ensure_crypto();
        let context = config.context.clone();
        let client = Client::try_from(kube_config).map_err(|e| {
            RuntimeError::Unavailable(format!("cannot build a Kubernetes client: {e}"))
        })?;
        Ok(KubernetesRuntime {
            client,
            config,
            in_cluster,
            context,
            ready: OnceCell::new(),
            forwards: Arc::new(forward::Forwards::default()),
            pools: pool::Pools::default(),
        })
    }

    fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = std::iter::once(self.config.namespace.clone())
            .chain(self.config.team_namespaces.values().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn endpoint_mode(&self) -> EndpointMode {
        match self.config.endpoint {
            EndpointMode::Auto if self.in_cluster => EndpointMode::Service,
            EndpointMode::Auto => EndpointMode::PortForward,
            other => other,
        }
    }

    /// The agent-sandbox version the cluster serves (per config), found by discovery.
    async fn discover_version(&self) -> Result<Version, RuntimeError> {
        let group = kube::discovery::group(&self.client, names::GROUP)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => RuntimeError::Unavailable(format!(
                    "agent-sandbox is not installed in the cluster (no {} API); install it (see scripts/kind-up.sh)",
                    names::GROUP
                )),
                kube::Error::Discovery(_) => RuntimeError::Unavailable(format!(
                    "agent-sandbox is not installed in the cluster (no {} API); install it (see scripts/kind-up.sh)",
                    names::GROUP
                )),
                _ => classify("discovering agent-sandbox", e),
            })?;
        let served: Vec<&str> = group.versions().collect();
        let pick = match self.config.api_version {
            SandboxApiVersion::V1alpha1 => Version::V1alpha1,
            SandboxApiVersion::V1beta1 => Version::V1beta1,
            SandboxApiVersion::Auto if served.contains(&"v1beta1") => Version::V1beta1,
            SandboxApiVersion::Auto => Version::V1alpha1,
        };
        if !served.contains(&pick.as_str()) {
            return Err(RuntimeError::Unavailable(format!(
                "the cluster serves {} {} but not {}",
                names::GROUP,
                served.join(", "),
                pick.as_str()
            )));
        }
        Ok(pick)
    }

    /// The version in use and the running watches, started on first use.
    async fn ready(&self) -> Result<&(Version, Arc<Watches>), RuntimeError> {
        self.ready
            .get_or_try_init(|| async {
                let version = self.discover_version().await?;
                let mode = self.endpoint_mode();
                let port = self.config.harness_port;
                let endpoint: Box<watch::EndpointFn> = Box::new(move |key, sandbox, pod| {
                    let pod_ip = pod
                        .and_then(|p| p.status.as_ref()?.pod_ip.clone())
                        .filter(|ip| !ip.is_empty());
                    match mode {
                        EndpointMode::Service => {
                            let fqdn = sandbox
                                .and_then(|s| s["status"]["serviceFQDN"].as_str())
                                .map(str::to_string)
                                .unwrap_or_else(|| format!("{}.{}.svc.cluster.local", key.1, key.0));
                            Some(format!("http://{fqdn}:{port}"))
                        }
                        EndpointMode::PodIp => pod_ip.map(|ip| format!("http://{ip}:{port}")),
                        // Filled in by `health` once the forward is open.
                        EndpointMode::PortForward | EndpointMode::Auto => None,
                    }
                });
                let watches = Watches::start(&self.client, version, &self.namespaces(), endpoint);
                tracing::info!(version = version.as_str(), namespaces = ?self.namespaces(), "watching sandboxes");
                Ok((version, watches))
            })
            .await
    }

    async fn synced(&self) -> Result<(Version, Arc<Watches>), RuntimeError> {
        let (version, watches) = self.ready().await?;
        if !watches.wait_synced(SYNC_TIMEOUT).await {
            return Err(RuntimeError::Transient(
                "the cluster's sandbox watches have not synced yet".to_string(),
            ));
        }
        Ok((*version, watches.clone()))
    }

    fn sandboxes(&self, version: Version, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &version.api_resource())
    }

    /// Health read from the API directly, for a sandbox the watches have not reported yet.
    async fn read_health(
        &self,
        version: Version,
        key: &Key,
    ) -> Result<SandboxHealth, RuntimeError> {
        let sandbox = self
            .sandboxes(version, &key.0)
            .get_opt(&key.1)
            .await
            .map_err(|e| classify("reading the Sandbox", e))?
            .ok_or_else(|| RuntimeError::NotFound(names::sandbox_ref(&key.0, &key.1)))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let pod = pods
            .get_opt(&key.1)
            .await
            .map_err(|e| classify("reading the pod", e))?;
        let sandbox = serde_json::to_value(&sandbox).unwrap_or_default();
        let mut health = health::derive(version, Some(&sandbox), pod.as_ref(), &[], None, None);
        // The endpoint comes once the watch has it; until then the sandbox is still coming up.
        if health.phase == crate::runtime::HealthPhase::Ready {
            health.phase = crate::runtime::HealthPhase::Running;
        }
        Ok(health)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl SandboxRuntime for KubernetesRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn context(&self) -> Option<String> {
        self.context.clone()
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.client
            .apiserver_version()
            .await
            .map(|_| ())
            .map_err(|e| classify("the cluster does not answer", e))
    }

    async fn provision(&self, spec: &SandboxSpec) -> Result<SandboxRef, RuntimeError> {
        let (version, _) = self.ready().await?;
        let version = *version;
        let ns = self.config.namespace_for(&spec.team).to_string();
        let name = names::sandbox_name(spec.session_id);
        let secret = template::secret(spec, &ns, &name)?;
        let sandbox = template::sandbox(spec, &self.config, version, &ns, &name)?;
        let apply = PatchParams::apply(MANAGER).force();

        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        secrets
            .patch(&names::secret_name(&name), &apply, &Patch::Apply(&secret))
            .await
            .map_err(|e| classify("creating the session's Secret", e))?;
        let created = self
            .sandboxes(version, &ns)
            .patch(&name, &apply, &Patch::Apply(&sandbox))
            .await
            .map_err(|e| classify("creating the Sandbox", e))?;
        // The Secret belongs to the Sandbox: deleting one takes the other with it.
        if let Some(uid) = created.uid() {
            let owner = serde_json::json!({"metadata": {"ownerReferences": [{
                "apiVersion": version.api_resource().api_version,
                "kind": names::KIND,
                "name": name,
                "uid": uid,
                "controller": false,
                "blockOwnerDeletion": false
            }]}});
            secrets
                .patch(
                    &names::secret_name(&name),
                    &PatchParams::default(),
                    &Patch::Merge(&owner),
                )
                .await
                .map_err(|e| classify("linking the Secret to its Sandbox", e))?;
        }
        tracing::info!(session = %spec.session_id, namespace = %ns, sandbox = %name, version = version.as_str(), "sandbox applied");
        Ok(SandboxRef {
            runtime: "kubernetes".to_string(),
            name: names::sandbox_ref(&ns, &name),
        })
    }

    async fn observe(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        let key = key_of(sandbox)?;
        let (version, watches) = self.synced().await?;
        match watches.health(&key) {
            Some(h) => Ok(h),
            // Not (yet) seen by the watch, as right after it was created: ask the API.
            None => self.read_health(version, &key).await,
        }
    }

    async fn health(&self, sandbox: &SandboxRef) -> Result<SandboxHealth, RuntimeError> {
        let key = key_of(sandbox)?;
        let (_, watches) = self.synced().await?;
        let mut health = self.observe(sandbox).await?;
        if health.phase == crate::runtime::HealthPhase::Ready
            && health.endpoint.is_none()
            && self.endpoint_mode() == EndpointMode::PortForward
        {
            let uid = watches.pod_uid(&key).unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
            let addr = self
                .forwards
                .ensure(pods, &key.0, &key.1, &uid, self.config.harness_port)
                .await
                .map_err(|e| RuntimeError::Transient(format!("cannot open a port-forward: {e}")))?;
            health.endpoint = Some(format!("http://{addr}"));
        }
        Ok(health)
    }

    fn watch(&self) -> tokio::sync::broadcast::Receiver<HealthChange> {
        match self.ready.get() {
            Some((_, watches)) => watches.changes.subscribe(),
            // Not started yet: a receiver that closes; callers re-read with `health`.
            None => tokio::sync::broadcast::channel(1).1,
        }
    }

    async fn list(&self) -> Result<Vec<ListedSandbox>, RuntimeError> {
        let (_, watches) = self.synced().await?;
        let mut listed: Vec<ListedSandbox> = watches
            .sandboxes()
            .into_iter()
            .map(|(ns, name)| ListedSandbox {
                session_id: watches.session_of(&(ns.clone(), name.clone())),
                sandbox: SandboxRef {
                    runtime: "kubernetes".to_string(),
                    name: names::sandbox_ref(&ns, &name),
                },
            })
            .collect();
        if self.keeps_warm_pools() {
            let labelled = listed
                .iter()
                .filter_map(|l| {
                    let (_, name) = key_of(&l.sandbox).ok()?;
                    Some((name, l.session_id?))
                })
                .collect();
            listed.extend(self.unlabelled_claims(&labelled).await);
        }
        Ok(listed)
    }

    async fn logs(
        &self,
        sandbox: &SandboxRef,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        let (ns, name) = key_of(sandbox)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = LogParams {
            container: Some(names::CONTAINER.to_string()),
            follow: options.follow,
            tail_lines: options.tail.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            since_seconds: options
                .since
                .map(|d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let reader = pods
            .log_stream(&name, &params)
            .await
            .map_err(|e| classify("reading the pod's log", e))?;
        Ok(reader
            .lines()
            .map_err(|e| RuntimeError::Transient(format!("log stream: {e}")))
            .boxed())
    }

    async fn restart(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let (ns, name) = key_of(sandbox)?;
        let (version, _) = self.ready().await?;
        // No restart verb: deleting the pod makes the controller create a new one.
        self.sandboxes(*version, &ns)
            .get(&name)
            .await
            .map_err(|e| classify("finding the Sandbox", e))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(classify("deleting the pod", e)),
        }
    }

    /// A shell in the sandbox's pod, through `pods/exec` (as `kubectl exec -it`).
    async fn shell(
        &self,
        sandbox: &SandboxRef,
        options: &ShellOptions,
    ) -> Result<Shell, RuntimeError> {
        let (ns, name) = key_of(sandbox)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        Ok(Shell::Attached(
            exec::open(pods, &ns, &name, options).await?,
        ))
    }

    async fn suspend(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let (ns, name) = key_of(sandbox)?;
        let (version, _) = self.ready().await?;
        self.sandboxes(*version, &ns)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(version.running_patch(false)),
            )
            .await
            .map_err(|e| classify("suspending the Sandbox", e))?;
        self.forwards.close(&ns, &name);
        Ok(())
    }

    async fn resume(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let (ns, name) = key_of(sandbox)?;
        let (version, _) = self.ready().await?;
        self.sandboxes(*version, &ns)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(version.running_patch(true)),
            )
            .await
            .map_err(|e| classify("resuming the Sandbox", e))?;
        Ok(())
    }

    async fn destroy(&self, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let (ns, name) = key_of(sandbox)?;
        if names::is_claim_name(&name) {
            // A claim listed for want of a labelled Sandbox (see `list`).
            return self.destroy_claim(&ns, &name).await;
        }
        let (version, _) = self.ready().await?;
        self.forwards.close(&ns, &name);
        // One taken from a warm pool goes with its claim.
        self.release(&ns, &name).await?;
        match self
            .sandboxes(*version, &ns)
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(classify("deleting the Sandbox", e)),
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        match secrets
            .delete(&names::secret_name(&name), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(classify("deleting the session's Secret", e)),
        }
    }

    async fn check(&self) -> Vec<Check> {
        check::run(self).await
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
        team: &str,
        claim: &crate::bootstrap::handover::Claim,
    ) -> Result<Option<SandboxRef>, RuntimeError> {
        self.claim(pool, team, claim).await
    }

    async fn reclaim(
        &self,
        sandbox: &SandboxRef,
        claim: &crate::bootstrap::handover::Claim,
    ) -> Result<bool, RuntimeError> {
        self.hand_over_again(sandbox, claim).await
    }

    async fn pool_health(&self) -> Vec<crate::model::PoolHealth> {
        self.pools_health().await
    }
}
