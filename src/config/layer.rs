//! One configuration layer as written in a file: every field optional, unknown keys refused.
//! Layers are merged field by field (an upper layer wins); agents are merged by id, an upper
//! layer's agent replacing the lower one's whole.

use super::duration;
use crate::model::{HarnessKind, Resources, ToolRule};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    #[serde(default)]
    pub store: StoreLayer,
    #[serde(default)]
    pub runtime: RuntimeLayer,
    #[serde(default)]
    pub worker: WorkerLayer,
    #[serde(default)]
    pub api: ApiLayer,
    #[serde(default)]
    pub sessions: SessionsLayer,
    #[serde(default)]
    pub gateway: GatewayLayer,
    #[serde(default)]
    pub local: LocalLayer,
    #[serde(default)]
    pub kubernetes: KubernetesLayer,
    #[serde(default)]
    pub tui: TuiLayer,
    #[serde(default)]
    pub notify: NotifyLayer,
    #[serde(default)]
    pub agents: BTreeMap<Spanned<String>, AgentLayer>,
    /// `[[servers]]`: `serve`s the cockpit and the CLI can be clients of (`--server NAME`).
    pub servers: Option<Vec<ServerLayer>>,
    /// `[[webhooks]]`: where the fleet posts notices (waiting, failed, done).
    pub webhooks: Option<Vec<WebhookLayer>>,
    /// `[teams.NAME]`: what a team may spend.
    #[serde(default)]
    pub teams: BTreeMap<Spanned<String>, TeamLayer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookLayer {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    /// Only this team's sessions; every team's when absent.
    pub team: Option<String>,
    /// Which notices: "waiting", "failed", "done" (all when absent).
    pub events: Option<Spanned<Vec<String>>>,
    /// The environment variable holding the secret that signs each POST.
    pub secret_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerLayer {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    /// The environment variable that holds this server's token.
    pub token_env: Option<String>,
    /// Or a file that holds it.
    pub token_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to trust for it, besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLayer {
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Local,
    Kubernetes,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Local => "local",
            RuntimeKind::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    pub kind: Option<RuntimeKind>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerLayer {
    pub enabled: Option<bool>,
    pub concurrency: Option<Spanned<u32>>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub lease: Option<Duration>,
    pub max_attempts: Option<Spanned<i32>>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub max_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub fleet_lease: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiLayer {
    pub listen: Option<Spanned<String>>,
    pub tokens: Option<Vec<TokenLayer>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLayer {
    /// The token itself, or
    pub token: Option<Spanned<String>>,
    /// the environment variable that holds it (keeps it out of the file).
    pub token_env: Option<Spanned<String>>,
    pub team: String,
    /// Who holds it, for the sessions' history (`api:NAME`).
    pub name: Option<String>,
    /// A token that may read and never act (a read-only cockpit).
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleAction {
    Suspend,
    End,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsLayer {
    pub default_team: Option<String>,
    pub default_agent: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub phase_timeout: Option<Duration>,
    pub idle_action: Option<IdleAction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayLayer {
    pub url: Option<String>,
    pub sandbox_url: Option<String>,
    pub master_key_env: Option<String>,
    pub virtual_keys: Option<bool>,
    pub sandbox_key_env: Option<String>,
    pub key_budget: Option<f64>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub key_duration: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLayer {
    pub root: Option<String>,
    pub env_allowlist: Option<Vec<String>>,
    pub program: Option<String>,
}

/// Which agents.x-k8s.io version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxApiVersion {
    /// v1beta1 when the cluster serves it, else v1alpha1.
    Auto,
    V1alpha1,
    V1beta1,
}

/// How agentdeck reaches a sandbox's harness on Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointMode {
    /// The Sandbox's service DNS inside the cluster, a port-forward from outside.
    Auto,
    Service,
    PodIp,
    PortForward,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLayer {
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub team_namespaces: Option<BTreeMap<String, String>>,
    pub api_version: Option<SandboxApiVersion>,
    pub endpoint: Option<EndpointMode>,
    pub harness_port: Option<Spanned<u16>>,
    pub service_account: Option<String>,
    pub bootstrap_image: Option<String>,
    pub bootstrap_program: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyLayer {
    pub bell: Option<bool>,
    pub desktop: Option<bool>,
    pub command: Option<Vec<String>>,
    pub waiting: Option<bool>,
    pub failed: Option<bool>,
    pub done: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuiLayer {
    pub theme: Option<String>,
    pub read_only: Option<bool>,
    pub read_only_contexts: Option<Vec<String>>,
    pub mouse: Option<bool>,
    pub preview: Option<bool>,
    pub show_ended: Option<bool>,
    /// action id → keys
    pub keys: Option<BTreeMap<Spanned<String>, Vec<String>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLayer {
    pub name: Option<String>,
    pub harness: Option<HarnessKind>,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub image: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub idle_timeout: Option<Duration>,
    /// tool → allow | ask | deny
    #[serde(default)]
    pub permission: BTreeMap<String, ToolRule>,
    /// USD one session may spend.
    pub budget: Option<Spanned<f64>>,
    /// Sandboxes kept warm for new sessions.
    pub warm: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamLayer {
    /// USD the team's sessions may spend in a calendar month (UTC).
    pub budget: Option<Spanned<f64>>,
}
