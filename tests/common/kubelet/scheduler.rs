//! The kube-scheduler's part, for the kubelet's own namespaces: a pod with no node is bound to
//! this node through the real `pods/{name}/binding` subresource.

use super::{Shared, event};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Watches the namespace's unscheduled pods and binds each one, until the kubelet stops.
pub(crate) async fn schedule(shared: Arc<Shared>, namespace: String) {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher::watcher(api.clone(), config)
        .default_backoff()
        .boxed();
    // uids bound (or being bound) already: a pod shows up again until its binding is seen.
    let mut bound: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(%namespace, "watching unscheduled pods: {e}");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let spec = pod.spec.as_ref();
        let scheduler = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some()
            || spec
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
            || scheduler != "default-scheduler"
            || matches!(phase, Some("Succeeded" | "Failed"))
            || !bound.insert(uid.clone())
        {
            continue;
        }
        let shared = shared.clone();
        let api = api.clone();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tokio::spawn(async move { bind(&shared, &api, &name, &uid).await });
    }
}

async fn bind(shared: &Shared, api: &Api<Pod>, name: &str, uid: &str) {
    let namespace = api.namespace().unwrap_or_default().to_string();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": shared.node},
    });
    for attempt in 0..5 {
        let result: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", name, &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%namespace, pod = name, node = %shared.node, "bound");
                event(
                    &shared.client,
                    "default-scheduler",
                    &shared.node,
                    &namespace,
                    name,
                    json!({"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                           "name": name, "uid": uid}),
                    false,
                    "Scheduled",
                    format!(
                        "Successfully assigned {namespace}/{name} to {}",
                        shared.node
                    ),
                );
                return;
            }
            // Gone, or bound by someone else (or by an earlier attempt of ours).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
            Err(e) => {
                tracing::warn!(%namespace, pod = name, attempt, "binding: {e}");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
        }
    }
}
