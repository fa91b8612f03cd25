//! `exec` as a kubelet serves it, after the WebSocket upgrade (`v5.channel.k8s.io`, else
//! `v4.channel.k8s.io`): the command runs as a local process with the container's env, on a real
//! pseudo-terminal when `tty=true`, so that a shell behaves as it would in a pod (echo, job
//! control, `stty size` after a resize). The tests' kubelet serves it at
//! `/exec/{namespace}/{pod}/{container}` (its Node declares `ExtendWebSocketsToKubelet`, so a
//! 1.36 API server passes the WebSocket through instead of speaking SPDY to it); the fake API
//! server serves the same at `pods/{name}/exec`.
//!
//! The protocol: every WebSocket message starts with its channel's byte: 0 stdin (client →
//! server), 1 stdout, 2 stderr, 3 the status (a `metav1.Status` once the process ended:
//! `Success`, or `Failure` with reason `NonZeroExitCode` and the code as a cause), 4 resize
//! (`{"Width": …, "Height": …}`), and with v5 255 + a channel to close it (the client's end of
//! stdin). When the client goes, the process is hung up on (its terminal's session gets SIGHUP).

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

/// The subprotocol to answer with, of those `offered` (the `Sec-WebSocket-Protocol` header).
pub fn protocol(offered: &str) -> Option<&'static str> {
    [V5, V4]
        .into_iter()
        .find(|p| offered.split(',').any(|o| o.trim() == *p))
}

/// Why no subprotocol was chosen.
pub fn unsupported(offered: &str) -> String {
    format!("unsupported subprotocols {offered:?}: this server speaks {V5} and {V4}")
}

/// What was asked for, from the query string.
#[derive(Debug, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub fn parse(query: &str) -> ExecRequest {
    let mut req = ExecRequest::default();
    for (k, v) in super::server::query_pairs(query) {
        let yes = v == "true" || v == "1";
        match k.as_str() {
            "command" => req.command.push(v),
            "container" => req.container = Some(v),
            "stdin" => req.stdin = yes,
            "stdout" => req.stdout = yes,
            "stderr" => req.stderr = yes,
            "tty" => req.tty = yes,
            _ => {}
        }
    }
    req
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
    cwd: &Path,
    tx: &mpsc::Sender<Io>,
) -> std::io::Result<Process> {
    let mut cmd = std::process::Command::new(&asked.command[0]);
    cmd.args(&asked.command[1..])
        .env_clear()
        .current_dir(cwd)
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

/// A pseudo-terminal: (master, slave), both close-on-exec (std opens with `O_CLOEXEC`), so no
/// other process started meanwhile holds them open (a terminal held open never hangs up on
/// its shell).
fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")?;
    let fd = master.as_raw_fd();
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: a valid descriptor of ours; `name` is valid for its length.
    let rc = unsafe {
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            -1
        } else {
            libc::ptsname_r(fd, name.as_mut_ptr(), name.len())
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    Ok((OwnedFd::from(master), OwnedFd::from(slave)))
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

/// Runs the command and carries its streams on `ws` (upgraded, server side) until it ends, the
/// client goes, or `stop` (the pod is gone).
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    asked: ExecRequest,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    v5: bool,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Io>(64);
    let mut process = match spawn(&asked, &env, &cwd, &tx) {
        Ok(p) => p,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("exec: {:?}: {e}", asked.command[0])});
            let mut msg = vec![3u8];
            msg.extend(status.to_string().into_bytes());
            let _ = ws.send(Message::binary(msg)).await;
            close(ws).await;
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
            () = stop.cancelled(), if exited.is_none() => {
                process.hang_up();
                return;
            }
        }
    }
    let status = status_of(exited.as_ref().unwrap_or(&Ok(ExitStatus::default())));
    let mut msg = vec![3u8];
    msg.extend(status.to_string().into_bytes());
    let _ = ws.send(Message::binary(msg)).await;
    close(ws).await;
}

/// The closing handshake: our close, then what the client still sends until its own close.
/// Dropping the connection with the client's messages unread would reset it, and the client
/// could lose the status before it read it.
async fn close<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = ws.close(None).await;
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
