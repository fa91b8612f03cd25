//! What only a REAL control plane can show (scripts/test-cluster.sh: kube-apiserver, etcd, the
//! garbage collector and the agent-sandbox controller, all real; pods run by the tests' kubelet):
//! the objects agentdeck writes validate against agent-sandbox's own CRD schema with nothing
//! pruned; ownerReferences make the garbage collector take a session's Secret with its Sandbox;
//! other writers and resourceVersions do not break agentdeck's commands; the watches live through
//! the API server's bookmarks and timeouts; agentdeck works with exactly the RBAC of
//! config/kubernetes/rbac.yaml, and a verb taken away is a clear error naming it.
//!
//! Needs `AGENTDECK_TEST_KUBECONFIG` (scripts/test.sh sets it); without it each test says so and
//! returns, unless `AGENTDECK_CLUSTER_REQUIRED=1`.

mod common;

use agentdeck::config::{EndpointMode, KubernetesConfig, SandboxApiVersion};
use agentdeck::runtime::kubernetes::KubernetesRuntime;
use agentdeck::runtime::kubernetes::template::{self, Version};
use agentdeck::runtime::{
    HealthPhase, LogOptions, RuntimeError, SandboxHealth, SandboxRef, SandboxRuntime, SandboxSpec,
};
use common::cluster::{Cluster, Namespaces, cluster, suffix};
use common::eventually;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn sandboxes_resource() -> ApiResource {
    Version::V1beta1.api_resource()
}

fn kconfig(namespace: &str, port: u16, endpoint: EndpointMode) -> KubernetesConfig {
    KubernetesConfig {
        context: None,
        namespace: namespace.to_string(),
        team_namespaces: BTreeMap::new(),
        api_version: SandboxApiVersion::Auto,
        endpoint,
        harness_port: port,
        service_account: None,
        bootstrap: agentdeck::config::BootstrapBinary::Image(
            agentdeck::config::AGENTDECK_IMAGE.into(),
        ),
    }
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        session_id: Uuid::now_v7(),
        team: "red".into(),
        agent: common::cluster::test_agent(&[
            "python3",
            "-u",
            "-m",
            "http.server",
            "--bind",
            "{host}",
            "{port}",
        ]),
        env: BTreeMap::from([("TICKET".to_string(), "OPS-1".to_string())]),
        files: BTreeMap::from([("notes/readme.txt".to_string(), "hello".to_string())]),
    }
}

/// A cluster, namespaces of the test's own with their kubelet, and a runtime on them (as the
/// administrator).
struct Env {
    cluster: Cluster,
    ns: Namespaces,
    runtime: KubernetesRuntime,
    namespace: String,
    port: u16,
}

async fn env() -> Option<Env> {
    let cluster = cluster().await?;
    let namespace = format!("r-{}", suffix());
    let ns = cluster.namespaces(std::slice::from_ref(&namespace)).await;
    let port = common::free_port();
    let runtime = KubernetesRuntime::with_client(
        cluster.config.clone(),
        kconfig(&namespace, port, EndpointMode::PodIp),
        false,
    )
    .unwrap();
    Some(Env {
        cluster,
        ns,
        runtime,
        namespace,
        port,
    })
}

async fn wait_phase(
    rt: &KubernetesRuntime,
    sandbox: &SandboxRef,
    phase: HealthPhase,
) -> SandboxHealth {
    eventually(
        WAIT,
        &format!("{} to be {phase:?}", sandbox.name),
        || async { rt.health(sandbox).await.ok().filter(|h| h.phase == phase) },
    )
    .await
}

fn name_of(sandbox: &SandboxRef) -> String {
    sandbox.name.split_once('/').unwrap().1.to_string()
}

/// What agentdeck writes is what agent-sandbox's CRD schema (and the core API's validation)
/// accepts, field for field: a strict server-side dry run refuses unknown fields, which a normal
/// write would silently prune.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_agentdeck_writes_validates_against_the_real_schema() {
    let Some(e) = env().await else { return };
    let s = spec();
    let name = format!("ad-{}", s.session_id);
    let config = kconfig(&e.namespace, e.port, EndpointMode::PodIp);
    let strict = PatchParams::apply("agentdeck-test")
        .dry_run()
        .validation_strict();

    let sandbox = template::sandbox(&s, &config, Version::V1beta1, &e.namespace, &name).unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        e.cluster.client.clone(),
        &e.namespace,
        &sandboxes_resource(),
    );
    api.patch(&name, &strict, &Patch::Apply(&sandbox))
        .await
        .unwrap_or_else(|err| panic!("the CRD schema refuses agentdeck's Sandbox: {err}"));
    let secret = template::secret(&s, &e.namespace, &name).unwrap();
    let secrets: Api<Secret> = Api::namespaced(e.cluster.client.clone(), &e.namespace);
    secrets
        .patch(&format!("{name}-env"), &strict, &Patch::Apply(&secret))
        .await
        .unwrap_or_else(|err| panic!("the API refuses agentdeck's Secret: {err}"));

    // The check has teeth: a field the schema does not know is refused, naming it.
    let mut bogus = sandbox.clone();
    bogus.data["spec"]["podTemplate"]["spec"]["containers"][0]["imagePullPolicyy"] =
        serde_json::json!("Always");
    let err = api
        .patch(&name, &strict, &Patch::Apply(&bogus))
        .await
        .expect_err("an unknown field is refused");
    assert!(err.to_string().contains("imagePullPolicyy"), "{err}");

    // Written for real, the stored Sandbox keeps every field agentdeck set (nothing pruned), and
    // the controller's pod carries the template.
    let sandbox_ref = e.runtime.provision(&s).await.unwrap();
    wait_phase(&e.runtime, &sandbox_ref, HealthPhase::Ready).await;
    let stored = api.get(&name).await.unwrap();
    let written = serde_json::to_value(&sandbox).unwrap();
    let kept = serde_json::to_value(&stored).unwrap();
    assert_eq!(kept["spec"]["operatingMode"], "Running");
    assert_eq!(kept["spec"]["service"], true);
    let want = &written["spec"]["podTemplate"]["spec"]["containers"][0];
    let have = &kept["spec"]["podTemplate"]["spec"]["containers"][0];
    for field in [
        "command",
        "env",
        "ports",
        "readinessProbe",
        "volumeMounts",
        "workingDir",
    ] {
        assert_eq!(want[field], have[field], "{field} kept as written");
    }
    let pods: Api<Pod> = Api::namespaced(e.cluster.client.clone(), &e.namespace);
    let pod = pods.get(&name).await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("ghcr.io/example/agent:1")
    );
    assert_eq!(
        pod.metadata.owner_references.unwrap()[0].kind,
        "Sandbox",
        "the controller owns the pod"
    );
    drop(e.ns);
}

/// Deleting a Sandbox by any means (here straight through the API, as `kubectl delete` would)
/// takes the session's Secret and its pod with it: the real garbage collector follows the
/// ownerReferences agentdeck wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garbage_collector_takes_the_secret_with_its_sandbox() {
    let Some(e) = env().await else { return };
    let sandbox = e.runtime.provision(&spec()).await.unwrap();
    let name = name_of(&sandbox);
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    let secrets: Api<Secret> = Api::namespaced(e.cluster.client.clone(), &e.namespace);
    let pods: Api<Pod> = Api::namespaced(e.cluster.client.clone(), &e.namespace);
    assert!(
        secrets
            .get_opt(&format!("{name}-env"))
            .await
            .unwrap()
            .is_some()
    );

    let api: Api<DynamicObject> = Api::namespaced_with(
        e.cluster.client.clone(),
        &e.namespace,
        &sandboxes_resource(),
    );
    api.delete(&name, &Default::default()).await.unwrap();
    eventually(
        WAIT,
        "the garbage collector to delete the Secret",
        || async {
            secrets
                .get_opt(&format!("{name}-env"))
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    eventually(WAIT, "the pod to go too", || async {
        pods.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
    eventually(WAIT, "agentdeck to see the sandbox gone", || async {
        matches!(
            e.runtime.health(&sandbox).await,
            Err(RuntimeError::NotFound(_))
        )
        .then_some(())
    })
    .await;
}

/// Other writers move the Sandbox's resourceVersion all the time (the controller writes its
/// status, people label it); agentdeck never sends a stale one, so its commands go through,
/// and its re-apply leaves other writers' fields alone. The server does refuse a stale
/// resourceVersion (shown first), so a command that sent one would fail here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_writers_and_resource_versions_do_not_break_commands() {
    let Some(e) = env().await else { return };
    let s = spec();
    let sandbox = e.runtime.provision(&s).await.unwrap();
    let name = name_of(&sandbox);
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        e.cluster.client.clone(),
        &e.namespace,
        &sandboxes_resource(),
    );

    let stale = api.get(&name).await.unwrap();
    let label =
        |value: &str| serde_json::json!({"metadata": {"labels": {"example.com/owner": value}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(label("ops")))
        .await
        .unwrap();
    let err = api
        .replace(&name, &PostParams::default(), &stale)
        .await
        .expect_err("a stale resourceVersion is refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err}"
    );

    // Writers racing agentdeck's commands: a label changed ten times a second meanwhile.
    let writer = {
        let api = api.clone();
        let name = name.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let _ = api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(label(&format!("ops-{i}"))),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    e.runtime.suspend(&sandbox).await.unwrap();
    wait_phase(&e.runtime, &sandbox, HealthPhase::Suspended).await;
    e.runtime.resume(&sandbox).await.unwrap();
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    e.runtime.restart(&sandbox).await.unwrap();
    // Provisioning again (as recovery does) re-applies agentdeck's fields only.
    assert_eq!(e.runtime.provision(&s).await.unwrap(), sandbox);
    writer.abort();
    let now = api.get(&name).await.unwrap();
    let labels = now.metadata.labels.unwrap_or_default();
    assert!(
        labels
            .get("example.com/owner")
            .is_some_and(|v| v.starts_with("ops")),
        "the other writer's label survives agentdeck's apply: {labels:?}"
    );
    assert_eq!(
        labels.get("agentdeck.dev/session"),
        Some(&s.session_id.to_string())
    );
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
}

/// A container killed in its pod (as by the OOM killer or a crash) shows in agentdeck's health
/// as the kubelet reports it (a restart, the termination), and the pod comes back Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_shows_in_health_and_comes_back() {
    let Some(e) = env().await else { return };
    let sandbox = e.runtime.provision(&spec()).await.unwrap();
    let name = name_of(&sandbox);
    let before = wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    assert_eq!(before.restarts, 0);
    assert!(before.node.is_some(), "{before:?}");

    e.ns.kubelet.kill(&e.namespace, &name).await.unwrap();
    let after = eventually(WAIT, "the kill to show in health", || async {
        e.runtime
            .health(&sandbox)
            .await
            .ok()
            .filter(|h| h.restarts >= 1 && h.last_termination.is_some())
    })
    .await;
    let why = after.last_termination.clone().unwrap();
    assert!(why.contains("137") || why.contains("Error"), "{after:?}");
    let back = wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    assert!(back.restarts >= 1, "{back:?}");
    assert!(
        back.recent_events.iter().any(|ev| ev.reason == "Started"),
        "{:?}",
        back.recent_events
    );
}

/// The watches live on through what a real API server does to them: it sends a BOOKMARK about
/// once a minute to every watch that asks for them (agentdeck's watcher does), to carry its
/// resourceVersion forward. A raw watch beside agentdeck's shows the server sending one; changes
/// made after that are still seen by agentdeck's watches. (This test waits a minute or so: the
/// server's period, not something to tune; the fake cannot show it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_sends_bookmarks_and_the_watches_keep_up() {
    let Some(e) = env().await else { return };
    let pods: Api<Pod> = Api::namespaced(e.cluster.client.clone(), &e.namespace);
    let sandbox = e.runtime.provision(&spec()).await.unwrap();
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;

    let listed = pods.list(&kube::api::ListParams::default()).await.unwrap();
    let from: u64 = listed.metadata.resource_version.unwrap().parse().unwrap();
    let mut events = pods
        .watch(
            &kube::api::WatchParams::default()
                .timeout(120)
                .labels("nothing=here"),
            &from.to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let bookmark = tokio::time::timeout(Duration::from_secs(100), async {
        while let Some(event) = events.next().await {
            if let kube::api::WatchEvent::Bookmark(b) = event.unwrap() {
                return Some(b.metadata.resource_version);
            }
        }
        None
    })
    .await
    .expect("no BOOKMARK within 100 s")
    .expect("the watch ended without a BOOKMARK");
    let at: u64 = bookmark.parse().unwrap();
    assert!(
        at >= from,
        "a bookmark moves the watch forward ({from} -> {at})"
    );

    // agentdeck's own watches, open all that time, still follow the sandbox.
    e.runtime.suspend(&sandbox).await.unwrap();
    wait_phase(&e.runtime, &sandbox, HealthPhase::Suspended).await;
    e.runtime.resume(&sandbox).await.unwrap();
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
}

// ---------------------------------------------------------------------------------------------
// RBAC: agentdeck as the service account of config/kubernetes/rbac.yaml

/// A namespace of the test's own with rbac.yaml applied, and a kubeconfig for agentdeck's
/// service account.
struct AsAgentdeck {
    cluster: Cluster,
    ns: Namespaces,
    namespace: String,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn as_agentdeck() -> Option<AsAgentdeck> {
    let cluster = cluster().await?;
    let namespace = format!("rbac-{}", suffix());
    let ns = cluster.namespaces(std::slice::from_ref(&namespace)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&cluster, &namespace, dir.path());
    Some(AsAgentdeck {
        cluster,
        ns,
        namespace,
        kubeconfig,
        _dir: dir,
    })
}

/// A kubeconfig for `agentdeck`, the service account rbac.yaml makes in the namespace
/// `agentdeck` (scripts/test-cluster.sh applies it there), with a token from the TokenRequest
/// API; rbac.yaml is applied in `namespace` too, as its header says to.
fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    dir: &Path,
) -> std::path::PathBuf {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes/rbac.yaml");
    let out = cluster
        .kubectl()
        .args(["-n", namespace, "apply", "-f"])
        .arg(&rbac)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster
        .kubectl()
        .args([
            "-n",
            "agentdeck",
            "create",
            "token",
            "agentdeck",
            "--duration",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let admin: serde_json::Value = {
        let out = cluster
            .kubectl()
            .args(["config", "view", "--raw", "-o", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let server = admin["clusters"][0]["cluster"]["server"].as_str().unwrap();
    let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    let path = dir.join("agentdeck.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: agentdeck\n  context:\n    cluster: test\n    user: agentdeck\n    namespace: {namespace}\ncurrent-context: agentdeck\nusers:\n- name: agentdeck\n  user:\n    token: {token}\n"
        ),
    )
    .unwrap();
    path
}

/// Everything agentdeck does works with exactly rbac.yaml's grants: create, watch, health,
/// logs, a port-forward to the harness, restart, suspend, resume, destroy. And rbac.yaml grants
/// nothing beyond what `agentdeck doctor` checks: the service account's rules in the namespace
/// are exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_yaml_grants_what_agentdeck_needs_and_nothing_more() {
    let Some(AsAgentdeck {
        cluster: _,
        ns,
        namespace,
        kubeconfig,
        _dir,
    }) = as_agentdeck().await
    else {
        return;
    };
    let config = common::cluster::config_from(&kubeconfig).await;
    let port = common::free_port();
    let runtime = KubernetesRuntime::with_client(
        config.clone(),
        kconfig(&namespace, port, EndpointMode::PortForward),
        false,
    )
    .unwrap();

    let checks = runtime.check().await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");

    let sandbox = runtime.provision(&spec()).await.unwrap();
    let ready = wait_phase(&runtime, &sandbox, HealthPhase::Ready).await;
    let endpoint = ready.endpoint.expect("a port-forwarded endpoint");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = http.get(format!("{endpoint}/")).send().await.unwrap();
    assert!(
        answer.status().is_success(),
        "through the port-forward: {answer:?}"
    );
    let lines: Vec<_> = runtime
        .logs(
            &sandbox,
            LogOptions {
                tail: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert!(lines.iter().all(|l| l.is_ok()), "{lines:?}");
    assert_eq!(shell_exit(&runtime, &sandbox, b"exit 4\n").await, Ok(4));
    runtime.restart(&sandbox).await.unwrap();
    wait_phase(&runtime, &sandbox, HealthPhase::Ready).await;
    runtime.suspend(&sandbox).await.unwrap();
    wait_phase(&runtime, &sandbox, HealthPhase::Suspended).await;
    runtime.resume(&sandbox).await.unwrap();
    wait_phase(&runtime, &sandbox, HealthPhase::Ready).await;
    runtime.destroy(&sandbox).await.unwrap();
    eventually(WAIT, "the sandbox to go", || async {
        matches!(
            runtime.health(&sandbox).await,
            Err(RuntimeError::NotFound(_))
        )
        .then_some(())
    })
    .await;

    // Nothing more: what the service account may do in the namespace, as the server says.
    let client = kube::Client::try_from(config).unwrap();
    let review: k8s_openapi::api::authorization::v1::SelfSubjectRulesReview =
        serde_json::from_value(serde_json::json!({"spec": {"namespace": namespace}})).unwrap();
    let api: Api<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview> = Api::all(client);
    let rules = api
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .resource_rules;
    let mut granted = std::collections::BTreeSet::new();
    for rule in rules {
        let groups = rule.api_groups.unwrap_or_default();
        // Every authenticated user may ask what it may do (system:basic-user).
        if groups.iter().any(|g| {
            g.starts_with("authorization.k8s.io") || g.starts_with("authentication.k8s.io")
        }) {
            continue;
        }
        for group in &groups {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let needed: std::collections::BTreeSet<_> = agentdeck::runtime::kubernetes::RBAC_NEEDS
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(move |v| (group.to_string(), resource.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(
        granted, needed,
        "rbac.yaml grants exactly what agentdeck checks for"
    );
    drop(ns);
}

/// With a verb taken away, the command that needs it fails saying which verb on what, and
/// `agentdeck doctor` (the real binary, on the service account's kubeconfig) names it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_verb_is_a_clear_error_and_doctor_names_it() {
    let Some(AsAgentdeck {
        cluster,
        ns,
        namespace,
        kubeconfig,
        _dir,
    }) = as_agentdeck().await
    else {
        return;
    };
    let runtime = KubernetesRuntime::with_client(
        common::cluster::config_from(&kubeconfig).await,
        kconfig(&namespace, common::free_port(), EndpointMode::PodIp),
        false,
    )
    .unwrap();
    let sandbox = runtime.provision(&spec()).await.unwrap();
    wait_phase(&runtime, &sandbox, HealthPhase::Ready).await;

    // Take `delete` on pods away (a JSON patch on the Role's pods rule).
    patch_role(
        &cluster,
        &namespace,
        r#"[{"op":"replace","path":"/rules/1/verbs","value":["get","list","watch"]}]"#,
    );
    let err = eventually(WAIT, "the restart to be refused", || async {
        runtime.restart(&sandbox).await.err()
    })
    .await;
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    assert!(
        text.contains("cannot delete resource \"pods\"") && text.contains("rbac.yaml"),
        "{text}"
    );

    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agentdeck.toml");
    std::fs::write(
        &config,
        format!("[kubernetes]\nnamespace = \"{namespace}\"\n"),
    )
    .unwrap();
    let (checks, code) = common::cluster::doctor(
        root.path(),
        &kubeconfig,
        &["--config".as_ref(), config.as_os_str()],
    )
    .await;
    let rbac = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("rbac ({namespace})"))
        .unwrap_or_else(|| panic!("no rbac check for {namespace}: {checks}"));
    assert_eq!(rbac["ok"], false, "{rbac}");
    assert_eq!(rbac["detail"], "not allowed: delete pods", "{rbac}");
    assert_eq!(code, Some(1));
    let cluster_check = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cluster")
        .unwrap();
    assert_eq!(cluster_check["ok"], true, "{cluster_check}");

    // The operators' shells taken away (the Role's pods/exec rule removed): a shell is refused
    // naming the verb, and everything else still works.
    assert_eq!(shell_exit(&runtime, &sandbox, b"exit 0\n").await, Ok(0));
    let out = cluster
        .kubectl()
        .args(["-n", &namespace, "get", "role", "agentdeck", "-o", "json"])
        .output()
        .unwrap();
    let role: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["resources"][0] == "pods/exec")
        .expect("rbac.yaml has a pods/exec rule");
    patch_role(
        &cluster,
        &namespace,
        &format!(r#"[{{"op":"remove","path":"/rules/{at}"}}]"#),
    );
    let refused = eventually(WAIT, "the shell to be refused", || async {
        shell_exit(&runtime, &sandbox, b"exit 0\n").await.err()
    })
    .await;
    assert!(
        refused.contains("pods/exec") && refused.contains("rbac.yaml"),
        "{refused}"
    );
    assert!(runtime.health(&sandbox).await.is_ok());
    drop(ns);
}

/// Changes the Role rbac.yaml made in `namespace` by a JSON patch.
fn patch_role(cluster: &common::cluster::Cluster, namespace: &str, patch: &str) {
    let out = cluster
        .kubectl()
        .args([
            "-n",
            namespace,
            "patch",
            "role",
            "agentdeck",
            "--type",
            "json",
            "-p",
        ])
        .arg(patch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens a shell (no terminal) in the sandbox, gives it `script`, and says how it ended (or why
/// it could not open).
async fn shell_exit(
    runtime: &KubernetesRuntime,
    sandbox: &agentdeck::runtime::SandboxRef,
    script: &[u8],
) -> Result<i32, String> {
    use agentdeck::runtime::{Shell, ShellExit, ShellOptions};
    use tokio::io::AsyncWriteExt;
    let shell = runtime
        .shell(sandbox, &ShellOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let Shell::Attached(mut sh) = shell else {
        return Err(format!("not attached: {shell:?}"));
    };
    sh.input
        .write_all(script)
        .await
        .map_err(|e| e.to_string())?;
    sh.input.shutdown().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(WAIT, sh.exit).await {
        Ok(ShellExit::Code(code)) => Ok(code),
        Ok(ShellExit::Failed(why)) => Err(why),
        Err(_) => Err("the shell did not end".to_string()),
    }
}
