//! `pods/{name}/exec`: a command run "in" a pod over a WebSocket, as `kubectl exec` and kube-rs
//! open it (subprotocol `v5.channel.k8s.io`, else `v4.channel.k8s.io`). There is no container
//! here: the command runs as a local process (in the temp folder, with the pod's container env,
//! `secretKeyRef`s resolved from the stored Secrets), on a real pseudo-terminal when `tty=true`,
//! so that a shell behaves as it would in a pod (echo, job control, `stty size` after a resize).
//!
//! The protocol, as the real server speaks it: every WebSocket message starts with its channel's
//! byte: 0 stdin (client → server), 1 stdout, 2 stderr, 3 the status (a `metav1.Status` once
//! the process ended: `Success`, or `Failure` with reason `NonZeroExitCode` and the code as a
//! cause), 4 resize (`{"Width": …, "Height": …}`), and with v5 255 + a channel to close it (the
//! client's end of stdin). A `create pods/exec` taken away with `FakeKube::deny` is refused with
//! the real server's 403.

use super::Cluster;
use super::objects::{ApiError, find_kind};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

/// What was asked for, from the query string.
#[derive(Debug, Default)]
struct ExecRequest {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn parse(query: &str) -> ExecRequest {
    let mut req = ExecRequest::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "command" => req.command.push(v),
            "container" => req.container = Some(v),
            "stdin" => req.stdin = v == "true" || v == "1",
            "stdout" => req.stdout = v == "true" || v == "1",
            "stderr" => req.stderr = v == "true" || v == "1",
            "tty" => req.tty = v == "true" || v == "1",
            _ => {}
        }
    }
    req
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers an exec request: `101 Switching Protocols`, then the process in a task.
pub(crate) fn exec(
    cluster: &Arc<Cluster>,
    namespace: &str,
    pod: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let asked = parse(request.uri().query().unwrap_or(""));
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
        let mut env = Vec::new();
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
    let headers = request.headers();
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("an exec needs a WebSocket upgrade"))?
        .to_string();
    let offered: Vec<String> = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    let protocol = [V5, V4]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unsupported subprotocols {offered:?}: the fake speaks {V5} and {V4}"
            ))
        })?;
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve(ws, asked, env, protocol == V5).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Body::empty())
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What the process's threads report.
enum Io {
    Out(u8, Vec<u8>),
    Eof(u8),
    Exited(std::io::Result<ExitStatus>),
}

/// The process: its input, and (with a terminal) the terminal to resize.
struct Process {
    input: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    terminal: Option<std::fs::File>,
    pid: i32,
}

impl Process {
    /// The client went: its process goes too, as a terminal's hang-up ends a shell (the whole
    /// session, when it has a terminal of its own).
    fn hang_up(&self) {
        // SAFETY: signalling a process (group) of ours.
        unsafe {
            if self.terminal.is_some() {
                libc::killpg(self.pid, libc::SIGHUP);
                libc::killpg(self.pid, libc::SIGCONT);
            } else {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

fn spawn(
    asked: &ExecRequest,
    env: &[(String, String)],
    tx: &mpsc::Sender<Io>,
) -> std::io::Result<Process> {
    let mut cmd = std::process::Command::new(&asked.command[0]);
    cmd.args(&asked.command[1..])
        .current_dir(std::env::temp_dir())
        .envs(env.iter().map(|(k, v)| (k, v)));
    let mut outputs: Vec<(u8, Box<dyn Read + Send>)> = Vec::new();
    let (writer, terminal): (Box<dyn Write + Send>, Option<std::fs::File>) = if asked.tty {
        let (master, slave) = openpty()?;
        let slave = std::fs::File::from(slave);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let master = std::fs::File::from(master);
        outputs.push((1, Box::new(master.try_clone()?)));
        (Box::new(master.try_clone()?), Some(master))
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        (Box::new(std::io::sink()), None)
    };
    let mut child = cmd.spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let writer: Box<dyn Write + Send> = match child.stdin.take() {
        Some(stdin) => Box::new(stdin),
        None => writer,
    };
    if let Some(out) = child.stdout.take() {
        outputs.push((1, Box::new(out)));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push((2, Box::new(err)));
    }
    for (channel, mut reader) in outputs {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                // A terminal whose last process is gone reads as EIO: the end, as EOF.
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx
                            .blocking_send(Io::Out(channel, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = tx.blocking_send(Io::Eof(channel));
        });
    }
    let (input_tx, input_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut writer = writer;
        while let Ok(bytes) = input_rx.recv() {
            if writer
                .write_all(&bytes)
                .and_then(|()| writer.flush())
                .is_err()
            {
                return;
            }
        }
        // Dropped: a pipe's reader sees the end of its input.
    });
    let exited = tx.clone();
    std::thread::spawn(move || {
        let _ = exited.blocking_send(Io::Exited(child.wait()));
    });
    Ok(Process {
        input: Some(input_tx),
        terminal,
        pid,
    })
}

fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: two valid out-pointers; the name, termios and size are optional.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty returned two open descriptors, owned from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

fn set_size(terminal: &std::fs::File, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid descriptor and a valid winsize.
    unsafe {
        libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size);
    }
}

/// The status the real server sends when the process has ended.
fn status_of(exit: &std::io::Result<ExitStatus>) -> Value {
    use std::os::unix::process::ExitStatusExt;
    let code = match exit {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => {
            return json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                          "message": format!("waiting for the process: {e}")});
        }
    };
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

async fn serve<S>(
    mut ws: WebSocketStream<S>,
    asked: ExecRequest,
    env: Vec<(String, String)>,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Io>(64);
    let mut process = match spawn(&asked, &env, &tx) {
        Ok(p) => p,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("exec: {:?}: {e}", asked.command[0])});
            let mut msg = vec![3u8];
            msg.extend(status.to_string().into_bytes());
            let _ = ws.send(Message::binary(msg)).await;
            let _ = ws.close(None).await;
            return;
        }
    };
    drop(tx);
    let mut open_outputs = if asked.tty { 1 } else { 2 };
    let mut exited: Option<std::io::Result<ExitStatus>> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if exited.is_some() && open_outputs == 0 {
            break;
        }
        let wait_for_output = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(bytes))) if !bytes.is_empty() => match bytes[0] {
                    0 => {
                        if let Some(input) = &process.input {
                            let _ = input.send(bytes[1..].to_vec());
                        }
                    }
                    4 => {
                        let size: Value = serde_json::from_slice(&bytes[1..]).unwrap_or_default();
                        if let (Some(t), Some(w), Some(h)) =
                            (&process.terminal, size["Width"].as_u64(), size["Height"].as_u64())
                        {
                            set_size(t, w as u16, h as u16);
                        }
                    }
                    255 if v5 && bytes.get(1) == Some(&0) => process.input = None,
                    _ => {}
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    if exited.is_none() {
                        process.hang_up();
                    }
                    return;
                }
            },
            io = rx.recv() => match io {
                Some(Io::Out(channel, bytes)) => {
                    let mut msg = Vec::with_capacity(bytes.len() + 1);
                    msg.push(channel);
                    msg.extend(bytes);
                    if ws.send(Message::binary(msg)).await.is_err() {
                        return;
                    }
                }
                Some(Io::Eof(_)) => open_outputs -= 1,
                Some(Io::Exited(status)) => {
                    exited = Some(status);
                    // A process left in the background may keep the output open.
                    deadline = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                None => open_outputs = 0,
            },
            () = wait_for_output => open_outputs = 0,
        }
    }
    let status = status_of(exited.as_ref().unwrap_or(&Ok(ExitStatus::default())));
    let mut msg = vec![3u8];
    msg.extend(status.to_string().into_bytes());
    let _ = ws.send(Message::binary(msg)).await;
    let _ = ws.close(None).await;
}
