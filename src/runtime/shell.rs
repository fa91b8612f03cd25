//! An operator's shell in a sandbox, as a runtime hands it over: either a program to run on
//! this machine (the local runtime's sandbox is a folder here) or a process already started in
//! the sandbox and attached over the network (Kubernetes' `pods/exec`), whose bytes the front
//! end carries to and from the operator's terminal (`crate::console`).

use std::future::Future;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::model::ShellSpec;

/// What the operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellOptions {
    /// Give the shell a terminal (the operator's is one); otherwise its input is a stream that
    /// ends (a script piped in) and its output and errors stay apart.
    pub tty: bool,
    /// The operator's `TERM`, for the shell's own.
    pub term: Option<String>,
    /// The terminal's size at the start (columns, rows), when it has one.
    pub size: Option<(u16, u16)>,
}

/// A shell ready to be given the operator's terminal.
pub enum Shell {
    /// A program to run here, on the terminal itself.
    Process(ShellSpec),
    /// A process running in the sandbox, reached through its streams.
    Attached(AttachedShell),
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shell::Process(spec) => f.debug_tuple("Process").field(spec).finish(),
            Shell::Attached(a) => f
                .debug_struct("Attached")
                .field("place", &a.place)
                .field("tty", &a.tty)
                .finish_non_exhaustive(),
        }
    }
}

impl Shell {
    /// The shell attached through its streams, for an operator elsewhere: a program to run
    /// here is started on a terminal of its own (or pipes, without `options.tty`).
    pub fn attached(self, options: &ShellOptions) -> Result<AttachedShell, super::RuntimeError> {
        match self {
            Shell::Process(spec) => super::pty::attach(spec, options),
            Shell::Attached(a) => Ok(a),
        }
    }

    /// Where the shell runs, for the line shown before it starts.
    pub fn place(&self) -> String {
        match self {
            Shell::Process(spec) => spec.cwd.display().to_string(),
            Shell::Attached(a) => a.place.clone(),
        }
    }
}

pub type ShellInput = Pin<Box<dyn AsyncWrite + Send>>;
pub type ShellOutput = Pin<Box<dyn AsyncRead + Send>>;

/// A process in the sandbox, attached. Dropping it ends the connection (and with it the
/// process, as `kubectl exec` does when it goes).
pub struct AttachedShell {
    /// What it runs in, for the operator: `pod NS/NAME, container C`.
    pub place: String,
    /// Whether it has a terminal (then its errors come on `output` too).
    pub tty: bool,
    /// Its standard input; shut it down to say the input has ended.
    pub input: ShellInput,
    pub output: ShellOutput,
    /// Its standard error, apart, when it has no terminal.
    pub errors: Option<ShellOutput>,
    /// The terminal's new size (columns, rows), when it has a terminal.
    pub resize: Option<tokio::sync::mpsc::Sender<(u16, u16)>>,
    /// How it ended; resolves when the process has.
    pub exit: Pin<Box<dyn Future<Output = ShellExit> + Send>>,
}

/// How an attached shell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellExit {
    /// The shell exited with this code.
    Code(i32),
    /// It could not start, or it was lost before it ended (the reason, for the operator).
    Failed(String),
}

impl std::fmt::Display for ShellExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShellExit::Code(code) => write!(f, "exit status: {code}"),
            ShellExit::Failed(why) => f.write_str(why),
        }
    }
}
