//! A shell in a sandbox's pod through `pods/exec`, as `kubectl exec -it` opens one: a WebSocket
//! to the API server (kube's `ws`; `v5.channel.k8s.io`, else v4), the process's standard
//! streams and its terminal's size carried on it, and its end read from the status channel.

use super::{classify, names};
use crate::runtime::{AttachedShell, RuntimeError, ShellExit, ShellOptions};
use futures::SinkExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, TerminalSize};

/// What runs in the container: the operator's `TERM`, the terminal's size at the start (`$4`
/// columns, `$5` rows: set here, so the shell starts with it whatever order the resize message
/// and the first keys take on the connection), the harness's working folder, then bash when
/// the image has it, else sh: interactive with a terminal (`$3` is `-i`), reading a script from
/// its input without one. Positional parameters, so nothing is quoted into the script.
const SCRIPT: &str = "[ -n \"$1\" ] && export TERM=\"$1\"; \
                      [ -n \"$4\" ] && stty cols \"$4\" rows \"$5\" 2>/dev/null; \
                      cd \"$2\" 2>/dev/null; \
                      if command -v bash >/dev/null 2>&1; then exec bash $3; fi; exec sh $3";

/// The command `pods/exec` is asked to run (also what an audit log shows).
pub fn command(options: &ShellOptions) -> Vec<String> {
    let (cols, rows) = match options.size.filter(|_| options.tty) {
        Some((cols, rows)) => (cols.to_string(), rows.to_string()),
        None => (String::new(), String::new()),
    };
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        SCRIPT.to_string(),
        "agentdeck-shell".to_string(),
        options.term.clone().unwrap_or_default(),
        names::WORKDIR.to_string(),
        if options.tty { "-i" } else { "-s" }.to_string(),
        cols,
        rows,
    ]
}

/// Opens the shell in the pod `name` of `ns`, once it is running.
pub async fn open(
    pods: Api<Pod>,
    ns: &str,
    name: &str,
    options: &ShellOptions,
) -> Result<AttachedShell, RuntimeError> {
    let place = format!("pod {ns}/{name}, container {}", names::CONTAINER);
    let pod = pods
        .get_opt(name)
        .await
        .map_err(|e| classify("reading the pod", e))?
        .ok_or_else(|| {
            RuntimeError::Failed(format!(
                "sandbox {ns}/{name} has no pod now (suspended, or being made again): resume \
                 it, or wait until it runs"
            ))
        })?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".to_string());
    if phase != "Running" {
        return Err(RuntimeError::Failed(format!(
            "pod {ns}/{name} is {phase}: a shell needs it running"
        )));
    }
    let params = AttachParams {
        container: Some(names::CONTAINER.to_string()),
        stdin: true,
        stdout: true,
        stderr: !options.tty,
        tty: options.tty,
        // Room for output not read yet (a terminal busy redrawing, a script's burst): kube's
        // default of 1 KiB holds its connection loop, and with it the exit status, up.
        max_stdout_buf_size: Some(OUTPUT_BUFFER),
        max_stderr_buf_size: Some(OUTPUT_BUFFER),
        ..AttachParams::default()
    };
    let mut process = pods
        .exec(name, command(options), &params)
        .await
        .map_err(|e| classify("opening a shell (pods/exec)", e))?;
    let (Some(input), Some(output)) = (process.stdin(), process.stdout()) else {
        return Err(RuntimeError::Failed(
            "the exec connection has no standard streams".to_string(),
        ));
    };
    let errors = process
        .stderr()
        .map(|e| Box::pin(e) as crate::runtime::ShellOutput);
    let resize = process.terminal_size().map(|mut sizes| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u16, u16)>(4);
        if let Some((width, height)) = options.size {
            let _ = tx.try_send((width, height));
        }
        tokio::spawn(async move {
            while let Some((width, height)) = rx.recv().await {
                if sizes.send(TerminalSize { width, height }).await.is_err() {
                    return;
                }
            }
        });
        tx
    });
    let status = process.take_status();
    let exit = async move {
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        match status {
            Some(status) => exit_of(&status),
            None => match process.join().await {
                Err(e) => ShellExit::Failed(format!("the connection to the shell broke: {e}")),
                Ok(()) => ShellExit::Failed(
                    "the connection to the shell closed before it ended".to_string(),
                ),
            },
        }
    };
    Ok(AttachedShell {
        place,
        tty: options.tty,
        input: Box::pin(input),
        output: Box::pin(output),
        errors,
        resize,
        exit: Box::pin(exit),
    })
}

/// Output kept for the reader of a shell (per stream).
const OUTPUT_BUFFER: usize = 256 * 1024;

/// The end of an exec'd process from the status the server sends on channel 3: `Success`, or a
/// `NonZeroExitCode` failure with the code as a cause, or another failure (it did not start).
pub fn exit_of(status: &Status) -> ShellExit {
    if status.status.as_deref() == Some("Success") {
        return ShellExit::Code(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.reason.as_deref() == Some("ExitCode"))
            .find_map(|c| c.message.as_deref()?.parse().ok())
    {
        return ShellExit::Code(code);
    }
    ShellExit::Failed(format!(
        "the shell could not run: {}",
        status
            .message
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("the cluster gave no reason")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Status {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_status_channel_says_how_the_shell_ended() {
        assert_eq!(
            exit_of(&status(serde_json::json!({"status": "Success"}))),
            ShellExit::Code(0)
        );
        let failed = status(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: exit status 3",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }));
        assert_eq!(exit_of(&failed), ShellExit::Code(3));
        let not_started = status(serde_json::json!({
            "status": "Failure", "reason": "InternalError",
            "message": "exec: \"/bin/sh\": stat /bin/sh: no such file or directory"
        }));
        assert_eq!(
            exit_of(&not_started),
            ShellExit::Failed(
                "the shell could not run: exec: \"/bin/sh\": stat /bin/sh: no such file or \
                 directory"
                    .to_string()
            )
        );
    }

    #[test]
    fn the_command_takes_the_term_as_a_parameter_not_as_script() {
        let cmd = command(&ShellOptions {
            tty: true,
            term: Some("xterm; rm -rf /".to_string()),
            size: None,
        });
        assert_eq!(cmd[2], SCRIPT);
        assert_eq!(cmd[4], "xterm; rm -rf /");
        assert_eq!(cmd[5], names::WORKDIR);
        assert_eq!(cmd[6], "-i", "interactive with a terminal");
        assert_eq!(cmd[7..], ["", ""], "no size known: stty is not run");
        let sized = command(&ShellOptions {
            tty: true,
            term: None,
            size: Some((100, 30)),
        });
        assert_eq!(sized[7..], ["100", "30"]);
        let script = command(&ShellOptions::default());
        assert_eq!(script[6], "-s", "a script from its input without one");
    }
}
