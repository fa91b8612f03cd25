//! The operator's terminal given to a shell in a sandbox, and given back as it was: the CLI's
//! `sessions shell` and the cockpit's `!` both run their shell here.
//!
//! A local sandbox's shell is a program run on the terminal itself. A shell attached over the
//! network (Kubernetes' `pods/exec`) has its bytes carried: the terminal in raw mode, keys read
//! from standard input and sent, output written as it comes, the window's size sent on every
//! `SIGWINCH`. `~.` at the start of a line leaves it (as in ssh), for when the connection hangs.
//! Without a terminal (a script piped in), input is sent until it ends and the shell's output
//! and errors stay apart.

use crate::core::{AttachedShell, Shell, ShellExit, ShellOptions};
use anyhow::Context;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How a shell ended, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exited(i32),
    /// It could not start, or its connection was lost.
    Failed(String),
    /// The operator left it with `~.`.
    Left,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exit status: {code}"),
            Ended::Failed(why) => f.write_str(why),
            Ended::Left => f.write_str("left with ~."),
        }
    }
}

/// What to ask the runtime for, from this process's terminal: a terminal for the shell when
/// standard input and output are one, with its `TERM` and size.
pub fn options() -> ShellOptions {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    ShellOptions {
        tty,
        term: std::env::var("TERM").ok().filter(|t| !t.is_empty()),
        size: if tty {
            crossterm::terminal::size().ok()
        } else {
            None
        },
    }
}

/// What the operator reads before the shell starts (a line; `\r` for a raw terminal's sake).
pub fn banner(shell: &Shell) -> String {
    match shell {
        Shell::Process(_) => format!(
            "agentdeck: a shell in {} (exit it to come back)\r",
            shell.place()
        ),
        Shell::Attached(a) if a.tty => format!(
            "agentdeck: a shell in {}\r\nagentdeck: exit it to come back (~. at the start of a \
             line leaves it, if it hangs)\r",
            a.place
        ),
        Shell::Attached(a) => format!("agentdeck: a shell in {}", a.place),
    }
}

/// Runs the shell on this process's terminal until it ends.
pub async fn run(shell: Shell) -> anyhow::Result<Ended> {
    match shell {
        Shell::Process(spec) => {
            let status = tokio::process::Command::new(&spec.program)
                .args(&spec.args)
                .current_dir(&spec.cwd)
                .env_clear()
                .envs(&spec.env)
                .status()
                .await
                .with_context(|| format!("cannot start {}", spec.program.display()))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(match (status.code(), status.signal()) {
                (Some(code), _) => Ended::Exited(code),
                (None, Some(signal)) => Ended::Exited(128 + signal),
                (None, None) => Ended::Failed(status.to_string()),
            })
        }
        Shell::Attached(attached) => carry(attached).await,
    }
}

/// The terminal in raw mode while it lives.
struct Raw;

impl Raw {
    fn enable() -> anyhow::Result<Raw> {
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(Raw)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Carries an attached shell's bytes until it ends or the operator leaves.
async fn carry(shell: AttachedShell) -> anyhow::Result<Ended> {
    let AttachedShell {
        tty,
        input,
        mut output,
        errors,
        resize,
        mut exit,
        ..
    } = shell;
    let _raw = if tty { Some(Raw::enable()?) } else { None };
    let (keys, typed) = Keys::start();
    let (left_tx, mut left) = tokio::sync::oneshot::channel::<()>();
    let sending = tokio::spawn(send_keys(typed, input, tty, left_tx));
    let mut winch = if tty {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .context("cannot follow the terminal's size")?,
        )
    } else {
        None
    };
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let (mut buf, mut ebuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut errors = errors;
    let mut output_open = true;
    let mut left_open = true;
    let ended = loop {
        tokio::select! {
            biased;
            n = output.read(&mut buf), if output_open => match n {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    out.write_all(&buf[..n]).await?;
                    out.flush().await?;
                }
            },
            n = async { errors.as_mut()?.read(&mut ebuf).await.ok() }, if errors.is_some() => match n {
                Some(n) if n > 0 => {
                    err.write_all(&ebuf[..n]).await?;
                    err.flush().await?;
                }
                _ => errors = None,
            },
            Some(()) = async { winch.as_mut()?.recv().await } => {
                if let (Some(resize), Ok(size)) = (&resize, crossterm::terminal::size()) {
                    let _ = resize.try_send(size);
                }
            }
            said = &mut left, if left_open => match said {
                Ok(()) => break Ended::Left,
                // The input ended without a ~.: the shell goes on until it exits.
                Err(_) => left_open = false,
            },
            end = &mut exit => break match end {
                ShellExit::Code(code) => Ended::Exited(code),
                ShellExit::Failed(why) => Ended::Failed(why),
            },
        }
    };
    // What the shell wrote just before it ended may still be on its way (not when leaving:
    // a hung connection is why one leaves).
    if ended != Ended::Left && output_open {
        let drain = async {
            while let Ok(n) = output.read(&mut buf).await {
                if n == 0 || out.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = out.flush().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
    sending.abort();
    keys.stop().await;
    Ok(ended)
}

/// Sends what the operator types; `~.` at the start of a line (with a terminal) says to leave.
async fn send_keys(
    mut keys: mpsc::Receiver<Vec<u8>>,
    mut input: crate::core::ShellInput,
    tty: bool,
    left: tokio::sync::oneshot::Sender<()>,
) {
    let mut escape = Escape::default();
    while let Some(bytes) = keys.recv().await {
        let (send, leave) = if tty {
            escape.feed(&bytes)
        } else {
            (bytes, false)
        };
        if !send.is_empty()
            && (input.write_all(&send).await.is_err() || input.flush().await.is_err())
        {
            return;
        }
        if leave {
            let _ = left.send(());
            return;
        }
    }
    // The input ended (a piped script): the shell is told, and ends when it has read it all.
    let _ = input.shutdown().await;
}

/// The ssh-style escape: `~.` at the start of a line leaves, `~~` sends one `~`, and a `~`
/// followed by anything else is sent as typed.
#[derive(Debug)]
struct Escape {
    line_start: bool,
    tilde: bool,
}

impl Default for Escape {
    fn default() -> Self {
        Escape {
            line_start: true,
            tilde: false,
        }
    }
}

impl Escape {
    /// What to send of `bytes`, and whether the operator asked to leave.
    fn feed(&mut self, bytes: &[u8]) -> (Vec<u8>, bool) {
        let mut send = Vec::with_capacity(bytes.len() + 1);
        for &b in bytes {
            if self.tilde {
                self.tilde = false;
                match b {
                    b'.' => return (send, true),
                    b'~' => {
                        send.push(b'~');
                        self.line_start = false;
                        continue;
                    }
                    _ => send.push(b'~'),
                }
            } else if self.line_start && b == b'~' {
                self.tilde = true;
                continue;
            }
            send.push(b);
            self.line_start = matches!(b, b'\r' | b'\n');
        }
        (send, false)
    }
}

/// Standard input, read on a thread of its own that stops when asked, so that no key typed
/// after the shell is read by it (the cockpit reads the terminal again then).
struct Keys {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Keys {
    /// The reader, and what it reads (until standard input ends).
    fn start() -> (Keys, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || read_keys(&tx, &flag));
        (Keys { stop, thread }, rx)
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn read_keys(tx: &mpsc::Sender<Vec<u8>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stdin_ready(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match read_stdin(&mut buf) {
            // The end of a piped input: dropping the sender says so.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether standard input has something to read (or has ended) within `wait`.
fn stdin_ready(wait: Duration) -> std::io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, its length given.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    match n {
        n if n < 0 => {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// One read of standard input, unbuffered (what is not asked for stays in the terminal).
fn read_stdin(buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut e = Escape::default();
        let mut sent = Vec::new();
        for chunk in chunks {
            let (send, leave) = e.feed(chunk);
            sent.extend(send);
            if leave {
                return (sent, true);
            }
        }
        (sent, false)
    }

    #[test]
    fn tilde_dot_at_the_start_of_a_line_leaves() {
        assert_eq!(feed_all(&[b"~."]), (vec![], true));
        assert_eq!(feed_all(&[b"ls\r~.rest"]), (b"ls\r".to_vec(), true));
        // split across reads
        assert_eq!(feed_all(&[b"ls\r", b"~", b"."]), (b"ls\r".to_vec(), true));
    }

    #[test]
    fn a_tilde_anywhere_else_is_typed() {
        assert_eq!(feed_all(&[b"cd ~.x\r"]), (b"cd ~.x\r".to_vec(), false));
        assert_eq!(feed_all(&[b"~/bin\r"]), (b"~/bin\r".to_vec(), false));
        // ~~ sends one, and the line has started: a . after it is typed
        assert_eq!(feed_all(&[b"~~."]), (b"~.".to_vec(), false));
        assert_eq!(feed_all(&[b"\n~", b"x"]), (b"\n~x".to_vec(), false));
    }

    #[test]
    fn an_exit_reads_as_the_shell_would_say_it() {
        assert_eq!(Ended::Exited(3).to_string(), "exit status: 3");
        assert_eq!(Ended::Left.to_string(), "left with ~.");
    }
}
