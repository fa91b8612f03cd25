//! A shell program started here and attached through its streams, for an operator who is not on
//! this machine's terminal (`serve` carries it over a WebSocket): with a terminal, the program
//! gets a pseudo-terminal of its own (a session leader with it as its controlling terminal, so
//! job control and Ctrl-C work, and its size follows the operator's window); without one, its
//! input, output and errors are pipes. Dropping the attached shell ends the program: the
//! terminal hangs up (SIGHUP to its foreground group) and the program itself is killed.

use super::RuntimeError;
use super::shell::{AttachedShell, ShellExit, ShellOptions};
use crate::model::ShellSpec;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Starts `spec` attached: on a pseudo-terminal when `options.tty`, else on pipes.
pub fn attach(spec: ShellSpec, options: &ShellOptions) -> Result<AttachedShell, RuntimeError> {
    if options.tty {
        on_a_terminal(spec, options)
    } else {
        on_pipes(spec)
    }
}

fn command(spec: &ShellSpec) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(&spec.env)
        .kill_on_drop(true);
    command
}

fn cannot_start(spec: &ShellSpec, e: io::Error) -> RuntimeError {
    RuntimeError::Failed(format!("cannot start {}: {e}", spec.program.display()))
}

/// How a child ended, as a shell's exit.
async fn exit_of(mut child: tokio::process::Child) -> ShellExit {
    use std::os::unix::process::ExitStatusExt;
    match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ShellExit::Code(code),
            (None, Some(signal)) => ShellExit::Code(128 + signal),
            (None, None) => ShellExit::Failed(status.to_string()),
        },
        Err(e) => ShellExit::Failed(format!("lost the shell: {e}")),
    }
}

fn on_pipes(spec: ShellSpec) -> Result<AttachedShell, RuntimeError> {
    let mut child = command(&spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| cannot_start(&spec, e))?;
    let (Some(input), Some(output), Some(errors)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RuntimeError::Failed(
            "the shell started without its streams".into(),
        ));
    };
    Ok(AttachedShell {
        place: spec.cwd.display().to_string(),
        tty: false,
        input: Box::pin(Closing(Some(input))),
        output: Box::pin(output),
        errors: Some(Box::pin(errors)),
        resize: None,
        exit: Box::pin(exit_of(child)),
    })
}

/// A pipe to the shell's input whose shutdown closes it: the shell reads the end of its input
/// (a child's own stdin only closes when dropped).
struct Closing(Option<tokio::process::ChildStdin>);

impl AsyncWrite for Closing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_write(cx, bytes),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0 = None;
        Poll::Ready(Ok(()))
    }
}

fn winsize((cols, rows): (u16, u16)) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn on_a_terminal(spec: ShellSpec, options: &ShellOptions) -> Result<AttachedShell, RuntimeError> {
    let failed = |what: &str, e: io::Error| RuntimeError::Failed(format!("{what}: {e}"));
    let (master, slave) = open_pty(options.size.unwrap_or((80, 24)))
        .map_err(|e| failed("cannot open a terminal for the shell", e))?;
    let stdio = |fd: &OwnedFd| {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|e| failed("cannot hand the terminal to the shell", e))
    };
    let mut command = command(&spec);
    command
        .stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(stdio(&slave)?);
    // SAFETY: setsid(2) and ioctl(2) are async-signal-safe and touch no memory of the parent:
    // the child becomes a session leader and takes its standard input (the terminal) as its
    // controlling terminal, as a login shell's is.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| cannot_start(&spec, e))?;
    // The terminal's other end is the child's alone now: when it exits, reads here end.
    drop(slave);
    let master =
        Arc::new(Master::new(master).map_err(|e| failed("cannot read the shell's terminal", e))?);
    let (resize, mut sizes) = tokio::sync::mpsc::channel::<(u16, u16)>(8);
    let resizing = master.clone();
    tokio::spawn(async move {
        while let Some(size) = sizes.recv().await {
            let ws = winsize(size);
            // SAFETY: TIOCSWINSZ reads a winsize the call borrows; the fd is open while
            // `resizing` lives.
            unsafe { libc::ioctl(resizing.raw(), libc::TIOCSWINSZ as _, &ws) };
        }
    });
    Ok(AttachedShell {
        place: spec.cwd.display().to_string(),
        tty: true,
        input: Box::pin(Side(master.clone())),
        output: Box::pin(Side(master)),
        errors: None,
        resize: Some(resize),
        exit: Box::pin(exit_of(child)),
    })
}

/// A new pseudo-terminal of `size`: (the side kept here, the side the shell gets).
fn open_pty(size: (u16, u16)) -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave): (RawFd, RawFd) = (-1, -1);
    let ws = winsize(size);
    // SAFETY: openpty writes the two descriptors it opens into the integers it is given and
    // reads the winsize; no name buffer or termios is passed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // The side kept here is read without blocking, and not inherited by other children.
    // SAFETY: fcntl on a descriptor owned here.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((master, slave))
}

/// The side of a pseudo-terminal kept here, read and written without blocking.
struct Master(AsyncFd<OwnedFd>);

impl Master {
    fn new(fd: OwnedFd) -> io::Result<Master> {
        // SAFETY: the descriptor is owned by the `OwnedFd` moved in, which stays open and the
        // same until the `AsyncFd` is dropped.
        unsafe { AsyncFd::register(fd) }
            .map(Master)
            .map_err(|e| e.into_parts().1)
    }

    fn raw(&self) -> RawFd {
        self.0.get_ref().as_raw_fd()
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // SAFETY: reads into the unfilled part of `buf`, at most its length.
            let n = unsafe { libc::read(self.raw(), unfilled.as_mut_ptr().cast(), unfilled.len()) };
            if n >= 0 {
                buf.advance(n as usize);
                return Poll::Ready(Ok(()));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                Some(libc::EINTR) => {}
                // The shell and everything it started have closed the terminal: the end.
                Some(libc::EIO) => return Poll::Ready(Ok(())),
                _ => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            // SAFETY: writes from `bytes`, at most its length.
            let n = unsafe { libc::write(self.raw(), bytes.as_ptr().cast(), bytes.len()) };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => guard.clear_ready(),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One use of the terminal (its input or its output), sharing the one descriptor.
struct Side(Arc<Master>);

impl AsyncRead for Side {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read(cx, buf)
    }
}

impl AsyncWrite for Side {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The end of input on a terminal is its EOF character (Ctrl-D), as a typist would send.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write(cx, &[4]).map_ok(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sh(dir: &std::path::Path) -> ShellSpec {
        ShellSpec {
            program: "/bin/sh".into(),
            args: Vec::new(),
            cwd: dir.to_path_buf(),
            env: [
                ("PATH".to_string(), "/usr/bin:/bin".into()),
                ("GREETING".to_string(), "hello".into()),
            ]
            .into(),
        }
    }

    async fn read_until(out: &mut (impl AsyncRead + Unpin), want: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while !String::from_utf8_lossy(&seen).contains(want) {
                let n = out.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let text = String::from_utf8_lossy(&seen).to_string();
        assert!(
            found.is_ok() && text.contains(want),
            "no {want:?} in {text:?}"
        );
        text
    }

    /// What the shell writes until a line ends with one of `wanted` (its answer, maybe after a
    /// prompt; not the echo of what was typed), or 30 s.
    async fn read_until_any(out: &mut (impl AsyncRead + Unpin), wanted: &[&str]) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        let found = |seen: &[u8]| {
            let text = String::from_utf8_lossy(seen);
            text.lines()
                .any(|l| wanted.iter().any(|w| l.trim_end().ends_with(w)))
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while !found(&seen) {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        String::from_utf8_lossy(&seen).to_string()
    }

    #[tokio::test]
    async fn a_shell_on_a_terminal_of_its_own_follows_the_size_and_exits() {
        let dir = tempfile::tempdir().unwrap();
        let mut shell = attach(
            sh(dir.path()),
            &ShellOptions {
                tty: true,
                term: None,
                size: Some((91, 17)),
            },
        )
        .unwrap();
        assert!(shell.tty && shell.errors.is_none());
        shell
            .input
            .write_all(b"echo \"$GREETING in $PWD\"; stty size\n")
            .await
            .unwrap();
        let text = read_until(&mut shell.output, "17 91").await;
        assert!(text.contains("hello in "), "{text}");
        shell
            .resize
            .as_ref()
            .unwrap()
            .send((120, 40))
            .await
            .unwrap();
        // The new size is set apart from the keys: asked again until it is seen, each time
        // once the last answer came (a shell with job control may drop lines typed ahead
        // while a command has the terminal).
        let mut seen = String::new();
        for _ in 0..20 {
            shell.input.write_all(b"stty size\n").await.unwrap();
            let answered = read_until_any(&mut shell.output, &["40 120", "17 91"]).await;
            seen.push_str(&answered);
            if answered.contains("40 120") {
                break;
            }
        }
        assert!(seen.contains("40 120"), "{seen}");
        shell.input.write_all(b"exit 7\n").await.unwrap();
        assert_eq!(shell.exit.await, ShellExit::Code(7));
    }

    #[tokio::test]
    async fn a_script_on_pipes_keeps_errors_apart_and_ends_with_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut shell = attach(sh(dir.path()), &ShellOptions::default()).unwrap();
        shell
            .input
            .write_all(b"echo \"$GREETING\"; echo oops >&2\n")
            .await
            .unwrap();
        shell.input.shutdown().await.unwrap();
        let mut out = String::new();
        shell.output.read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        shell
            .errors
            .as_mut()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("hello\n", "oops\n"));
        assert_eq!(shell.exit.await, ShellExit::Code(0));
    }

    #[tokio::test]
    async fn dropping_the_shell_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        let mut shell = attach(
            sh(dir.path()),
            &ShellOptions {
                tty: true,
                ..ShellOptions::default()
            },
        )
        .unwrap();
        shell
            .input
            .write_all(format!("echo $$ > {}; echo wr''itten\n", marker.display()).as_bytes())
            .await
            .unwrap();
        read_until(&mut shell.output, "written\r\n").await;
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(shell);
        // Gone, or a zombie waiting to be reaped (`Z` after the name in its stat).
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        };
        let gone = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while running() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the shell {pid} lives on");
    }
}
