//! `pods/{name}/exec` on the fake API server: what the API server checks (the verb, the pod,
//! its container, that it runs), then the kubelet's side of it (`kubelet::exec`: the command as a
//! local process in the temp folder, with the pod's container env, `secretKeyRef`s resolved from
//! the stored Secrets). A `create pods/exec` taken away with `FakeKube::deny` is refused with the
//! real server's 403.

use super::super::kubelet;
use super::Cluster;
use super::objects::{ApiError, find_kind};
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Answers an exec request: `101 Switching Protocols`, then the process in a task.
pub(crate) fn exec(
    cluster: &Arc<Cluster>,
    namespace: &str,
    pod: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let asked = kubelet::exec::parse(request.uri().query().unwrap_or(""));
    if cluster
        .world()
        .denied
        .contains(&("create".to_string(), "pods/exec".to_string()))
    {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "pods \"{pod}\" is forbidden: User \"test\" cannot create resource \"pods/exec\" \
                 in API group \"\" in the namespace \"{namespace}\""
            ),
        ));
    }
    let pods = find_kind("", "pods").ok_or_else(|| ApiError::bad_request("no pods kind"))?;
    let secrets = find_kind("", "secrets").ok_or_else(|| ApiError::bad_request("no secrets"))?;
    let env = {
        let world = cluster.world();
        let obj = world
            .store
            .get(pods, namespace, pod)
            .ok_or_else(|| ApiError::not_found(pods, pod))?;
        let containers = obj["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let name = match &asked.container {
            Some(name) => name.clone(),
            None if containers.len() == 1 => containers[0]["name"].as_str().unwrap_or("").into(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod}"
                )));
            }
        };
        let Some(container) = containers.iter().find(|c| c["name"] == name.as_str()) else {
            return Err(ApiError::bad_request(format!(
                "container {name} is not valid for pod {pod}"
            )));
        };
        if obj["status"]["phase"] != "Running" {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade connection: container not found (\"{name}\")"
            )));
        }
        // As a kubelet starts it: its PATH (this process's), the pod's name, then the env.
        let mut env = vec![
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            ),
            ("HOSTNAME".to_string(), pod.to_string()),
        ];
        for var in container["env"].as_array().into_iter().flatten() {
            let Some(key) = var["name"].as_str() else {
                continue;
            };
            if let Some(value) = var["value"].as_str() {
                env.push((key.to_string(), value.to_string()));
            } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
                let secret = world.store.get(
                    secrets,
                    namespace,
                    r.get("name").and_then(Value::as_str).unwrap_or(""),
                );
                let value = secret
                    .and_then(|s| {
                        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(s.clone()).ok()
                    })
                    .and_then(|s| {
                        let k = r.get("key").and_then(Value::as_str)?;
                        s.data?
                            .get(k)
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    });
                if let Some(value) = value {
                    env.push((key.to_string(), value));
                }
            }
        }
        env
    };
    if asked.command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if !asked.stdin && !asked.stdout && !asked.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let (key, offered) = kubelet::websocket(request.headers())
        .ok_or_else(|| ApiError::bad_request("an exec needs a WebSocket upgrade"))?;
    let protocol = kubelet::exec::protocol(&offered)
        .ok_or_else(|| ApiError::bad_request(kubelet::exec::unsupported(&offered)))?;
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let v5 = protocol.starts_with("v5");
        let cwd = std::env::temp_dir();
        kubelet::exec::serve(ws, asked, env, cwd, v5, Default::default()).await;
    });
    Ok(kubelet::switching(&key, protocol))
}
