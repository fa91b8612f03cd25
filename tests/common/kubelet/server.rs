//! The kubelet's HTTPS server, which the API server reaches at InternalIP:kubeletEndpoint.Port
//! for `pods/log` (`/containerLogs/…`), `pods/portforward` (`/portForward/…`) and `pods/exec`
//! (`/exec/…`, WebSocket only: see `exec.rs`). The API
//! server does not verify a kubelet's certificate (no `--kubelet-certificate-authority`), and
//! this server asks for no client certificate.

use super::Shared;
use super::forward::{PORT_FORWARD_PROTOCOL, tunnel};
use super::logs::{self, LogQuery};
use anyhow::Context as _;
use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Listens on 127.0.0.1 (a free port) with the given certificate, or a self-signed one made in
/// `<root>/tls` with openssl.
pub(crate) async fn bind(
    root: &Path,
    tls: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<(TcpListener, TlsAcceptor)> {
    let (cert, key) = match tls {
        Some((cert, key)) => (cert.clone(), key.clone()),
        None => self_signed(root)?,
    };
    let certs = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the kubelet's certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the kubelet's HTTPS port")?;
    Ok((listener, TlsAcceptor::from(Arc::new(config))))
}

/// `<root>/tls/kubelet.{crt,key}`, made once by openssl.
fn self_signed(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = root.join("tls");
    let (cert, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let output = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
        ])
        .args(["-subj", "/CN=test-kubelet", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl to make the kubelet's self-signed certificate")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl could not make the kubelet's certificate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((cert, key))
}

/// Serves connections until the kubelet stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let tcp = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("kubelet server: accepting: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => return tracing::debug!("kubelet server: TLS handshake: {e}"),
            };
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(shared, request).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!("kubelet server: connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(message.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `a=1&b=x%3Ay` as pairs, percent-decoded (also the fake API server's exec's).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let query = query_pairs(request.uri().query().unwrap_or(""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        ["containerLogs", namespace, pod, container] => {
            container_logs(&shared, namespace, pod, container, &query)
        }
        ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
            port_forward(&shared, namespace, pod, &query, request)
        }
        ["exec", namespace, pod, container] | ["exec", namespace, pod, _, container] => {
            exec(&shared, namespace, pod, container, request)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("the test kubelet does not serve {path}"),
        ),
    }
}

fn container_logs(
    shared: &Arc<Shared>,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let Some(entry) = shared.find(namespace, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} does not run on node {}", shared.node),
        );
    };
    let query = match LogQuery::parse(query) {
        Ok(query) => query,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let (index, run) = match logs::choose(&entry, container, &query) {
        Ok(chosen) => chosen,
        Err((code, message)) => return text(status_of(code), message),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(logs::stream(entry, index, run, query, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// `101 Switching Protocols`, then the tunnel to the pod's IP and port in a task.
fn port_forward(
    shared: &Arc<Shared>,
    namespace: &str,
    pod: &str,
    query: &[(String, String)],
    mut request: Request<Incoming>,
) -> Response<Body> {
    let Some(entry) = shared.find(namespace, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} does not run on node {}", shared.node),
        );
    };
    let Some((key, offered)) = websocket(request.headers()) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "the test kubelet port-forwards over WebSocket ({PORT_FORWARD_PROTOCOL}) only, \
                 not SPDY"
            ),
        );
    };
    if !offered
        .split(',')
        .any(|p| p.trim() == PORT_FORWARD_PROTOCOL)
    {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported subprotocol {offered:?}: \
                 the test kubelet speaks {PORT_FORWARD_PROTOCOL}"
            ),
        );
    }
    // The API server passes the ports on as `port=`; kube-rs asks it with `ports=`.
    let ports: Vec<u16> = query
        .iter()
        .filter(|(k, _)| k == "port" || k == "ports")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let port = match ports.as_slice() {
        [port] => *port,
        [] => return text(StatusCode::BAD_REQUEST, "a port is required"),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "the test kubelet forwards one port per connection",
            );
        }
    };
    let ip = if entry.host_network {
        "127.0.0.1".to_string()
    } else {
        entry.ip.to_string()
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!("port-forward upgrade: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tunnel(ws, &ip, port).await;
    });
    switching(&key, PORT_FORWARD_PROTOCOL)
}

/// A WebSocket upgrade's key and the subprotocols it offers (`None`: not an upgrade).
pub fn websocket(headers: &header::HeaderMap) -> Option<(String, String)> {
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?;
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Some((key.to_string(), offered.to_string()))
}

/// `101 Switching Protocols` to a WebSocket of `protocol` (also the fake API server's).
pub fn switching(key: &str, protocol: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(protocol),
    );
    response
}

/// `exec` in a running container: the command with the container's env, in its folder, its
/// words' paths translated as the container's own are (`Launch::word`).
fn exec(
    shared: &Arc<Shared>,
    namespace: &str,
    pod: &str,
    container: &str,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let Some(entry) = shared.find(namespace, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} does not run on node {}", shared.node),
        );
    };
    let launch = entry
        .lock()
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.launch.clone());
    let Some(launch) = launch else {
        return text(
            StatusCode::NOT_FOUND,
            format!("container not found ({container:?})"),
        );
    };
    let mut asked = super::exec::parse(request.uri().query().unwrap_or(""));
    asked.command = asked.command.iter().map(|w| launch.word(w)).collect();
    if asked.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "no command to run");
    }
    let Some((key, offered)) = websocket(request.headers()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the test kubelet serves exec over WebSocket only, not SPDY",
        );
    };
    let Some(protocol) = super::exec::protocol(&offered) else {
        return text(StatusCode::BAD_REQUEST, super::exec::unsupported(&offered));
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let gone = entry.gone.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!("exec upgrade: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (env, cwd) = (launch.env.clone(), launch.cwd.clone());
        super::exec::serve(ws, asked, env, cwd, protocol.starts_with("v5"), gone).await;
    });
    switching(&key, protocol)
}
