//! Layered configuration: the built-in `config/default.toml` < the user's file (XDG config dir,
//! or `AGENTDECK_CONFIG`) < `AGENTDECK_*` environment variables < flags.
//!
//! Every layer is checked on its own as it is read, so that a mistake is reported with the file,
//! line and column where it was made, and what was expected there.

mod build;
pub mod duration;
mod error;
mod layer;

pub use crate::model::{AgentSpec, HarnessKind, Resources};
pub use error::{ConfigError, Source, line_column};
pub use layer::{EndpointMode, IdleAction, RuntimeKind, SandboxApiVersion};

use build::build;
use layer::Layer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in defaults, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Where agentdeck keeps its files (XDG on Linux).
#[derive(Debug, Clone, Serialize)]
pub struct Dirs {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
}

impl Dirs {
    pub fn discover() -> Result<Dirs, ConfigError> {
        let dirs = directories::ProjectDirs::from("", "", "agentdeck").ok_or_else(|| {
            ConfigError::Value(
                "cannot find a home directory for agentdeck's files; set HOME".to_string(),
            )
        })?;
        Ok(Dirs {
            config_dir: dirs.config_dir().to_path_buf(),
            data_dir: dirs.data_dir().to_path_buf(),
            state_dir: dirs
                .state_dir()
                .unwrap_or_else(|| dirs.data_local_dir())
                .to_path_buf(),
            cache_dir: dirs.cache_dir().to_path_buf(),
        })
    }

    pub fn user_config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The embedded store's file, used when no database URL is configured.
    pub fn default_database_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("agentdeck.db").display())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    pub token: String,
    pub team: String,
    /// Who holds it (the audit trail says `api:NAME`); the team's name when absent.
    pub name: Option<String>,
    /// It may read and never act.
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub enabled: bool,
    pub concurrency: u32,
    pub lease: Duration,
    pub max_attempts: i32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long this process keeps its fleet roles and the sessions it follows without renewing
    /// them: a process that stops (killed, frozen, cut off) loses them within this.
    pub fleet_lease: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionsConfig {
    pub default_team: String,
    pub default_agent: Option<String>,
    pub phase_timeout: Duration,
    pub idle_action: IdleAction,
}

/// The LLM gateway (LiteLLM) and how sandboxes get to use it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Where agentdeck reaches the gateway (health, key management).
    pub url: Option<String>,
    /// Where sandboxes reach it (defaults to `url`; differs on Kubernetes).
    pub sandbox_url: Option<String>,
    /// The environment variable holding the gateway's master key (never enters a sandbox).
    pub master_key_env: String,
    /// Give each session its own virtual key (`/key/generate`), revoked when it ends.
    pub virtual_keys: bool,
    /// Without virtual keys: the environment variable holding the key sandboxes use.
    pub sandbox_key_env: Option<String>,
    /// A virtual key's budget (USD) and lifetime.
    pub key_budget: Option<f64>,
    pub key_duration: Duration,
}

/// The cockpit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TuiConfig {
    pub theme: Option<String>,
    pub read_only: bool,
    /// Kubernetes contexts where the cockpit is read-only: names, or prefixes ending in `*`.
    pub read_only_contexts: Vec<String>,
    pub mouse: bool,
    /// Show the selected session's preview beside the list (`p` toggles it).
    pub preview: bool,
    /// List ended sessions with the rest (else a filter naming a status shows them).
    pub show_ended: bool,
    /// Key overrides: (action id, keys, where it was written as `file:line:col`).
    pub keys: Vec<(String, Vec<String>, String)>,
}

impl TuiConfig {
    /// Whether the cockpit is read-only on the Kubernetes context `context` (`None`: not on
    /// Kubernetes, or no context known): `read_only`, or the context matches one of
    /// `read_only_contexts`.
    pub fn read_only_on(&self, context: Option<&str>) -> bool {
        self.read_only
            || context.is_some_and(|c| {
                self.read_only_contexts
                    .iter()
                    .any(|p| match p.strip_suffix('*') {
                        Some(prefix) => c.starts_with(prefix),
                        None => c == p,
                    })
            })
    }
}

/// `[notify]`: how a person hears that an agent waits for them, failed, or finished a turn
/// while they were not looking at it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// The terminal bell (tmux's `monitor-bell` and terminals alert on it).
    pub bell: bool,
    /// A desktop notification by escape sequence (OSC 9 and OSC 777; through tmux's
    /// passthrough).
    pub desktop: bool,
    /// A program to run for each (a pager, a chat), with the session, the event and its text
    /// in its environment.
    pub command: Vec<String>,
    pub waiting: bool,
    pub failed: bool,
    pub done: bool,
}

/// The local process runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// Where each session's working folder lives.
    pub root: PathBuf,
    /// Variables of agentdeck's own environment a sandbox inherits (besides `CONTAINER_ENV_*`).
    pub env_allowlist: Vec<String>,
    /// The agentdeck binary a warm sandbox runs as its bootstrap; this process's own when absent.
    pub program: Option<PathBuf>,
}

/// The Kubernetes runtime (agent-sandbox).
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// The kubeconfig context; in-cluster config or the current context when absent.
    pub context: Option<String>,
    pub namespace: String,
    /// Team → namespace; other teams use `namespace`.
    pub team_namespaces: BTreeMap<String, String>,
    pub api_version: SandboxApiVersion,
    pub endpoint: EndpointMode,
    /// The port the harness listens on inside the pod.
    pub harness_port: u16,
    pub service_account: Option<String>,
    /// How a warm sandbox gets the agentdeck binary its bootstrap runs as (see
    /// [`BootstrapBinary`]).
    pub bootstrap: BootstrapBinary,
}

/// Where a warm pool's pods find `agentdeck` (their first process, `agentdeck bootstrap`).
#[derive(Debug, Clone, PartialEq)]
pub enum BootstrapBinary {
    /// Copied by an init container from agentdeck's own image into a volume of the pod.
    Image(String),
    /// Already in the agent's image, at this path.
    Path(String),
}

/// The image agentdeck's own Containerfile builds (and config/kubernetes/deployment.yaml runs).
pub const AGENTDECK_IMAGE: &str = "ghcr.io/agentdeck/agentdeck:latest";

impl KubernetesConfig {
    pub fn namespace_for(&self, team: &str) -> &str {
        self.team_namespaces
            .get(team)
            .map_or(self.namespace.as_str(), String::as_str)
    }
}

/// The configuration every part of agentdeck reads, all layers applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub dirs: Dirs,
    /// The store's URL; the embedded SQLite file when none was configured.
    pub database_url: String,
    pub runtime: RuntimeKind,
    pub worker: WorkerConfig,
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    pub sessions: SessionsConfig,
    pub gateway: GatewayConfig,
    pub local: LocalConfig,
    pub kubernetes: KubernetesConfig,
    pub tui: TuiConfig,
    pub notify: NotifyConfig,
    pub agents: BTreeMap<String, AgentSpec>,
    /// The files that were read, lowest first.
    pub sources: Vec<Source>,
    /// What the environment and flags said (a reload applies them again).
    pub overrides: Overrides,
    /// `[[servers]]`: `serve`s this cockpit and CLI can be clients of, by name.
    pub servers: Vec<ServerEntry>,
    /// `[[webhooks]]`: where the fleet posts notices, with retries.
    pub webhooks: Vec<Webhook>,
    /// `[teams.NAME]`: what each team may spend.
    pub teams: BTreeMap<String, TeamConfig>,
}

/// `[teams.NAME]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamConfig {
    /// USD the team's sessions may spend in a calendar month (UTC); new turns stop beyond it.
    pub budget: Option<f64>,
}

/// `[[webhooks]]`: an address the fleet POSTs each notice to (an agent waiting for a person,
/// failing, finishing a turn), so that a team hears of its agents with no cockpit open.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    /// Only this team's sessions; every team's when `None`.
    pub team: Option<String>,
    pub events: Vec<crate::model::NoticeKind>,
    /// The environment variable holding the secret that signs each POST (HMAC-SHA256 of the
    /// body, in `X-Agentdeck-Signature`).
    pub secret_env: Option<String>,
}

impl Webhook {
    /// Whether this webhook wants `event` of a session of `team`.
    pub fn wants(&self, team: &str, event: crate::model::NoticeKind) -> bool {
        self.team.as_deref().is_none_or(|t| t == team) && self.events.contains(&event)
    }
}

/// A `serve` to be a client of: where it is, and where its token and CA come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    pub name: String,
    pub url: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// The configuration read again from the same files, environment and flags (for a reload:
    /// SIGHUP, the cockpit's `:reload`). A file that no longer parses is the same clear error
    /// as at start, and nothing changes.
    pub fn read_again(&self) -> Result<Config, ConfigError> {
        load_with_dirs(&self.overrides, self.dirs.clone())
    }
}

/// What the environment and flags say; each wins over the files.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub runtime: Option<RuntimeKind>,
    pub worker: Option<bool>,
    pub gateway_url: Option<String>,
}

struct Parsed {
    source: Source,
    text: String,
    layer: Layer,
}

fn parse_layer(source: Source, text: String) -> Result<Parsed, ConfigError> {
    let layer =
        toml::from_str::<Layer>(&text).map_err(|e| ConfigError::from_toml(&source, &text, &e))?;
    Ok(Parsed {
        source,
        text,
        layer,
    })
}

fn read_file(path: &Path) -> Result<Parsed, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    parse_layer(Source::File(path.to_path_buf()), text)
}

fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric()
}

/// Loads the configuration: built-in defaults, the user's file and the overrides.
pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
    load_with_dirs(overrides, Dirs::discover()?)
}

pub fn load_with_dirs(overrides: &Overrides, dirs: Dirs) -> Result<Config, ConfigError> {
    let mut layers = vec![parse_layer(Source::BuiltIn, DEFAULT_TOML.to_string())?];
    match &overrides.config_file {
        Some(path) => layers.push(read_file(path)?),
        None => {
            let path = dirs.user_config_file();
            if path.exists() {
                layers.push(read_file(&path)?);
            }
        }
    }
    build(layers, overrides, dirs)
}

/// Parses configuration text as a user's file would be (for tests and `doctor`).
pub fn load_text(text: &str, name: &str, dirs: Dirs) -> Result<Config, ConfigError> {
    let layers = vec![
        parse_layer(Source::BuiltIn, DEFAULT_TOML.to_string())?,
        parse_layer(Source::File(PathBuf::from(name)), text.to_string())?,
    ];
    build(layers, &Overrides::default(), dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> Dirs {
        Dirs {
            config_dir: "/c".into(),
            data_dir: "/d".into(),
            state_dir: "/s".into(),
            cache_dir: "/k".into(),
        }
    }

    #[test]
    fn built_in_defaults_load_on_their_own() -> Result<(), ConfigError> {
        let config = load_text("", "empty.toml", dirs())?;
        assert_eq!(config.database_url, "sqlite:///d/agentdeck.db");
        assert_eq!(config.runtime, RuntimeKind::Local);
        assert!(config.agents.contains_key("opencode"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:3000");
        Ok(())
    }

    #[test]
    fn read_only_contexts_match_names_and_prefixes() -> Result<(), ConfigError> {
        let config = load_text(
            "[tui]\nread_only_contexts = [\"production\", \"prod-*\"]\n",
            "user.toml",
            dirs(),
        )?;
        let tui = &config.tui;
        assert!(tui.read_only_on(Some("production")));
        assert!(tui.read_only_on(Some("prod-eu-1")));
        assert!(!tui.read_only_on(Some("production-2")));
        assert!(!tui.read_only_on(Some("staging")));
        assert!(!tui.read_only_on(None));
        let everywhere = load_text("[tui]\nread_only = true\n", "user.toml", dirs())?;
        assert!(everywhere.tui.read_only_on(None));
        let err = load_text("[tui]\nread_only_contexts = \"prod\"\n", "bad.toml", dirs())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bad.toml:2"), "{err}");
        Ok(())
    }

    #[test]
    fn upper_layer_wins_and_agents_merge_by_id() -> Result<(), ConfigError> {
        let config = load_text(
            "[worker]\nconcurrency = 9\n[agents.reviewer]\nmodel = \"m\"\ncommand = [\"x\"]\n",
            "user.toml",
            dirs(),
        )?;
        assert_eq!(config.worker.concurrency, 9);
        assert_eq!(config.worker.lease, Duration::from_secs(30));
        assert_eq!(config.agents.len(), 2);
        assert_eq!(config.agents["reviewer"].name, "reviewer");
        Ok(())
    }

    #[test]
    fn tool_rules_are_a_policy_or_patterns_in_the_order_written() -> Result<(), ConfigError> {
        use crate::model::{ToolPolicy, ToolRule};
        let config = load_text(
            "[agents.careful]\nmodel = \"m\"\ncommand = [\"x\"]\n\
             [agents.careful.permission]\nedit = \"deny\"\n\
             bash = { \"*\" = \"ask\", \"git status\" = \"allow\", \"cat *\" = \"allow\" }\n",
            "user.toml",
            dirs(),
        )?;
        let rules = &config.agents["careful"].permission;
        assert_eq!(rules["edit"], ToolRule::Every(ToolPolicy::Deny));
        // not sorted: the last pattern that matches wins, so the order is the meaning
        assert_eq!(
            rules["bash"],
            ToolRule::Patterns(vec![
                ("*".to_string(), ToolPolicy::Ask),
                ("git status".to_string(), ToolPolicy::Allow),
                ("cat *".to_string(), ToolPolicy::Allow),
            ])
        );
        // what the store and the API show keeps the order too
        let shown = serde_json::to_value(&rules["bash"]).unwrap_or_default();
        assert_eq!(shown[2]["pattern"], "cat *");
        assert_eq!(
            serde_json::from_value::<ToolRule>(shown).ok().as_ref(),
            Some(&rules["bash"])
        );
        for (bad, says) in [
            ("bash = \"maybe\"", "maybe"),
            ("bash = { \"*\" = \"sometimes\" }", "sometimes"),
            ("bash = {}", "empty"),
            ("bash = 3", "allow, ask or deny"),
        ] {
            let text = format!(
                "[agents.c]\nmodel = \"m\"\ncommand = [\"x\"]\n[agents.c.permission]\n{bad}\n"
            );
            let err = load_text(&text, "bad.toml", dirs())
                .err()
                .map(|e| e.to_string());
            let err = err.unwrap_or_default();
            assert!(
                err.contains("bad.toml:5") && err.contains(says),
                "{bad}: {err}"
            );
        }
        Ok(())
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let err = load_text("[worker]\nconcurency = 3\n", "bad.toml", dirs()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("bad.toml:2:1: unknown field `concurency`"),
            "{text}"
        );
        assert!(
            text.contains("concurrency"),
            "expected fields are listed: {text}"
        );
    }

    #[test]
    fn flag_overrides_win() -> Result<(), ConfigError> {
        let overrides = Overrides {
            database_url: Some("postgres://x@h/db".into()),
            listen: Some("0.0.0.0:8080".into()),
            ..Default::default()
        };
        let layers = vec![parse_layer(Source::BuiltIn, DEFAULT_TOML.to_string())?];
        let config = build(layers, &overrides, dirs())?;
        assert_eq!(config.database_url, "postgres://x@h/db");
        assert_eq!(config.listen.port(), 8080);
        Ok(())
    }
}
