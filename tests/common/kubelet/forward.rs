//! The port-forward tunnel of `v4.channel.k8s.io` (after the WebSocket upgrade), as a kubelet
//! serves `/portForward/{namespace}/{pod}` and the API server passes it through unchanged. The
//! fake API server (tests/common/fake_kube/forward.rs) serves the same tunnel.
//!
//! The protocol: each forwarded port has a data channel (2i) and an error channel (2i + 1);
//! every WebSocket message starts with its channel's byte; the first message on each channel is
//! the port number (two bytes, little-endian). A connection the pod refuses is reported as text
//! on the error channel. One port per tunnel here (what kube-rs and agentdeck ask for).

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Message;

/// The WebSocket subprotocol of the tunnel.
pub const PORT_FORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

/// Carries one port-forward WebSocket (already upgraded, server side) to `ip:port` until either
/// side closes.
pub async fn tunnel<S>(mut ws: WebSocketStream<S>, ip: &str, port: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if ws
            .send(Message::binary(vec![channel, lo, hi]))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut upstream = match tokio::net::TcpStream::connect((ip, port)).await {
        Ok(stream) => stream,
        Err(e) => {
            let mut text = vec![1u8];
            text.extend_from_slice(
                format!("error forwarding port {port} to pod: dial tcp {ip}:{port}: {e}")
                    .as_bytes(),
            );
            let _ = ws.send(Message::binary(text)).await;
            let _ = ws.close(None).await;
            return;
        }
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    // Data for the pod on channel 0; anything else (the error channel) is ignored.
                    if data.first() == Some(&0) && upstream.write_all(&data[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            read = upstream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buf[..n]);
                    if ws.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = ws.close(None).await;
}
