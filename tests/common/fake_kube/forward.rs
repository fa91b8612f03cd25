//! `pods/{name}/portforward`: the WebSocket tunnel that kubectl and kube-rs open to a pod's
//! port (subprotocol `v4.channel.k8s.io`), carried to the simulated pod's IP and port as the
//! kubelet would carry it into the pod's network namespace.
//!
//! The protocol, as the real server speaks it: each forwarded port has a data channel (2i) and
//! an error channel (2i + 1); every WebSocket message starts with its channel's byte; the first
//! message on each channel is the port number (two bytes, little-endian). A connection the pod
//! refuses is reported as text on the error channel. One port per tunnel here (what agentdeck
//! asks for); more is refused with a clear error rather than served wrongly. The tunnel itself
//! is the tests' kubelet's (`kubelet::tunnel`), which serves the same to the real API server.

use super::Cluster;
use super::objects::{ApiError, find_kind};
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::super::kubelet::PORT_FORWARD_PROTOCOL as PROTOCOL;

/// Answers a port-forward request: `101 Switching Protocols`, then the tunnel in a task.
pub(crate) fn portforward(
    cluster: &Arc<Cluster>,
    namespace: &str,
    pod: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let pods = find_kind("", "pods").ok_or_else(|| ApiError::bad_request("no pods kind"))?;
    let ip = {
        let world = cluster.world();
        let obj = world
            .store
            .get(pods, namespace, pod)
            .ok_or_else(|| ApiError::not_found(pods, pod))?;
        obj["status"]["podIP"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!("pod {pod} has no IP yet: it is not running"))
            })?
    };
    let query = request.uri().query().unwrap_or("").to_string();
    let ports: Vec<u16> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("ports="))
        .flat_map(|v| v.split("%2C").flat_map(|p| p.split(',')))
        .filter_map(|p| p.parse().ok())
        .collect();
    let port = match ports.as_slice() {
        [port] => *port,
        [] => return Err(ApiError::bad_request("at least one port is required")),
        _ => {
            return Err(ApiError::bad_request(
                "the fake API server forwards one port per connection",
            ));
        }
    };
    let (key, offered) = super::super::kubelet::websocket(request.headers())
        .ok_or_else(|| ApiError::bad_request("a port-forward needs a WebSocket upgrade"))?;
    if !offered.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "unsupported subprotocol {offered:?}: the fake speaks {PROTOCOL}"
        )));
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(_) => return,
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        super::super::kubelet::tunnel(ws, &ip, port).await;
    });
    Ok(super::super::kubelet::switching(&key, PROTOCOL))
}
