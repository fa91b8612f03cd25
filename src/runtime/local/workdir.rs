//! A sandbox's working folder, `<root>/<session-id>/`: its layout, the files the core hands
//! over, and choosing a loopback port.

use super::launch::Home;
use crate::runtime::RuntimeError;
use std::path::{Component, Path, PathBuf};

/// The agent's stdout and stderr.
pub const LOG_FILE: &str = "sandbox.log";
/// What agentdeck knows about the sandbox (pid, start time, port, state).
pub const RECORD_FILE: &str = "sandbox.json";
/// How to start the agent again (command and env; mode 0600).
pub const LAUNCH_FILE: &str = "launch.json";

/// Names the core's files may not take: agentdeck's own.
const OWN_FILES: &[&str] = &[LOG_FILE, RECORD_FILE, LAUNCH_FILE];

fn failed(what: &str, path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Failed(format!("cannot {what} {}: {e}", path.display()))
}

/// Creates the working folder, its home and XDG dirs.
pub fn create(workdir: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(workdir).map_err(|e| failed("create", workdir, e))?;
    for dir in Home::in_workdir(workdir).all() {
        std::fs::create_dir_all(dir).map_err(|e| failed("create", dir, e))?;
    }
    Ok(())
}

/// What git leaves out of the folder's history: agentdeck's own files, the harness's config
/// and its home (data, caches).
const UNTRACKED: &str =
    "/sandbox.log\n/sandbox.json\n/launch.json\n/opencode.json\n/home/\n/.agentdeck/\n";

/// Makes the folder a git repository with one commit of what it starts with, so that the
/// harness can say what its agent changed (opencode snapshots only a git project). Without git,
/// or if git fails, the sandbox works the same and no changes are reported.
pub fn track_changes(workdir: &Path) {
    if workdir.join(".git").exists() {
        return;
    }
    if let Err(e) = std::fs::write(workdir.join(".gitignore"), UNTRACKED) {
        tracing::warn!(dir = %workdir.display(), error = %e, "cannot write .gitignore; no changes will be reported");
        return;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args([
                "-c",
                "user.name=agentdeck",
                "-c",
                "user.email=agentdeck@localhost",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(workdir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
    };
    for args in [
        &["init", "-q"][..],
        &["add", "-A"][..],
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "the sandbox as agentdeck made it",
        ][..],
    ] {
        match git(args) {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                tracing::info!(dir = %workdir.display(), step = args[0], said = %String::from_utf8_lossy(&out.stderr).trim(), "git failed; no changes will be reported");
                return;
            }
            Err(e) => {
                tracing::info!(dir = %workdir.display(), error = %e, "git is not installed; no changes will be reported");
                return;
            }
        }
    }
}

/// The relative path's parts, or why it may not be written: it must stay inside the folder.
pub fn check_relative(path: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(p) => parts.push(p.to_string()),
                None => return Err(format!("file path {path:?} is not valid UTF-8")),
            },
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "file path {path:?} leaves the sandbox's folder ('..')"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "file path {path:?} is absolute; give it relative to the sandbox's folder"
                ));
            }
        }
    }
    match parts.as_slice() {
        [] => Err(format!("file path {path:?} names no file")),
        [only] if OWN_FILES.contains(&only.as_str()) => Err(format!(
            "file path {path:?} is agentdeck's own file in the sandbox's folder"
        )),
        _ => Ok(parts),
    }
}

/// Writes the core's files into the working folder. Folders on the way are created, and must be
/// real folders (not symlinks the agent may have left); each file replaces what was there
/// (a symlink is replaced, not followed).
pub fn write_files(
    workdir: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> Result<(), RuntimeError> {
    for (path, content) in files {
        let parts = check_relative(path).map_err(RuntimeError::Failed)?;
        let mut dir = workdir.to_path_buf();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(RuntimeError::Failed(format!(
                        "cannot write {path:?}: {} is not a folder",
                        dir.display()
                    )));
                }
                Err(_) => std::fs::create_dir(&dir).map_err(|e| failed("create", &dir, e))?,
            }
        }
        let name = &parts[parts.len() - 1];
        let target = dir.join(name);
        write_atomic(&target, content.as_bytes(), false)
            .map_err(|e| failed("write", &target, e))?;
    }
    Ok(())
}

/// Writes a file whole or not at all (a temporary file renamed over it), readable by the owner
/// only when `private`.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{file_name}.tmp"));
    // A leftover (or planted) temporary file goes first; O_EXCL then never follows a symlink.
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// A loopback port nobody listens on now: `preferred` when it is free, else one the kernel
/// picks (never one of `taken`).
pub fn free_port(preferred: Option<u16>, taken: &[u16]) -> Result<u16, RuntimeError> {
    if let Some(port) = preferred
        && std::net::TcpListener::bind((super::launch::HOST, port)).is_ok()
    {
        return Ok(port);
    }
    for _ in 0..20 {
        let port = std::net::TcpListener::bind((super::launch::HOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| RuntimeError::Transient(format!("cannot find a free port: {e}")))?;
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(RuntimeError::Transient(
        "cannot find a free loopback port".to_string(),
    ))
}

/// Where a session's sandbox lives under `root`.
pub fn path_for(root: &Path, session_id: &uuid::Uuid) -> PathBuf {
    root.join(session_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_folder_are_refused() {
        assert_eq!(
            check_relative("a/./b.json"),
            Ok(vec!["a".to_string(), "b.json".to_string()])
        );
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("../x").is_err());
        assert!(check_relative("a/../../x").is_err());
        assert!(check_relative("").is_err());
        assert!(check_relative(".").is_err());
        assert!(check_relative("sandbox.json").is_err());
        assert!(check_relative("sub/sandbox.json").is_ok());
    }

    #[test]
    fn files_are_written_and_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outside = tempfile::tempdir().expect("temp dir");
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join("config.json")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).expect("symlink");
        let files = [("config.json", "new"), ("deep/er/x.txt", "x")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        write_files(dir.path(), &files).expect("written");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.json")).expect("read"),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("deep/er/x.txt")).expect("read"),
            "x"
        );
        let through_link = [("linked/x".to_string(), "x".to_string())].into();
        assert!(write_files(dir.path(), &through_link).is_err());
    }
}
