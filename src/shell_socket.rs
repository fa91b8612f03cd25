//! An attached shell carried over a WebSocket, both ends: `serve` runs the shell
//! (`GET /api/sessions/{id}/shell`, upgraded) and a remote cockpit or CLI gets it back as an
//! [`AttachedShell`], so `crate::console` gives it the operator's terminal exactly as it does a
//! shell attached to a pod.
//!
//! The frames:
//! - binary, its first byte the stream: `0` the shell's input (client to server), `1` its
//!   output, `2` its errors (server to client, only without a terminal);
//! - text, JSON, to say the rest: `{"opened": {"place", "tty"}}` first from the server;
//!   `{"resize": [cols, rows]}` and `{"input": "closed"}` from the client;
//!   `{"exit": {"code": N}}` or `{"exit": {"failed": "why"}}` last from the server, after
//!   everything the shell wrote.
//!
//! Either end going away ends the shell: the server drops it (which ends the process), and
//! the client's shell says its connection was lost.

use crate::core::{AttachedShell, ShellExit, ShellOptions};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const INPUT: u8 = 0;
const OUTPUT: u8 = 1;
const ERRORS: u8 = 2;
/// The most of a stream sent in one frame.
const CHUNK: usize = 16 * 1024;
/// How often the server pings a quiet shell (proxies close silent connections).
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long what a shell wrote just before it exited is waited for.
const DRAIN: Duration = Duration::from_secs(1);

pub use tokio_tungstenite::tungstenite::handshake::client::generate_key;
pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key as accept_key;

/// What the shell is asked for, as the route's query string.
pub fn query(options: &ShellOptions) -> String {
    let mut q = format!("tty={}", options.tty);
    if let Some(term) = &options.term {
        let term: String = term
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        q.push_str(&format!("&term={term}"));
    }
    if let Some((cols, rows)) = options.size {
        q.push_str(&format!("&cols={cols}&rows={rows}"));
    }
    q
}

fn frame(stream: u8, bytes: &[u8]) -> Message {
    let mut data = Vec::with_capacity(bytes.len() + 1);
    data.push(stream);
    data.extend_from_slice(bytes);
    Message::Binary(data.into())
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Carries `shell` over `ws` until it ends or the client goes (then it is dropped, which ends
/// it).
pub async fn serve<S>(ws: WebSocketStream<S>, shell: AttachedShell)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let AttachedShell {
        place,
        tty,
        mut input,
        mut output,
        mut errors,
        resize,
        mut exit,
    } = shell;
    let (mut sink, mut frames) = ws.split();
    if sink
        .send(text(json!({"opened": {"place": place, "tty": tty}})))
        .await
        .is_err()
    {
        return;
    }
    let (mut buf, mut ebuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut output_open = true;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let ended = loop {
        tokio::select! {
            biased;
            n = output.read(&mut buf), if output_open => match n {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => if sink.send(frame(OUTPUT, &buf[..n])).await.is_err() {
                    return;
                },
            },
            n = async { errors.as_mut()?.read(&mut ebuf).await.ok() }, if errors.is_some() => {
                match n {
                    Some(n) if n > 0 => if sink.send(frame(ERRORS, &ebuf[..n])).await.is_err() {
                        return;
                    },
                    _ => errors = None,
                }
            }
            message = frames.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if data.first() == Some(&INPUT)
                        && (input.write_all(&data[1..]).await.is_err()
                            || input.flush().await.is_err())
                    {
                        tracing::debug!("the shell no longer reads its input");
                    }
                }
                Some(Ok(Message::Text(said))) => {
                    let said: Value = serde_json::from_str(said.as_str()).unwrap_or(Value::Null);
                    if said["input"] == "closed" {
                        let _ = input.shutdown().await;
                    } else if let (Some(resize), Some(cols), Some(rows)) = (
                        &resize,
                        said["resize"][0].as_u64().and_then(|c| u16::try_from(c).ok()),
                        said["resize"][1].as_u64().and_then(|r| u16::try_from(r).ok()),
                    ) {
                        let _ = resize.try_send((cols, rows));
                    }
                }
                Some(Ok(_)) => {}
                // The client has gone: the shell goes with it.
                Some(Err(_)) | None => return,
            },
            _ = ping.tick() => if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                return;
            },
            end = &mut exit => break end,
        }
    };
    // What the shell wrote just before it exited may still be on its way.
    let drain = async {
        while output_open {
            match output.read(&mut buf).await {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    if sink.send(frame(OUTPUT, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        while let Some(e) = errors.as_mut() {
            match e.read(&mut ebuf).await {
                Ok(n) if n > 0 => {
                    if sink.send(frame(ERRORS, &ebuf[..n])).await.is_err() {
                        return;
                    }
                }
                _ => errors = None,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
    let exit = match ended {
        ShellExit::Code(code) => json!({"exit": {"code": code}}),
        ShellExit::Failed(why) => json!({"exit": {"failed": why}}),
    };
    let _ = sink.send(text(exit)).await;
    let _ = sink.close().await;
}

/// The shell the server has opened on `ws`, once it says so (or why it could not).
pub async fn attach<S>(ws: WebSocketStream<S>, server: String) -> Result<AttachedShell, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut frames) = ws.split();
    let opened = loop {
        match frames.next().await {
            Some(Ok(Message::Text(said))) => {
                let said: Value = serde_json::from_str(said.as_str()).unwrap_or(Value::Null);
                if said["opened"].is_object() {
                    break said["opened"].clone();
                }
                if let Some(why) = said["exit"]["failed"].as_str() {
                    return Err(why.to_string());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("{server}: the shell's connection failed: {e}")),
            None => return Err(format!("{server} closed the shell's connection")),
        }
    };
    let tty = opened["tty"].as_bool().unwrap_or(false);
    let place = opened["place"]
        .as_str()
        .unwrap_or("the sandbox")
        .to_string();
    let (input, mut typed) = tokio::io::duplex(CHUNK);
    let (mut shown, output) = tokio::io::duplex(4 * CHUNK);
    let (mut said_err, errors) = tokio::io::duplex(4 * CHUNK);
    let (resize, mut sizes) = tokio::sync::mpsc::channel::<(u16, u16)>(8);
    let (ended, exit) = tokio::sync::oneshot::channel::<ShellExit>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut input_open = true;
        let lost = || ShellExit::Failed(format!("the connection to {server} was lost"));
        let mut ended = ended;
        let end = loop {
            tokio::select! {
                message = frames.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        let to = match data.first() {
                            Some(&OUTPUT) => &mut shown,
                            Some(&ERRORS) => &mut said_err,
                            _ => continue,
                        };
                        // A reader that has gone (the operator left) takes nothing more.
                        let _ = to.write_all(&data[1..]).await;
                    }
                    Some(Ok(Message::Text(said))) => {
                        let said: Value =
                            serde_json::from_str(said.as_str()).unwrap_or(Value::Null);
                        if let Some(code) = said["exit"]["code"].as_i64() {
                            break ShellExit::Code(i32::try_from(code).unwrap_or(1));
                        }
                        if let Some(why) = said["exit"]["failed"].as_str() {
                            break ShellExit::Failed(why.to_string());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break lost(),
                },
                n = typed.read(&mut buf), if input_open => {
                    let sent = match n {
                        Ok(0) | Err(_) => {
                            input_open = false;
                            sink.send(text(json!({"input": "closed"}))).await
                        }
                        Ok(n) => sink.send(frame(INPUT, &buf[..n])).await,
                    };
                    if sent.is_err() {
                        break lost();
                    }
                }
                Some((cols, rows)) = sizes.recv() => {
                    if sink.send(text(json!({"resize": [cols, rows]}))).await.is_err() {
                        break lost();
                    }
                }
                // The operator has left: the server is told by the connection's close.
                () = ended.closed() => break lost(),
            }
        };
        // The readers see the end of what was written, then how it ended.
        drop((shown, said_err));
        let _ = ended.send(end);
        let _ = sink.close().await;
    });
    Ok(AttachedShell {
        place,
        tty,
        input: Box::pin(input),
        output: Box::pin(output),
        errors: (!tty).then(|| Box::pin(errors) as crate::runtime::ShellOutput),
        resize: tty.then_some(resize),
        exit: Box::pin(async move {
            exit.await
                .unwrap_or_else(|_| ShellExit::Failed("the shell's connection ended".into()))
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Both ends over an in-memory connection: a script's output, errors and exit code cross
    /// it, in order, and the input's end reaches the shell.
    #[tokio::test]
    async fn a_shell_crosses_the_socket_both_ways() {
        let (a, b) = tokio::io::duplex(1024);
        let server_ws = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client_ws = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::model::ShellSpec {
            program: "/bin/sh".into(),
            args: Vec::new(),
            cwd: dir.path().to_path_buf(),
            env: [("PATH".to_string(), "/usr/bin:/bin".into())].into(),
        };
        let shell = crate::core::Shell::Process(spec)
            .attached(&ShellOptions::default())
            .unwrap();
        tokio::spawn(serve(server_ws, shell));
        let mut remote = attach(client_ws, "test".into()).await.unwrap();
        assert!(!remote.tty);
        assert_eq!(remote.place, dir.path().display().to_string());
        // More than a frame's worth of output, to see it cross in pieces.
        remote
            .input
            .write_all(b"head -c 40000 /dev/zero | tr '\\0' x; echo; echo oops >&2; exit 3\n")
            .await
            .unwrap();
        remote.input.shutdown().await.unwrap();
        let mut out = String::new();
        remote.output.read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        remote
            .errors
            .as_mut()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert!(
            out.len() == 40001 && out.trim_end().bytes().all(|b| b == b'x'),
            "{} bytes came: {:?}…",
            out.len(),
            &out[..out.len().min(80)]
        );
        assert_eq!(err, "oops\n");
        assert_eq!(remote.exit.await, ShellExit::Code(3));
    }

    #[test]
    fn the_query_carries_only_a_clean_term() {
        let q = query(&ShellOptions {
            tty: true,
            term: Some("xterm-256color&evil=1".into()),
            size: Some((100, 30)),
        });
        assert_eq!(q, "tty=true&term=xterm-256colorevil1&cols=100&rows=30");
    }
}
