//! The Kubernetes runtime against the in-process FAKE API server (tests/common/fake_kube), through
//! the real `kube::Client`, watcher and patch content types; the fake plays the agent-sandbox
//! controller and the kubelet, and has the knobs for faults (OOMKilled, ImagePullBackOff,
//! dropped watches, 410 Gone …).
//!
//! The same contract runs against the REAL control plane of `scripts/test-cluster.sh` (a real
//! kube-apiserver, etcd, garbage collector and agent-sandbox controller) when
//! `AGENTDECK_TEST_KUBECONFIG` names its kubeconfig: scripts/test.sh runs this file twice, once
//! on each. There, each test gets namespaces of its own and a kubelet of its own
//! (tests/common/kubelet), so pods really run, as local processes, and are reached at their pod
//! IP; the parts that need the fake's knobs are skipped there, and what only a real cluster can
//! show is in tests/cluster_real.rs.

mod common;

use agentdeck::config::{EndpointMode, KubernetesConfig, SandboxApiVersion};
use agentdeck::runtime::kubernetes::KubernetesRuntime;
use agentdeck::runtime::{
    HealthChange, HealthPhase, LogOptions, RuntimeError, SandboxHealth, SandboxRef, SandboxRuntime,
    SandboxSpec,
};
use common::cluster::Namespaces;
use common::eventually;
use common::fake_kube::{FakeKube, FakeOptions, PodScenario};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const SECRET_VALUE: &str = "ghp_do_not_leak_0123456789";

struct Env {
    fake: Option<FakeKube>,
    /// On the real control plane: the test's namespaces and their kubelet.
    real: Option<(common::cluster::Cluster, Namespaces)>,
    runtime: std::sync::Arc<KubernetesRuntime>,
    namespace: String,
    port: u16,
}

impl Env {
    /// An object as the API server has it (the fake's store, or the real API), as JSON.
    async fn get(&self, plural: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
        if let Some(fake) = &self.fake {
            return fake.get(plural, ns, name);
        }
        let (cluster, _) = self.real.as_ref()?;
        let resource = match plural {
            "sandboxes" => kube::api::ApiResource {
                group: "agents.x-k8s.io".into(),
                version: "v1beta1".into(),
                api_version: "agents.x-k8s.io/v1beta1".into(),
                kind: "Sandbox".into(),
                plural: "sandboxes".into(),
            },
            "pods" => kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
            "secrets" => kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
            other => panic!("no such kind here: {other}"),
        };
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(cluster.client.clone(), ns, &resource);
        let obj = api.get_opt(name).await.expect("reading from the API")?;
        Some(serde_json::to_value(obj).expect("JSON"))
    }

    fn is_real(&self) -> bool {
        self.real.is_some()
    }
}

fn kconfig(namespace: &str, port: u16) -> KubernetesConfig {
    KubernetesConfig {
        context: None,
        namespace: namespace.to_string(),
        team_namespaces: BTreeMap::from([("blue".to_string(), format!("{namespace}-blue"))]),
        api_version: SandboxApiVersion::Auto,
        endpoint: EndpointMode::PodIp,
        harness_port: port,
        service_account: None,
        bootstrap: agentdeck::config::BootstrapBinary::Image(
            agentdeck::config::AGENTDECK_IMAGE.into(),
        ),
    }
}

/// A runtime on the fake (serving `versions`), or on the real control plane when one is
/// configured (it serves what its agent-sandbox serves: v1beta1).
async fn env(versions: Vec<&'static str>) -> Env {
    let port = common::free_port();
    let namespace = format!("t-{}", common::cluster::suffix());
    if std::env::var_os("AGENTDECK_TEST_KUBECONFIG").is_some() {
        let cluster = common::cluster::cluster().await.expect("the real cluster");
        let namespaces = cluster
            .namespaces(&[namespace.clone(), format!("{namespace}-blue")])
            .await;
        let runtime = KubernetesRuntime::with_client(
            cluster.config.clone(),
            kconfig(&namespace, port),
            false,
        )
        .unwrap();
        return Env {
            fake: None,
            real: Some((cluster, namespaces)),
            runtime: std::sync::Arc::new(runtime),
            namespace,
            port,
        };
    }
    let fake = FakeKube::start(FakeOptions {
        sandbox_versions: versions,
        ..Default::default()
    })
    .await;
    let config = kube::Config::new(fake.url.parse().unwrap());
    let runtime = KubernetesRuntime::with_client(config, kconfig(&namespace, port), false).unwrap();
    Env {
        fake: Some(fake),
        real: None,
        runtime: std::sync::Arc::new(runtime),
        namespace,
        port,
    }
}

/// What the sandbox's container runs. The runtime does not care; the real control plane's
/// kubelet runs it for real: a few log lines, then an HTTP server on the harness port (every
/// request it serves is a line of its log too).
const COMMAND: &str = "echo line 1; echo line 2; echo line 3; echo line 4; echo line 5; \
                       exec python3 -u -m http.server --bind {host} {port}";

fn spec(team: &str) -> SandboxSpec {
    SandboxSpec {
        session_id: Uuid::now_v7(),
        team: team.to_string(),
        agent: common::cluster::test_agent(&["sh", "-c", COMMAND]),
        env: BTreeMap::from([
            ("GITHUB_TOKEN".to_string(), SECRET_VALUE.to_string()),
            ("TICKET".to_string(), "OPS-1".to_string()),
        ]),
        files: BTreeMap::from([(
            "opencode.json".to_string(),
            "{\"model\": \"litellm/mock-gpt\"}".to_string(),
        )]),
    }
}

async fn health(
    rt: &KubernetesRuntime,
    sandbox: &SandboxRef,
) -> Result<SandboxHealth, RuntimeError> {
    rt.health(sandbox).await
}

async fn wait_phase(
    rt: &KubernetesRuntime,
    sandbox: &SandboxRef,
    phase: HealthPhase,
) -> SandboxHealth {
    eventually(
        WAIT,
        &format!("{} to be {phase:?}", sandbox.name),
        || async { health(rt, sandbox).await.ok().filter(|h| h.phase == phase) },
    )
    .await
}

fn name_of(sandbox: &SandboxRef) -> (String, String) {
    let (ns, name) = sandbox.name.split_once('/').unwrap();
    (ns.to_string(), name.to_string())
}

async fn provision_and_come_up(versions: Vec<&'static str>, expect_version: &str) {
    let e = env(versions).await;
    let s = spec("red");
    let sandbox = e.runtime.provision(&s).await.unwrap();
    assert_eq!(sandbox.runtime, "kubernetes");
    let (ns, name) = name_of(&sandbox);
    assert_eq!(ns, e.namespace, "team red has no namespace of its own");
    assert_eq!(name, format!("ad-{}", s.session_id));
    // Provisioning again finds the same sandbox.
    assert_eq!(e.runtime.provision(&s).await.unwrap(), sandbox);

    let mut changes = e.runtime.watch();
    let ready = wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    let endpoint = ready.endpoint.clone().expect("an endpoint when ready");
    if e.is_real() {
        // The pod's own address, and something really answers there.
        assert!(
            endpoint.starts_with("http://127.") && endpoint.ends_with(&format!(":{}", e.port)),
            "{endpoint}"
        );
        let answer = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(&endpoint)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    } else {
        assert_eq!(endpoint, format!("http://127.0.0.1:{}", e.port));
    }
    let mut seen = Vec::new();
    while let Ok(Ok(change)) = tokio::time::timeout(Duration::from_millis(50), changes.recv()).await
    {
        let HealthChange {
            sandbox: which,
            session_id,
            health,
        } = change;
        if which == sandbox {
            assert_eq!(session_id, Some(s.session_id));
            seen.push(health.phase);
        }
    }
    assert!(
        seen.contains(&HealthPhase::Ready),
        "the watch reported the transitions: {seen:?}"
    );

    let obj = e.get("sandboxes", &ns, &name).await.unwrap();
    let text = obj.to_string();
    assert!(
        !text.contains(SECRET_VALUE),
        "a secret value is in the Sandbox: {text}"
    );
    let template = &obj["spec"]["podTemplate"];
    assert_eq!(
        template["metadata"]["labels"]["agentdeck.dev/session"],
        s.session_id.to_string()
    );
    assert_eq!(
        template["metadata"]["labels"]["agentdeck.dev/agent"],
        "coder"
    );
    assert_eq!(template["metadata"]["labels"]["agentdeck.dev/team"], "red");
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/example/agent:1");
    assert_eq!(container["ports"][0]["containerPort"], e.port);
    let env = container["env"].as_array().unwrap();
    let token = env.iter().find(|v| v["name"] == "GITHUB_TOKEN").unwrap();
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"],
        format!("{name}-env")
    );
    let secret = e.get("secrets", &ns, &format!("{name}-env")).await.unwrap();
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Sandbox");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], name);
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        obj["metadata"]["uid"]
    );
    let stored = secret["data"]["env.GITHUB_TOKEN"].as_str().unwrap();
    assert_ne!(
        stored, SECRET_VALUE,
        "stored base64-encoded, as Kubernetes does"
    );
    let pod = e
        .get("pods", &ns, &name)
        .await
        .expect("the controller made a pod");
    assert_eq!(
        pod["metadata"]["labels"]["agentdeck.dev/session"],
        s.session_id.to_string()
    );

    let Some(fake) = &e.fake else { return };
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains(&format!("/apis/agents.x-k8s.io/{expect_version}/"))),
        "used {expect_version}"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("/pods?") && r.contains("watch=true")),
        "health comes from a watch"
    );
    // Health is read from the watches; the API is asked directly only until the watch has seen
    // the new sandbox, never in a loop.
    for _ in 0..20 {
        health(&e.runtime, &sandbox).await.unwrap();
    }
    let direct = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains(&format!("/pods/{name}")))
        .count();
    assert!(direct <= 3, "the pod was polled {direct} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_on_v1alpha1() {
    if std::env::var_os("AGENTDECK_TEST_KUBECONFIG").is_some() {
        // agent-sandbox v1.0.1, pinned by scripts/test-cluster.sh, serves v1beta1 only.
        return;
    }
    provision_and_come_up(vec!["v1alpha1"], "v1alpha1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_on_v1beta1_when_served() {
    provision_and_come_up(vec!["v1alpha1", "v1beta1"], "v1beta1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_get_their_own_namespace() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let sandbox = e.runtime.provision(&spec("blue")).await.unwrap();
    assert_eq!(name_of(&sandbox).0, format!("{}-blue", e.namespace));
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_suspend_resume_destroy() {
    for versions in [vec!["v1alpha1"], vec!["v1alpha1", "v1beta1"]] {
        if versions.len() == 1 && std::env::var_os("AGENTDECK_TEST_KUBECONFIG").is_some() {
            continue; // the real control plane serves v1beta1 only
        }
        let e = env(versions).await;
        let sandbox = e.runtime.provision(&spec("red")).await.unwrap();
        wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
        let (ns, name) = name_of(&sandbox);
        let uid = e.get("pods", &ns, &name).await.unwrap()["metadata"]["uid"].clone();

        e.runtime.restart(&sandbox).await.unwrap();
        eventually(WAIT, "a new pod", || async {
            e.get("pods", &ns, &name)
                .await
                .filter(|p| p["metadata"]["uid"] != uid)
                .map(|_| ())
        })
        .await;
        wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;

        e.runtime.suspend(&sandbox).await.unwrap();
        wait_phase(&e.runtime, &sandbox, HealthPhase::Suspended).await;
        eventually(WAIT, "the pod to go", || async {
            e.get("pods", &ns, &name).await.is_none().then_some(())
        })
        .await;
        assert!(
            e.get("sandboxes", &ns, &name).await.is_some(),
            "the Sandbox stays while suspended"
        );
        e.runtime.resume(&sandbox).await.unwrap();
        wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;

        e.runtime.destroy(&sandbox).await.unwrap();
        eventually(WAIT, "the sandbox to be gone", || async {
            matches!(
                health(&e.runtime, &sandbox).await,
                Err(RuntimeError::NotFound(_))
            )
            .then_some(())
        })
        .await;
        assert!(e.get("sandboxes", &ns, &name).await.is_none());
        assert!(
            e.get("secrets", &ns, &format!("{name}-env"))
                .await
                .is_none()
        );
        // Destroying twice, or something that never existed, is fine; acting on it is not.
        e.runtime.destroy(&sandbox).await.unwrap();
        assert!(matches!(
            e.runtime.restart(&sandbox).await,
            Err(RuntimeError::NotFound(_))
        ));
        assert!(matches!(
            e.runtime.suspend(&sandbox).await,
            Err(RuntimeError::NotFound(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_trouble_shows_in_health() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let Some(fake) = &e.fake else { return };

    let sandbox = e.runtime.provision(&spec("red")).await.unwrap();
    let (ns, name) = name_of(&sandbox);
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    fake.set_pod(&ns, &name, PodScenario::OomKilled);
    let h = eventually(WAIT, "OOMKilled to show", || async {
        health(&e.runtime, &sandbox).await.ok().filter(|h| {
            h.last_termination
                .as_deref()
                .is_some_and(|t| t.contains("OOMKilled"))
        })
    })
    .await;
    assert!(h.restarts >= 1, "{h:?}");
    assert!(
        matches!(
            h.phase,
            HealthPhase::CrashLooping | HealthPhase::Running | HealthPhase::Starting
        ),
        "{h:?}"
    );

    fake.default_pod_scenario(PodScenario::ImagePullBackOff);
    let pulling = e.runtime.provision(&spec("red")).await.unwrap();
    let h = eventually(WAIT, "ImagePullBackOff to show", || async {
        health(&e.runtime, &pulling).await.ok().filter(|h| {
            h.reason
                .as_deref()
                .is_some_and(|r| r.contains("ImagePullBackOff"))
        })
    })
    .await;
    assert_eq!(h.phase, HealthPhase::Pulling, "{h:?}");
    assert!(
        h.recent_events
            .iter()
            .any(|ev| ev.kind == "Warning" || ev.reason == "Failed" || ev.reason == "BackOff"),
        "{:?}",
        h.recent_events
    );

    fake.default_pod_scenario(PodScenario::Unschedulable);
    let stuck = e.runtime.provision(&spec("red")).await.unwrap();
    let h = eventually(WAIT, "Unschedulable to show", || async {
        health(&e.runtime, &stuck).await.ok().filter(|h| {
            h.reason
                .as_deref()
                .is_some_and(|r| r.contains("Unschedulable"))
        })
    })
    .await;
    assert_eq!(h.phase, HealthPhase::Scheduling, "{h:?}");

    fake.default_pod_scenario(PodScenario::Exit(3));
    let exits = e.runtime.provision(&spec("red")).await.unwrap();
    let h = eventually(WAIT, "the exit to show", || async {
        health(&e.runtime, &exits).await.ok().filter(|h| {
            h.last_termination
                .as_deref()
                .is_some_and(|t| t.contains("exit code 3"))
                || h.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("exit code 3"))
        })
    })
    .await;
    assert_ne!(h.phase, HealthPhase::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_recover_from_drops_and_410_gone() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let Some(fake) = &e.fake else { return };
    let sandbox = e.runtime.provision(&spec("red")).await.unwrap();
    let (ns, name) = name_of(&sandbox);
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;

    fake.drop_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.set_pod(&ns, &name, PodScenario::CrashLoopBackOff);
    wait_phase(&e.runtime, &sandbox, HealthPhase::CrashLooping).await;

    fake.expire_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.set_pod(&ns, &name, PodScenario::Ready);
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;

    // A Sandbox deleted behind agentdeck's back while the watches were being re-established.
    fake.expire_watches();
    fake.delete("sandboxes", &ns, &name);
    eventually(WAIT, "the deletion to be seen", || async {
        matches!(
            health(&e.runtime, &sandbox).await,
            Err(RuntimeError::NotFound(_))
        )
        .then_some(())
    })
    .await;
    let relists = fake
        .requests()
        .iter()
        .filter(|r| r.contains("/sandboxes?") && !r.contains("watch=true"))
        .count();
    assert!(
        relists >= 2,
        "410 Gone made the watcher list again ({relists} lists)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_follow() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let sandbox = e.runtime.provision(&spec("red")).await.unwrap();
    let (ns, name) = name_of(&sandbox);
    let ready = wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;
    // On the fake the test writes the log; on the real control plane the container wrote it
    // (COMMAND: five lines, then the HTTP server says where it serves).
    let (last, after_last) = match &e.fake {
        Some(fake) => {
            for i in 1..=5 {
                fake.append_log(&ns, &name, &format!("line {i}"));
            }
            ("line 4", "line 5")
        }
        None => ("line 5", "Serving HTTP on"),
    };
    let tail: Vec<String> = eventually(WAIT, "the log's last two lines", || async {
        let lines: Vec<String> = e
            .runtime
            .logs(
                &sandbox,
                LogOptions {
                    tail: Some(2),
                    ..Default::default()
                },
            )
            .await
            .ok()?
            .filter_map(|l| async move { l.ok() })
            .collect()
            .await;
        (lines.len() == 2 && lines[1].starts_with(after_last)).then_some(lines)
    })
    .await;
    assert_eq!(tail[0], last, "{tail:?}");

    let mut follow = e
        .runtime
        .logs(
            &sandbox,
            LogOptions {
                tail: Some(1),
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        follow
            .next()
            .await
            .unwrap()
            .unwrap()
            .starts_with(after_last)
    );
    let next_line = match &e.fake {
        Some(fake) => {
            fake.append_log(&ns, &name, "line 6");
            "line 6".to_string()
        }
        None => {
            // Every request the server answers is a line of its log.
            let endpoint = ready.endpoint.expect("an endpoint");
            let _ = reqwest::get(format!("{endpoint}/?followed-by-the-test")).await;
            "GET /?followed-by-the-test".to_string()
        }
    };
    let next = tokio::time::timeout(WAIT, follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next.contains(&next_line), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reports_what_exists() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let a = spec("red");
    let b = spec("blue");
    let sa = e.runtime.provision(&a).await.unwrap();
    let sb = e.runtime.provision(&b).await.unwrap();
    eventually(WAIT, "both to be listed", || async {
        let listed = e.runtime.list().await.ok()?;
        let ids: Vec<_> = listed.iter().filter_map(|l| l.session_id).collect();
        (ids.contains(&a.session_id) && ids.contains(&b.session_id)).then_some(())
    })
    .await;
    e.runtime.destroy(&sa).await.unwrap();
    eventually(WAIT, "the destroyed one to leave the list", || async {
        let listed = e.runtime.list().await.ok()?;
        (!listed.iter().any(|l| l.sandbox == sa) && listed.iter().any(|l| l.sandbox == sb))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_cluster_crd_and_rbac() {
    let e = env(vec!["v1alpha1"]).await;
    let Some(fake) = &e.fake else { return };
    let checks = e.runtime.check().await;
    let find = |n: &str| {
        checks
            .iter()
            .find(|c| c.name.starts_with(n))
            .unwrap_or_else(|| panic!("no {n} check in {checks:?}"))
            .clone()
    };
    assert!(find("cluster").ok);
    let sandbox = find("agent-sandbox");
    assert!(
        sandbox.ok && sandbox.detail.contains("using v1alpha1"),
        "{sandbox:?}"
    );
    assert!(
        checks
            .iter()
            .filter(|c| c.name.starts_with("rbac"))
            .all(|c| c.ok),
        "{checks:?}"
    );

    fake.deny("create", "pods/portforward");
    let checks = e.runtime.check().await;
    let rbac = checks
        .iter()
        .find(|c| c.name == format!("rbac ({})", e.namespace))
        .unwrap();
    assert!(!rbac.ok);
    assert!(rbac.detail.contains("create pods/portforward"), "{rbac:?}");
    assert!(rbac.fix.as_deref().unwrap_or("").contains("rbac.yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_agent_sandbox_is_a_clear_failure() {
    let e = env(vec![]).await;
    if e.fake.is_none() {
        return;
    }
    let err = e.runtime.provision(&spec("red")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("agent-sandbox is not installed"),
        "{err}"
    );
    let checks = e.runtime.check().await;
    assert!(checks.iter().any(|c| c.name == "agent-sandbox" && !c.ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_says_whether_the_cluster_answers() {
    let e = env(vec!["v1alpha1"]).await;
    e.runtime.ping().await.expect("the cluster answers");
    // a cluster that is not there: nothing listens on this port
    let gone = kube::Config::new(
        format!("http://127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap(),
    );
    let runtime =
        KubernetesRuntime::with_client(gone, kconfig(&e.namespace, e.port), false).unwrap();
    let err = runtime.ping().await.unwrap_err();
    assert!(
        err.to_string().contains("the cluster does not answer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_an_image_is_refused() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let mut s = spec("red");
    s.agent.image = None;
    let err = e.runtime.provision(&s).await.unwrap_err();
    assert!(err.to_string().contains("has no image"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_created_through_the_core_get_a_sandbox() {
    use agentdeck::core::{Core, CreateSession};
    use std::sync::Arc;
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let db = common::TestDb::sqlite();
    let root = tempfile::tempdir().unwrap();
    // (a command: the real control plane's kubelet runs it; it cannot know an image's entrypoint)
    let mut config = common::config_with(
        &format!(
            "[agents.coder]\nmodel = \"litellm/mock-gpt\"\nimage = \"ghcr.io/example/agent:1\"\n\
             command = [\"sh\", \"-c\", {COMMAND:?}]\n"
        ),
        db.url(),
        root.path(),
    );
    config.kubernetes = kconfig(&e.namespace, e.port);
    let harness = Arc::new(common::fakes::InTestHarness::default());
    let runtime = e.runtime.clone();
    let core = Core::with_store(config, db.open().await, runtime.clone(), harness.clone());
    let worker = agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);

    let session = core
        .create_session(CreateSession {
            agent_id: Some("coder".into()),
            initial_prompt: Some("hello".into()),
            env: BTreeMap::from([("TICKET".to_string(), "OPS-9".to_string())]),
            ..Default::default()
        })
        .await
        .unwrap();
    let busy = eventually(
        WAIT,
        "the session to be up and busy with its prompt",
        || async {
            let s = core.get_session(session.id).await.ok()?;
            assert_ne!(s.status, agentdeck::model::SessionStatus::Failed, "{s:?}");
            eprintln!("{} {} {:?}", s.status, s.phase, s.phase_detail);
            (s.status == agentdeck::model::SessionStatus::Busy).then_some(s)
        },
    )
    .await;
    assert_eq!(busy.runtime.as_deref(), Some("kubernetes"));
    let name = format!("ad-{}", session.id);
    assert_eq!(busy.sandbox_ref, Some(format!("{}/{name}", e.namespace)));
    let sandbox = e.get("sandboxes", &e.namespace, &name).await.unwrap();
    assert_eq!(
        sandbox["metadata"]["labels"]["agentdeck.dev/session"],
        session.id.to_string()
    );
    assert_eq!(harness.sent_texts(), vec!["hello"]);
    let reached = harness.sent.lock().unwrap()[0].0.clone();
    if e.is_real() {
        // the pod's own loopback address, given by its kubelet
        assert!(reached.starts_with("http://127."), "{reached}");
        assert!(reached.ends_with(&format!(":{}", e.port)), "{reached}");
    } else {
        assert_eq!(reached, format!("http://127.0.0.1:{}", e.port));
    }

    core.end(session.id).await.unwrap();
    eventually(WAIT, "the Sandbox to be deleted", || async {
        e.get("sandboxes", &e.namespace, &name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // (on the real control plane the garbage collector takes the Secret a moment later)
    eventually(WAIT, "the Sandbox's Secret to go with it", || async {
        e.get("secrets", &e.namespace, &format!("{name}-env"))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_from_the_command_line_reads_the_kubeconfig() {
    let e = env(vec!["v1alpha1", "v1beta1"]).await;
    let Some(fake) = e.fake.as_ref() else { return };
    let root = tempfile::tempdir().unwrap();
    let kubeconfig = root.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\nusers:\n- name: me\n  user:\n    token: t\ncurrent-context: fake\n",
            fake.url
        ),
    )
    .unwrap();
    fake.deny("delete", "secrets");
    let (checks, code) = common::cluster::doctor(root.path(), &kubeconfig, &[]).await;
    let find = |n: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n}: {checks}"))
    };
    assert_eq!(find("cluster")["ok"], true, "{checks}");
    assert!(
        find("agent-sandbox")["detail"]
            .as_str()
            .unwrap()
            .contains("using v1beta1")
    );
    let rbac = find("rbac (agentdeck)");
    assert_eq!(rbac["ok"], false);
    assert!(
        rbac["detail"].as_str().unwrap().contains("delete secrets"),
        "{rbac}"
    );
    assert_eq!(code, Some(1));
}

/// From outside the cluster (an operator's laptop), the harness is reached through a
/// port-forward: a loopback address whose connections go through the API server's
/// `pods/portforward` WebSocket to the pod's harness port. Against the FAKE API server (no real
/// cluster runs here), whose port-forward dials the simulated pod's IP (127.0.0.1) and port,
/// where this test runs a small HTTP server as the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_is_reached_through_a_port_forward() {
    let port = common::free_port();
    let namespace = format!("t-{}", &Uuid::new_v4().simple().to_string()[..10]);
    let fake = FakeKube::start(FakeOptions::default()).await;
    let config = kube::Config::new(fake.url.parse().unwrap());
    let runtime = KubernetesRuntime::with_client(
        config,
        KubernetesConfig {
            endpoint: EndpointMode::PortForward,
            ..kconfig(&namespace, port)
        },
        false,
    )
    .unwrap();

    // The "harness" in the pod: answers with which request of how many it is.
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    let app = axum::Router::new().route(
        "/global/health",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { format!("{{\"healthy\":true,\"served\":{n}}}") }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let sandbox = runtime.provision(&spec("red")).await.unwrap();
    // Seen, not reached: observing a ready sandbox (the sandboxes view, diagnose, the
    // reconciler: a whole fleet's worth) opens no port-forward.
    let seen = eventually(WAIT, "the sandbox seen ready", || async {
        runtime
            .observe(&sandbox)
            .await
            .ok()
            .filter(|h| h.phase == HealthPhase::Ready)
    })
    .await;
    assert_eq!(seen.endpoint, None, "nothing opened, so nothing to reach");
    assert!(
        !fake.requests().iter().any(|r| r.contains("/portforward")),
        "observing opened a port-forward: {:?}",
        fake.requests()
    );
    let ready = wait_phase(&runtime, &sandbox, HealthPhase::Ready).await;
    let endpoint = ready.endpoint.expect("a forwarded endpoint");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_ne!(
        endpoint,
        format!("http://127.0.0.1:{port}"),
        "a local port of its own, not the pod's"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for n in 1..=3 {
        let body = http
            .get(format!("{endpoint}/global/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, format!("{{\"healthy\":true,\"served\":{n}}}"));
    }
    let forwards = fake
        .requests()
        .iter()
        .filter(|r| r.contains("/portforward"))
        .count();
    assert!(forwards >= 1, "through the API server's port-forward");
    assert_eq!(
        runtime.health(&sandbox).await.unwrap().endpoint.as_deref(),
        Some(endpoint.as_str()),
        "the forward is kept while the pod is"
    );

    // A restart makes a new pod, which gets a new forward that works too.
    let (ns, name) = name_of(&sandbox);
    // Restarts the sandbox; returns the endpoint once it forwards to the new pod.
    let restart = |before: String| {
        let (fake, runtime, sandbox, ns, name) = (&fake, &runtime, &sandbox, &ns, &name);
        async move {
            let uid = fake.get("pods", ns, name).unwrap()["metadata"]["uid"].clone();
            runtime.restart(sandbox).await.unwrap();
            eventually(WAIT, "a new pod", || async {
                fake.get("pods", ns, name)
                    .filter(|p| p["metadata"]["uid"] != uid)
                    .map(|_| ())
            })
            .await;
            eventually(WAIT, "a forward to the new pod", || async {
                runtime
                    .health(sandbox)
                    .await
                    .ok()
                    .and_then(|h| h.endpoint)
                    .filter(|e| *e != before)
            })
            .await
        }
    };
    let again = restart(endpoint.clone()).await;
    let answer = http
        .get(format!("{again}/global/health"))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());

    // A pod whose harness is not listening: the connection through the forward ends, it
    // does not hang.
    fake.set_pod_ip("127.0.0.2");
    let dead = restart(again).await;
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        http.get(format!("{dead}/global/health")).send(),
    )
    .await
    .expect("no hang");
    assert!(refused.is_err(), "{refused:?}");
    runtime.destroy(&sandbox).await.unwrap();
}

/// Reads `from` until what it gave contains every one of `wanted`, or panics with what it gave.
async fn read_until(
    from: &mut agentdeck::runtime::ShellOutput,
    seen: &mut String,
    wanted: &[&str],
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let read = async {
        while !wanted.iter().all(|w| seen.contains(w)) {
            let n = from.read(&mut buf).await.expect("reading the shell");
            assert!(
                n > 0,
                "the shell's output ended before {wanted:?}: {seen:?}"
            );
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("no {wanted:?} from the shell in {WAIT:?}: {seen:?}");
    }
}

/// The shell's exit status, within the tests' patience, its output read meanwhile (as a
/// terminal reads it: output nobody reads holds the connection, and its status, up).
async fn exit_of(
    exit: impl std::future::Future<Output = agentdeck::runtime::ShellExit>,
    output: &mut agentdeck::runtime::ShellOutput,
    what: &str,
) -> agentdeck::runtime::ShellExit {
    use tokio::io::AsyncReadExt;
    let drain = async {
        let mut buf = vec![0u8; 4096];
        while output.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        std::future::pending::<()>().await
    };
    let exit = async {
        tokio::select! {
            exit = exit => exit,
            () = drain => unreachable!(),
        }
    };
    match tokio::time::timeout(WAIT, exit).await {
        Ok(exit) => exit,
        Err(_) => panic!("{what}: its exit status did not come within {WAIT:?}"),
    }
}

fn attached(shell: agentdeck::runtime::Shell) -> agentdeck::runtime::AttachedShell {
    match shell {
        agentdeck::runtime::Shell::Attached(a) => a,
        other => panic!("a Kubernetes shell is attached: {other:?}"),
    }
}

/// `sessions shell` on Kubernetes: `pods/exec` through kube's WebSocket (v5). On the real
/// control plane the API server passes it to the tests' kubelet (its Node declares
/// `ExtendWebSocketsToKubelet`), which runs the command with the container's env on a real
/// pseudo-terminal; the fake API server does the same in process, and has the knob to take the
/// verb away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_in_the_pod_through_exec() {
    use agentdeck::runtime::{ShellExit, ShellOptions};
    use tokio::io::AsyncWriteExt;
    let e = env(vec!["v1beta1"]).await;
    let sandbox = e.runtime.provision(&spec("red")).await.unwrap();
    wait_phase(&e.runtime, &sandbox, HealthPhase::Ready).await;

    // Without a terminal: a script in, its output and errors apart, its exit status out. The
    // pod's env is the shell's, the Secret's value included.
    let mut sh = attached(
        e.runtime
            .shell(&sandbox, &ShellOptions::default())
            .await
            .unwrap(),
    );
    assert!(!sh.tty && sh.resize.is_none());
    assert_eq!(sh.place, format!("pod {}, container agent", sandbox.name));
    sh.input
        .write_all(b"echo ticket=$TICKET token=$GITHUB_TOKEN; echo oops >&2; exit 3\n")
        .await
        .unwrap();
    sh.input.shutdown().await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    read_until(
        &mut sh.output,
        &mut out,
        &[&format!("ticket=OPS-1 token={SECRET_VALUE}")],
    )
    .await;
    read_until(sh.errors.as_mut().unwrap(), &mut err, &["oops"]).await;
    assert_eq!(
        exit_of(sh.exit, &mut sh.output, "a script").await,
        ShellExit::Code(3)
    );
    if let Some(fake) = &e.fake {
        let exec = fake
            .requests()
            .into_iter()
            .find(|r| r.contains("/exec?"))
            .expect("an exec request");
        assert!(
            exec.contains("container=agent") && exec.contains("stdin=true"),
            "{exec}"
        );
    }

    // With a terminal: its TERM, its size at the start, and again after a resize.
    let mut sh = attached(
        e.runtime
            .shell(
                &sandbox,
                &ShellOptions {
                    tty: true,
                    term: Some("xterm-256color".to_string()),
                    size: Some((100, 30)),
                },
            )
            .await
            .unwrap(),
    );
    assert!(sh.tty && sh.errors.is_none());
    let mut seen = String::new();
    sh.input
        .write_all(b"echo term=$TERM pid=$$; stty size\n")
        .await
        .unwrap();
    read_until(
        &mut sh.output,
        &mut seen,
        &["term=xterm-256color", "30 100"],
    )
    .await;
    // (the new size travels apart from the keys: asked again until it has come)
    sh.resize.as_ref().unwrap().send((132, 43)).await.unwrap();
    let resized = async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        while !seen.contains("43 132") {
            sh.input.write_all(b"stty size\n").await.unwrap();
            let read = tokio::time::timeout(Duration::from_millis(500), sh.output.read(&mut buf));
            if let Ok(n) = read.await {
                let n = n.unwrap();
                assert!(n > 0, "the shell's output ended: {seen:?}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    if tokio::time::timeout(WAIT, resized).await.is_err() {
        panic!("the shell never saw its new size: {seen:?}");
    }
    sh.input.write_all(b"exit 7\n").await.unwrap();
    assert_eq!(
        exit_of(sh.exit, &mut sh.output, "a shell with a terminal").await,
        ShellExit::Code(7)
    );

    // Dropped before it exits (the operator left with ~.): the connection closes, and the
    // shell in the pod goes with it.
    let mut sh = attached(
        e.runtime
            .shell(
                &sandbox,
                &ShellOptions {
                    tty: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
    );
    let mut seen = String::new();
    sh.input.write_all(b"printf 'P%sP\\n' $$\n").await.unwrap();
    // (the terminal echoes the command line first; the pid is on a line of its own)
    let pid_line = |seen: &str| {
        seen.split(['\r', '\n'])
            .filter_map(|l| l.strip_prefix('P')?.strip_suffix('P')?.parse::<u32>().ok())
            .next()
    };
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(pid) = pid_line(&seen) {
                return pid;
            }
            let n = sh.output.read(&mut buf).await.unwrap();
            assert!(n > 0, "{seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    let Ok(pid) = tokio::time::timeout(WAIT, read).await else {
        panic!("no pid from the shell: {seen:?}");
    };
    drop(sh);
    eventually(WAIT, "the dropped shell's process to end", || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;

    // Refused, with the reason: the verb taken away (named, with the fix; on the real control
    // plane in tests/cluster_real.rs) …
    if let Some(fake) = &e.fake {
        fake.deny("create", "pods/exec");
        let refused = e
            .runtime
            .shell(&sandbox, &ShellOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("pods/exec") && refused.contains("rbac.yaml"),
            "{refused}"
        );
    }
    // … and a sandbox with no pod (suspended).
    e.runtime.suspend(&sandbox).await.unwrap();
    let (ns, name) = name_of(&sandbox);
    eventually(WAIT, "the pod to go", || async {
        e.get("pods", &ns, &name).await.is_none().then_some(())
    })
    .await;
    let none = e
        .runtime
        .shell(&sandbox, &ShellOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(none.contains("has no pod now"), "{none}");
    e.runtime.destroy(&sandbox).await.unwrap();
}
