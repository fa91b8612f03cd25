//! The tests' kubelet (tests/common/kubelet) against the REAL control plane of
//! `scripts/test-cluster.sh` (kube-apiserver, etcd, the garbage collector …): plain Pods, each
//! test in a namespace of its own with a kubelet (and Node) of its own. Everything is read back
//! through the API server, so what these tests see is what agentdeck's runtime sees: status
//! written through `/status`, logs and port-forwards proxied by the API server to the kubelet's
//! HTTPS server, events.
//!
//! Needs `AGENTDECK_TEST_KUBECONFIG` (`eval "$(scripts/test-cluster.sh up)"`); without it each
//! test returns at once, unless `AGENTDECK_CLUSTER_REQUIRED=1`, which makes that a failure.

mod common;

use common::eventually;
use common::kubelet::{KubeletOptions, TestKubelet};
use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WAIT: Duration = Duration::from_secs(30);

/// A namespace of the test's own with a kubelet of its own.
struct Tk {
    client: kube::Client,
    ns: String,
    kubelet: Option<TestKubelet>,
    _root: tempfile::TempDir,
}

async fn client() -> Option<kube::Client> {
    let Some(path) = std::env::var_os("AGENTDECK_TEST_KUBECONFIG") else {
        if std::env::var("AGENTDECK_CLUSTER_REQUIRED").is_ok_and(|v| v == "1") {
            panic!(
                "a real control plane is required here: run `eval \"$(scripts/test-cluster.sh up)\"`"
            );
        }
        eprintln!(
            "SKIPPED: no real control plane (AGENTDECK_TEST_KUBECONFIG is not set); \
             `eval \"$(scripts/test-cluster.sh up)\"` starts one"
        );
        return None;
    };
    agentdeck::net::ensure_crypto();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("using {path:?}: {e}"));
    Some(kube::Client::try_from(config).expect("a client of the test cluster"))
}

impl Tk {
    async fn start() -> Option<Tk> {
        let client = client().await?;
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let ns = format!("tk-{id}");
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the test namespace");
        // Pods are refused until the namespace's `default` ServiceAccount exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        eventually(WAIT, "the default ServiceAccount", || async {
            accounts.get_opt("default").await.ok().flatten()
        })
        .await;
        let root = tempfile::tempdir().unwrap();
        let kubelet = TestKubelet::start(KubeletOptions {
            client: client.clone(),
            node: format!("tk-node-{id}"),
            namespaces: vec![ns.clone()],
            root: root.path().to_path_buf(),
            tls: None,
        })
        .await
        .expect("the test kubelet starts");
        Some(Tk {
            client,
            ns,
            kubelet: Some(kubelet),
            _root: root,
        })
    }

    fn kubelet(&self) -> &TestKubelet {
        self.kubelet.as_ref().unwrap()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn secret(&self, name: &str, data: Value) {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create a secret");
    }

    /// Creates a pod of one container (`container` gets name `c` and an image).
    async fn pod(&self, name: &str, mut container: Value, spec: Value) -> Pod {
        container["name"] = json!("c");
        container["image"] = json!("registry.invalid/never-pulled:1");
        let mut pod_spec =
            json!({"automountServiceAccountToken": false, "containers": [container]});
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            pod_spec[k] = v;
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": pod_spec})).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create a pod")
    }

    /// Waits until the pod (as the API server has it) passes `check`.
    async fn until(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let pods = self.pods();
        let check = &check;
        eventually(WAIT, &format!("pod {name}: {what}"), || {
            let pods = pods.clone();
            async move { pods.get(name).await.ok().filter(check) }
        })
        .await
    }

    async fn events(&self, pod: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
            .await
            .expect("list events")
            .items
    }

    async fn event_reasons(&self, pod: &str) -> Vec<String> {
        self.events(pod)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Pods (forced), the namespace, then the kubelet and its Node.
    async fn finish(mut self) {
        cleanup(&self.client, &self.ns).await;
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop().await.expect("the kubelet stops");
        }
    }
}

async fn cleanup(client: &kube::Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

impl Drop for Tk {
    fn drop(&mut self) {
        // A test that failed: its namespace, processes and Node go all the same.
        let Some(kubelet) = self.kubelet.take() else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (client, ns) = (self.client.clone(), self.ns.clone());
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    cleanup(&client, &ns).await;
                    let _ = kubelet.stop().await;
                })
            });
        }
    }
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn ready(pod: &Pod) -> bool {
    condition(pod, "Ready").as_deref() == Some("True")
        && container_status(pod).is_some_and(|c| c.ready)
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP")
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    container_status(pod)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// One HTTP/1.0 GET over a stream; the whole answer.
async fn http_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A web server in the pod: `python3 -m http.server` on 0.0.0.0 (the pod IP here), serving
/// the emptyDir `/data`, after `prelude` (shell).
fn web_server(port: u16, prelude: &str) -> Value {
    json!({
        "command": ["sh", "-c",
            format!(
                "{prelude} exec python3 -u -m http.server --bind 0.0.0.0 \
                 --directory \"$DATA\" {port}"
            )],
        "env": [{"name": "DATA", "value": "/data"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1, "failureThreshold": 1},
    })
}

fn data_volume() -> Value {
    json!({"volumes": [{"name": "data", "emptyDir": {}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_its_secret_becomes_ready_and_answers_at_its_ip() {
    let Some(tk) = Tk::start().await else { return };
    let node: Node = Api::<Node>::all(tk.client.clone())
        .get(tk.kubelet().node())
        .await
        .expect("the kubelet's Node");
    let status = node.status.expect("node status");
    assert_eq!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port,
        i32::from(tk.kubelet().port())
    );
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    tk.secret("creds", json!({"token": "s3cr3t-from-the-api"}))
        .await;
    let port = common::free_port();
    // The secret goes by env into a file of the emptyDir, which the server then serves.
    let mut container = web_server(port, "echo \"$TOKEN\" > \"$DATA/token\";");
    container["env"].as_array_mut().unwrap().push(
        json!({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}),
    );
    tk.pod("web", container, data_volume()).await;
    // A second pod on the same port: each listens on its own pod IP. Ready by an httpGet probe.
    let mut second = web_server(port, "echo second > \"$DATA/token\";");
    second["readinessProbe"] =
        json!({"httpGet": {"path": "/token", "port": port}, "periodSeconds": 1});
    tk.pod("web2", second, data_volume()).await;

    let pod = tk.until("web", "Ready", ready).await;
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(tk.kubelet().node())
    );
    let c = container_status(&pod).unwrap();
    assert!(
        c.container_id
            .as_deref()
            .unwrap()
            .starts_with("testkubelet://")
    );
    assert!(c.state.as_ref().unwrap().running.is_some());
    assert_eq!(c.image, "registry.invalid/never-pulled:1");
    let ip = pod_ip(&pod);
    assert_eq!(tk.kubelet().pod_ip(&tk.ns, "web").unwrap().to_string(), ip);
    assert!(ip.starts_with("127.") && ip != "127.0.0.1", "{ip}");

    let answer = http_get(
        tokio::net::TcpStream::connect((ip.as_str(), port))
            .await
            .unwrap(),
        "/token",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("s3cr3t-from-the-api\n"), "{answer}");
    let on_disk = tk
        .kubelet()
        .volume_path(&tk.ns, "web", "data")
        .unwrap()
        .join("token");
    assert_eq!(
        std::fs::read_to_string(on_disk).unwrap(),
        "s3cr3t-from-the-api\n"
    );

    let other = tk.until("web2", "Ready", ready).await;
    let other_ip = pod_ip(&other);
    assert_ne!(other_ip, ip);
    let answer = http_get(
        tokio::net::TcpStream::connect((other_ip.as_str(), port))
            .await
            .unwrap(),
        "/token",
    )
    .await;
    assert!(answer.ends_with("second\n"), "{answer}");

    let reasons = tk.event_reasons("web").await;
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }

    let node_name = tk.kubelet().node().to_string();
    let client = tk.client.clone();
    tk.finish().await;
    let nodes: Api<Node> = Api::all(client);
    assert!(
        nodes.get_opt(&node_name).await.unwrap().is_none(),
        "the Node goes with its kubelet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_port_forwards_go_through_the_api_server_to_the_kubelet() {
    let Some(tk) = Tk::start().await else { return };
    let port = common::free_port();
    tk.pod(
        "talker",
        web_server(port, "for i in 1 2 3; do echo \"line $i\"; done;"),
        data_volume(),
    )
    .await;
    let ip = pod_ip(&tk.until("talker", "Ready", ready).await);
    let pods = tk.pods();

    // GET pods/log: the API server asks the kubelet's /containerLogs over TLS.
    let tail = pods
        .logs(
            "talker",
            &LogParams {
                tail_lines: Some(3),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs through the API server");
    // The server says where it listens: 0.0.0.0 became the pod's IP.
    assert_eq!(
        tail,
        format!("line 2\nline 3\nServing HTTP on {ip} port {port} (http://{ip}:{port}/) ...\n")
    );
    let stamped = pods
        .logs(
            "talker",
            &LogParams {
                timestamps: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let first = stamped.lines().next().unwrap();
    let (time, text) = first.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(time).is_ok(),
        "{first}"
    );
    assert_eq!(text, "line 1");

    // Following: what the process prints later comes too.
    let mut follow = pods
        .log_stream(
            "talker",
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("a log stream")
        .lines();

    // pods/portforward: kube's WebSocket, passed through by the API server to the kubelet.
    let mut forwarder = pods
        .portforward("talker", &[port])
        .await
        .expect("a port-forward");
    let stream = forwarder.take_stream(port).expect("the forwarded port");
    let answer = http_get(stream, "/").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    forwarder.abort();

    let line = tokio::time::timeout(WAIT, async {
        while let Some(line) = follow.try_next().await.expect("reading the log stream") {
            if line.contains("\"GET / HTTP/1.0\" 200") {
                return line;
            }
        }
        panic!("the log stream ended");
    })
    .await
    .expect("the request's line in the followed log");
    assert!(line.contains("GET /"), "{line}");

    // A port nothing listens on: the refusal comes back on the tunnel's error channel.
    let closed = port + 1;
    let mut forwarder = pods
        .portforward("talker", &[closed])
        .await
        .expect("a port-forward");
    let error = forwarder.take_error(closed).unwrap();
    // Nothing is written: the kubelet dials as the tunnel opens, and a write racing its error
    // message can fail on the closing socket first (kube then drops the message: seen under a
    // loaded CI). The stream is held open until the error is read.
    let _stream = forwarder.take_stream(closed).unwrap();
    let error = tokio::time::timeout(WAIT, error)
        .await
        .expect("an error message");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains(&format!("dial tcp {ip}:{closed}"))),
        "{error:?}"
    );
    forwarder.abort();

    tk.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_shows_in_the_status_and_runs_again() {
    let Some(tk) = Tk::start().await else { return };
    tk.pod(
        "victim",
        json!({"command": ["sh", "-c", "echo \"run at $(date +%s%N)\"; exec sleep 1000"]}),
        json!({}),
    )
    .await;
    let pod = tk.until("victim", "Running and ready", ready).await;
    let first_id = container_status(&pod)
        .unwrap()
        .container_id
        .clone()
        .unwrap();
    let pids = tk.kubelet().pids(&tk.ns, "victim");
    assert_eq!(pids.len(), 1);
    assert_eq!(first_id, format!("testkubelet://{}", pids[0]));

    tk.kubelet().kill(&tk.ns, "victim").await.unwrap();
    let pod = tk
        .until("victim", "restarted after the kill", |pod| {
            container_status(pod).is_some_and(|c| {
                c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        })
        .await;
    let c = container_status(&pod).unwrap();
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 137);
    assert_eq!(last.signal, Some(9));
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(last.container_id.as_deref(), Some(first_id.as_str()));
    assert_ne!(c.container_id.as_deref(), Some(first_id.as_str()));
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    // Not before the back-off (1 s) has passed.
    let started = c
        .state
        .as_ref()
        .unwrap()
        .running
        .as_ref()
        .unwrap()
        .started_at
        .clone();
    assert!(
        started.unwrap() > last.finished_at.clone().unwrap(),
        "{c:?}"
    );
    // The log of the killed run is `previous`, the new run's is another.
    let pods = tk.pods();
    let previous = pods
        .logs(
            "victim",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("the previous run's log");
    let current = eventually(WAIT, "the new run's log", || async {
        pods.logs("victim", &LogParams::default())
            .await
            .ok()
            .filter(|l| !l.is_empty())
    })
    .await;
    assert!(previous.starts_with("run at "), "{previous}");
    assert!(current.starts_with("run at "), "{current}");
    assert_ne!(previous, current);
    let reasons = tk.event_reasons("victim").await;
    assert!(reasons.iter().any(|r| r == "BackOff"), "{reasons:?}");
    tk.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_stopped_and_leaves_the_api() {
    let Some(tk) = Tk::start().await else { return };
    // It ignores SIGTERM (so does its sleep, inheriting that): SIGKILL after the 1 s grace.
    tk.pod(
        "stubborn",
        json!({"command": ["sh", "-c", "trap '' TERM; sleep 1000"]}),
        json!({"terminationGracePeriodSeconds": 1}),
    )
    .await;
    tk.until("stubborn", "Running", ready).await;
    let pid = tk.kubelet().pids(&tk.ns, "stubborn")[0];
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let began = std::time::Instant::now();
    tk.pods()
        .delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    let pods = tk.pods();
    eventually(WAIT, "the deleted pod to leave the API", || async {
        pods.get_opt("stubborn")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "{:?}",
        began.elapsed()
    );
    eventually(WAIT, "the process to be gone", || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    let reasons = tk.event_reasons("stubborn").await;
    assert!(reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
    tk.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_waits_with_create_container_config_error_until_it_exists() {
    let Some(tk) = Tk::start().await else { return };
    tk.pod(
        "needy",
        json!({
            "command": ["sh", "-c", "echo \"got $TOKEN\"; exec sleep 1000"],
            "env": [{
                "name": "TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}},
            }],
            // An exec probe runs like the container, with its env.
            "readinessProbe": {
                "exec": {"command": ["sh", "-c", "test \"$TOKEN\" = at-last"]},
                "periodSeconds": 1,
            },
        }),
        json!({}),
    )
    .await;
    let pod = tk
        .until("needy", "CreateContainerConfigError", |pod| {
            waiting_reason(pod).as_deref() == Some("CreateContainerConfigError")
        })
        .await;
    let waiting = container_status(&pod)
        .unwrap()
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert!(
        waiting
            .message
            .as_deref()
            .unwrap()
            .contains("\"later\" not found"),
        "{waiting:?}"
    );
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let reasons = tk.event_reasons("needy").await;
    assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");

    tk.secret("later", json!({"token": "at-last"})).await;
    tk.until("needy", "running once the Secret exists", ready)
        .await;
    let pods = tk.pods();
    let log = eventually(WAIT, "the log line", || async {
        pods.logs("needy", &LogParams::default())
            .await
            .ok()
            .filter(|l| !l.is_empty())
    })
    .await;
    assert_eq!(log, "got at-last\n");
    tk.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_translated_as_for_agentdecks_pods_and_exits_end_the_pod() {
    let Some(tk) = Tk::start().await else { return };
    tk.secret("files", json!({"file.0": "{\"model\":\"x\"}"}))
        .await;
    // As agentdeck's template: workingDir on an emptyDir, a Secret key mounted by subPath
    // inside it, HOME under it; restartPolicy Never, so the exit ends the pod.
    tk.pod(
        "paths",
        json!({
            "command": ["sh", "-c", "cat opencode.json; echo; echo \"home=$HOME\"; pwd; exit 3"],
            "workingDir": "/workspace",
            "env": [{"name": "HOME", "value": "/workspace/home"}],
            "volumeMounts": [
                {"name": "workspace", "mountPath": "/workspace"},
                {
                    "name": "files", "mountPath": "/workspace/opencode.json",
                    "subPath": "file.0", "readOnly": true,
                },
            ],
        }),
        json!({
            "restartPolicy": "Never",
            "volumes": [
                {"name": "workspace", "emptyDir": {}},
                {"name": "files", "secret": {"secretName": "files"}},
            ],
        }),
    )
    .await;
    let pod = tk
        .until("paths", "Failed", |pod| {
            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
        })
        .await;
    let c = container_status(&pod).unwrap();
    let terminated = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert_eq!(c.restart_count, 0);
    let log = tk
        .pods()
        .logs("paths", &LogParams::default())
        .await
        .unwrap();
    let workspace = tk
        .kubelet()
        .volume_path(&tk.ns, "paths", "workspace")
        .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "{\"model\":\"x\"}", "{log}");
    assert_eq!(
        lines[1],
        format!("home={}/home", workspace.display()),
        "{log}"
    );
    assert_eq!(lines[2], workspace.display().to_string(), "{log}");

    tk.pod(
        "done",
        json!({"command": ["true"]}),
        json!({"restartPolicy": "OnFailure"}),
    )
    .await;
    let pod = tk
        .until("done", "Succeeded", |pod| {
            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await;
    let terminated = container_status(&pod)
        .unwrap()
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    tk.finish().await;
}
