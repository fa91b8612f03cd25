//! The REAL Kubernetes control plane of `scripts/test-cluster.sh` (kube-apiserver, etcd, the
//! garbage collector and the agent-sandbox controller, built from the Go module proxy), found
//! through `AGENTDECK_TEST_KUBECONFIG`. Tests on it make namespaces of their own and run a
//! kubelet of their own (tests/common/kubelet) for those namespaces, so pods really run.
//!
//! Outside CI a test that needs it returns early, loudly, when it is not configured; with
//! `AGENTDECK_CLUSTER_REQUIRED=1` (set by scripts/test.sh) its absence fails the test.

use super::kubelet::{KubeletOptions, TestKubelet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use std::path::{Path, PathBuf};

/// A client of the real control plane, as its administrator.
#[derive(Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub config: kube::Config,
    pub client: kube::Client,
}

/// The real control plane when one is configured; `None` (with a note) when not.
pub async fn cluster() -> Option<Cluster> {
    let Some(path) = std::env::var_os("AGENTDECK_TEST_KUBECONFIG") else {
        if std::env::var("AGENTDECK_CLUSTER_REQUIRED").is_ok_and(|v| v == "1") {
            panic!(
                "a real control plane is required here: run `eval \"$(scripts/test-cluster.sh up)\"`"
            );
        }
        eprintln!(
            "\n==========\nSKIPPED: no real control plane (AGENTDECK_TEST_KUBECONFIG is not set); \
             `eval \"$(scripts/test-cluster.sh up)\"` starts one\n==========\n"
        );
        return None;
    };
    let kubeconfig = PathBuf::from(path);
    let config = config_from(&kubeconfig).await;
    let client = kube::Client::try_from(config.clone()).expect("a client of the test cluster");
    Some(Cluster {
        kubeconfig,
        config,
        client,
    })
}

/// A client configuration from a kubeconfig file (its current context).
pub async fn config_from(path: &Path) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("using {}: {e}", path.display()))
}

/// The agent the Kubernetes runtime tests run: `command` (on the real control plane the kubelet
/// runs it for real), an image (never pulled), resources with a limit.
pub fn test_agent(command: &[&str]) -> agentdeck::config::AgentSpec {
    use agentdeck::config::{AgentSpec, HarnessKind, Resources};
    AgentSpec {
        id: "coder".into(),
        name: "Coder".into(),
        harness: HarnessKind::Opencode,
        model: "litellm/mock-gpt".into(),
        system_prompt: None,
        image: Some("ghcr.io/example/agent:1".into()),
        resources: Resources {
            cpu: Some("250m".into()),
            memory: Some("512Mi".into()),
            cpu_limit: Some("1".into()),
            memory_limit: Some("1Gi".into()),
        },
        command: command.iter().map(|a| a.to_string()).collect(),
        env: std::collections::BTreeMap::new(),
        idle_timeout: std::time::Duration::from_secs(600),
        permission: Default::default(),
        budget: None,
        warm: 0,
    }
}

/// A few characters that make names unique per test.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// Namespaces of one test with a kubelet of their own; deleted (pods and all) on drop.
pub struct Namespaces {
    pub names: Vec<String>,
    pub kubelet: TestKubelet,
    client: kube::Client,
    _root: tempfile::TempDir,
}

impl Cluster {
    /// Creates `names` and starts a kubelet serving them.
    pub async fn namespaces(&self, names: &[String]) -> Namespaces {
        let api: Api<Namespace> = Api::all(self.client.clone());
        for name in names {
            let ns: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                    .expect("a namespace");
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("creating namespace {name}: {e}"),
            }
        }
        let root = tempfile::tempdir().expect("a kubelet root");
        let kubelet = TestKubelet::start(KubeletOptions {
            client: self.client.clone(),
            node: format!("node-{}", suffix()),
            namespaces: names.to_vec(),
            root: root.path().to_path_buf(),
            tls: None,
        })
        .await
        .expect("the test kubelet starts");
        Namespaces {
            names: names.to_vec(),
            kubelet,
            client: self.client.clone(),
            _root: root,
        }
    }

    /// `kubectl` built by scripts/test-cluster.sh, as the administrator.
    pub fn kubectl(&self) -> std::process::Command {
        let bin = std::env::var_os("AGENTDECK_TEST_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Pods at once: their kubelet is going, and nothing else would finish them soon (the
        // pod GC would, after its quarantine).
        let client = self.client.clone();
        let names = self.names.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                for name in &names {
                    // Sandboxes first, or their controller makes the pods again.
                    let sandboxes: Api<DynamicObject> = Api::namespaced_with(
                        client.clone(),
                        name,
                        &agentdeck::runtime::kubernetes::template::Version::V1beta1.api_resource(),
                    );
                    let _ = sandboxes
                        .delete_collection(&DeleteParams::default(), &ListParams::default())
                        .await;
                    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
                    if let Ok(list) = pods.list(&ListParams::default()).await {
                        for pod in list {
                            if let Some(pod_name) = pod.metadata.name {
                                let _ = pods
                                    .delete(&pod_name, &DeleteParams::default().grace_period(0))
                                    .await;
                            }
                        }
                    }
                    let api: Api<Namespace> = Api::all(client.clone());
                    let _ = api.delete(name, &DeleteParams::default()).await;
                }
                Some(())
            })
        })
        .join();
    }
}

/// `agentdeck [args] doctor -o json` (the real binary, off the test's runtime) with `KUBECONFIG`:
/// the checks it printed, and its exit code.
pub async fn doctor(
    root: &Path,
    kubeconfig: &Path,
    args: &[&std::ffi::OsStr],
) -> (serde_json::Value, Option<i32>) {
    let (root, kubeconfig) = (root.to_path_buf(), kubeconfig.to_path_buf());
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        super::agentdeck(&root)
            .args(["--runtime", "kubernetes"])
            .args(&args)
            .args(["doctor", "-o", "json"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run agentdeck doctor")
    })
    .await
    .expect("doctor's thread");
    let checks = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (checks, out.status.code())
}
