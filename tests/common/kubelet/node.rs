//! The kubelet's Node: registered (replacing a leftover of the same name), its status written
//! through `/status`, deleted on stop.

use super::{Shared, now_secs};
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn status(shared: &Shared) -> Value {
    let now = now_secs();
    let resources =
        json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let conditions: Vec<Value> = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "the test kubelet (tests/common/kubelet) runs pods as local processes",
        ),
    ]
    .into_iter()
    .map(|(kind, status, reason, message)| condition(kind, status, reason, message))
    .collect();
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": shared.node},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": shared.port}},
        // exec (and attach, port-forward) WebSockets come straight through from a 1.36 API
        // server, which would otherwise speak SPDY to this kubelet for exec.
        "declaredFeatures": ["ExtendWebSocketsToKubelet"],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "", "osImage": "agentdeck test kubelet",
            "containerRuntimeVersion": "testkubelet://0.1.0",
            "kubeletVersion": "v0.0.0-testkubelet", "kubeProxyVersion": "",
            "operatingSystem": std::env::consts::OS, "architecture": arch(),
        },
    })
}

/// Creates the Node (a leftover of the same name is deleted first) and writes its status.
pub(crate) async fn register(shared: &Shared) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": shared.node,
            "labels": {
                "kubernetes.io/hostname": shared.node,
                "kubernetes.io/os": std::env::consts::OS,
                "kubernetes.io/arch": arch(),
                "agentdeck.dev/test-kubelet": "true",
            },
        },
        "status": status(shared),
    }))
    .context("a Node object")?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 && attempts < 20 => {
                tracing::info!(node = %shared.node, "replacing a Node left over with this name");
                match api.delete(&shared.node, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("deleting the leftover Node {}", shared.node)
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("registering Node {}", shared.node));
            }
        }
    }
    // Creating a Node keeps its status today, but a kubelet writes it through /status anyway.
    api.patch_status(
        &shared.node,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status(shared)})),
    )
    .await
    .with_context(|| format!("writing the status of Node {}", shared.node))?;
    Ok(())
}

/// Deletes the Node (gone already is fine).
pub(crate) async fn delete(shared: &Shared) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(shared.client.clone());
    match api.delete(&shared.node, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting Node {}", shared.node)),
    }
}
