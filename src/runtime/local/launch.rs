//! What a sandbox runs and with which environment: the agent's command with its placeholders
//! filled in, the program found on the sandbox's PATH, and an environment built from nothing.

use crate::runtime::RuntimeError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const HOST: &str = "127.0.0.1";

/// Where a program is looked for when the sandbox has no PATH (as execvp does).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What is needed to start (and later restart) a sandbox's agent, kept in `launch.json`
/// (mode 0600: `env` may hold secrets) so that a later agentdeck can restart or resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub agent_id: String,
    /// The agent's command as configured, placeholders not yet filled in.
    pub command: Vec<String>,
    /// The sandbox's environment as the core resolved it (`SandboxSpec.env`).
    pub env: BTreeMap<String, String>,
}

/// A command ready to run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program, found on PATH (or made absolute against the working folder).
    pub program: PathBuf,
    /// The command with its placeholders filled in; `argv[0]` as configured.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, OsString>,
}

/// The folders a sandbox's agent gets as its home and XDG dirs.
pub struct Home {
    pub home: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub state: PathBuf,
    pub cache: PathBuf,
}

impl Home {
    pub fn in_workdir(workdir: &Path) -> Home {
        let home = workdir.join("home");
        Home {
            config: home.join(".config"),
            data: home.join(".local").join("share"),
            state: home.join(".local").join("state"),
            cache: home.join(".cache"),
            home,
        }
    }
    pub fn all(&self) -> [&Path; 5] {
        [
            &self.home,
            &self.config,
            &self.data,
            &self.state,
            &self.cache,
        ]
    }
}

/// The reason a command cannot run, as an operator should read it.
pub fn empty_command(agent_id: &str) -> RuntimeError {
    RuntimeError::Failed(format!(
        "agent {agent_id:?} has no command to run locally; set command = [...] under \
         [agents.{agent_id}] in the config file (e.g. [\"opencode\", \"serve\", \"--hostname\", \
         \"{{host}}\", \"--port\", \"{{port}}\"])"
    ))
}

/// `{port}`, `{host}` and `{workdir}` filled in, in every argument.
pub fn substitute(command: &[String], port: u16, workdir: &Path) -> Vec<String> {
    let workdir = workdir.to_string_lossy();
    command
        .iter()
        .map(|arg| {
            arg.replace("{port}", &port.to_string())
                .replace("{host}", HOST)
                .replace("{workdir}", &workdir)
        })
        .collect()
}

/// The sandbox's environment, built from nothing: the allowlisted variables of agentdeck's
/// own environment, then `spec_env`, then what agentdeck sets itself (these win).
pub fn environment(
    allowlist: &[String],
    own: impl Fn(&str) -> Option<OsString>,
    spec_env: &BTreeMap<String, String>,
    workdir: &Path,
    session_id: &str,
) -> BTreeMap<String, OsString> {
    let mut env = BTreeMap::new();
    for name in allowlist {
        if let Some(value) = own(name) {
            env.insert(name.clone(), value);
        }
    }
    for (name, value) in spec_env {
        env.insert(name.clone(), OsString::from(value));
    }
    let home = Home::in_workdir(workdir);
    for (name, path) in [
        ("HOME", &home.home),
        ("XDG_CONFIG_HOME", &home.config),
        ("XDG_DATA_HOME", &home.data),
        ("XDG_STATE_HOME", &home.state),
        ("XDG_CACHE_HOME", &home.cache),
    ] {
        env.insert(name.to_string(), path.clone().into_os_string());
    }
    env.insert("AGENTDECK_SESSION_ID".to_string(), session_id.into());
    for (name, value) in crate::runtime::OPENCODE_SWITCHES {
        env.insert(name.to_string(), OsString::from(value));
    }
    env
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the program the way the sandbox would: a name on the sandbox's PATH, or a path
/// (relative ones against the working folder, where the agent runs).
pub fn resolve_program(
    program: &str,
    path_var: Option<&OsString>,
    workdir: &Path,
    agent_id: &str,
) -> Result<PathBuf, RuntimeError> {
    if program.contains('/') {
        let path = workdir.join(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(RuntimeError::Failed(format!(
                "{program} not found or not executable (looked for {}); fix command = [...] \
                 under [agents.{agent_id}]",
                path.display()
            )))
        };
    }
    let search = path_var
        .cloned()
        .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    for dir in std::env::split_paths(&search) {
        if dir.as_os_str().is_empty() || !dir.is_absolute() {
            continue;
        }
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let mut reason = format!("{program} not found on PATH");
    if path_var.is_none() {
        reason.push_str(&format!(
            " (PATH is not in [local] env_allowlist, so only {DEFAULT_PATH} was searched)"
        ));
    }
    if program == "opencode" {
        reason.push_str(
            "; install it with `npm i -g opencode-ai` (or run `eval \"$(scripts/offline-stack.sh up)\"`)",
        );
    } else {
        reason.push_str(&format!(
            "; install it, or give its full path in command = [...] under [agents.{agent_id}]"
        ));
    }
    Err(RuntimeError::Failed(reason))
}

impl LaunchSpec {
    /// The command ready to run on `port` in `workdir`.
    pub fn prepare(
        &self,
        allowlist: &[String],
        port: u16,
        workdir: &Path,
        session_id: &str,
    ) -> Result<Launch, RuntimeError> {
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Err(empty_command(&self.agent_id));
        }
        let argv = substitute(&self.command, port, workdir);
        let env = environment(
            allowlist,
            |name| std::env::var_os(name),
            &self.env,
            workdir,
            session_id,
        );
        let program = resolve_program(&argv[0], env.get("PATH"), workdir, &self.agent_id)?;
        Ok(Launch { program, argv, env })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_in_everywhere() {
        let command: Vec<String> = ["opencode", "--hostname={host}", "{port}", "{workdir}/x"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            substitute(&command, 4242, Path::new("/w/s")),
            ["opencode", "--hostname=127.0.0.1", "4242", "/w/s/x"]
        );
    }

    #[test]
    fn environment_starts_empty_and_ours_wins() {
        let own = |name: &str| match name {
            "PATH" => Some(OsString::from("/bin")),
            "SECRET" => Some(OsString::from("leak")),
            _ => None,
        };
        let spec: BTreeMap<String, String> = [("VISIBLE", "yes"), ("HOME", "/evil")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let env = environment(
            &["PATH".to_string(), "LANG".to_string()],
            own,
            &spec,
            Path::new("/w/s"),
            "sid",
        );
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["VISIBLE"], "yes");
        assert_eq!(env["HOME"], "/w/s/home");
        assert_eq!(env["XDG_CONFIG_HOME"], "/w/s/home/.config");
        assert_eq!(env["AGENTDECK_SESSION_ID"], "sid");
        assert_eq!(env["OPENCODE_DISABLE_AUTOUPDATE"], "1");
        assert!(!env.contains_key("SECRET"));
        assert!(!env.contains_key("LANG"));
    }

    #[test]
    fn a_missing_program_says_how_to_get_it() {
        let path = OsString::from("/nonexistent-dir");
        let err = resolve_program("opencode", Some(&path), Path::new("/tmp"), "opencode")
            .unwrap_err()
            .to_string();
        assert!(err.contains("opencode not found on PATH"), "{err}");
        assert!(err.contains("npm i -g opencode-ai"), "{err}");
        let err = resolve_program("sh", None, Path::new("/tmp"), "a");
        assert!(err.is_ok(), "sh is found on the default PATH: {err:?}");
    }
}
