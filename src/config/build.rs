//! Building the [`Config`] from its parsed layers: one function per section, each checking
//! what it reads and saying where a mistake was made (file, line and column).
//!
//! The rule for every field: the uppermost layer that sets it wins (flags and `AGENTDECK_*`
//! variables over the user's file over the built-in defaults), except agents, where an upper
//! layer's agent replaces a lower one's whole.

use super::layer::AgentLayer;
use super::{
    AgentSpec, ApiToken, BootstrapBinary, Config, ConfigError, Dirs, EndpointMode, GatewayConfig,
    HarnessKind, IdleAction, KubernetesConfig, LocalConfig, NotifyConfig, Overrides, Parsed,
    RuntimeKind, SandboxApiVersion, SessionsConfig, TuiConfig, WorkerConfig, error,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// The uppermost layer's value of a field, if any sets it.
macro_rules! top {
    ($layers:expr, $($path:tt)+) => {
        $layers.iter().rev().find_map(|p| p.layer.$($path)+.clone())
    };
}

/// The uppermost layer that sets a field, with the layer (for locating errors).
macro_rules! top_located {
    ($layers:expr, $($path:tt)+) => {
        $layers.iter().rev().find_map(|p| p.layer.$($path)+.as_ref().map(|v| (p, v)))
    };
}

/// An error at `span` of layer `p`'s text.
fn at(p: &Parsed, span: Range<usize>, message: impl Into<String>) -> ConfigError {
    ConfigError::at(&p.source, &p.text, span, message)
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

pub(super) fn build(
    layers: Vec<Parsed>,
    overrides: &Overrides,
    dirs: Dirs,
) -> Result<Config, ConfigError> {
    let agents = agents(&layers)?;
    let servers = servers(&layers)?;
    let webhooks = webhooks(&layers)?;
    let teams = teams(&layers)?;
    Ok(Config {
        database_url: non_empty(overrides.database_url.clone())
            .or_else(|| non_empty(top!(layers, store.database_url)))
            .unwrap_or_else(|| dirs.default_database_url()),
        runtime: overrides
            .runtime
            .or_else(|| top!(layers, runtime.kind))
            .unwrap_or(RuntimeKind::Local),
        worker: worker(&layers, overrides)?,
        listen: listen(&layers, overrides)?,
        tokens: tokens(&layers)?,
        sessions: sessions(&layers, &agents)?,
        gateway: gateway(&layers, overrides),
        local: local(&layers, &dirs),
        kubernetes: kubernetes(&layers)?,
        tui: tui(&layers),
        notify: NotifyConfig {
            bell: top!(layers, notify.bell).unwrap_or(true),
            desktop: top!(layers, notify.desktop).unwrap_or(false),
            command: top!(layers, notify.command).unwrap_or_default(),
            waiting: top!(layers, notify.waiting).unwrap_or(true),
            failed: top!(layers, notify.failed).unwrap_or(true),
            done: top!(layers, notify.done).unwrap_or(true),
        },
        agents,
        sources: layers.into_iter().map(|p| p.source).collect(),
        dirs,
        overrides: overrides.clone(),
        servers,
        webhooks,
        teams,
    })
}

/// Most sandboxes an agent's warm pool may keep (each is a running harness).
const MOST_WARM: i64 = 64;

/// A warm pool's size: 0 to [`MOST_WARM`].
fn warm(p: &Parsed, w: &toml::Spanned<i64>) -> Result<u32, ConfigError> {
    match u32::try_from(*w.get_ref()) {
        Ok(n) if i64::from(n) <= MOST_WARM => Ok(n),
        _ => Err(at(
            p,
            w.span(),
            format!(
                "warm is how many sandboxes to keep started, 0 to {MOST_WARM} (each is a running agent)"
            ),
        )),
    }
}

/// A budget: a positive amount of USD.
fn budget(p: &Parsed, b: &toml::Spanned<f64>) -> Result<f64, ConfigError> {
    let usd = *b.get_ref();
    if usd.is_finite() && usd > 0.0 {
        Ok(usd)
    } else {
        Err(at(
            p,
            b.span(),
            "a budget is a positive amount of USD, e.g. 25.0",
        ))
    }
}

/// `[teams.NAME]`: an upper layer's team replaces a lower one's.
fn teams(layers: &[Parsed]) -> Result<BTreeMap<String, super::TeamConfig>, ConfigError> {
    let mut teams = BTreeMap::new();
    for parsed in layers {
        for (name, team) in &parsed.layer.teams {
            let budget = match &team.budget {
                Some(b) => Some(budget(parsed, b)?),
                None => None,
            };
            teams.insert(name.get_ref().clone(), super::TeamConfig { budget });
        }
    }
    Ok(teams)
}

/// `[[webhooks]]`: the uppermost layer's list; names are unique, URLs are http(s), events known.
fn webhooks(layers: &[Parsed]) -> Result<Vec<super::Webhook>, ConfigError> {
    let Some((p, list)) = top_located!(layers, webhooks) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<super::Webhook> = Vec::new();
    for w in list {
        let name = w.name.get_ref().trim().to_string();
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            return Err(at(
                p,
                w.name.span(),
                "each [[webhooks]] entry needs a name of its own",
            ));
        }
        let url = w.url.get_ref().trim().to_string();
        if reqwest::Url::parse(&url)
            .ok()
            .is_none_or(|u| !matches!(u.scheme(), "http" | "https") || u.host().is_none())
        {
            return Err(at(
                p,
                w.url.span(),
                "a webhook's url is an http:// or https:// address",
            ));
        }
        let events = match &w.events {
            None => crate::model::NoticeKind::ALL.to_vec(),
            Some(list) => {
                let mut events = Vec::new();
                for e in list.get_ref() {
                    let kind = e
                        .parse::<crate::model::NoticeKind>()
                        .map_err(|err| at(p, list.span(), err.to_string()))?;
                    if !events.contains(&kind) {
                        events.push(kind);
                    }
                }
                events
            }
        };
        out.push(super::Webhook {
            name,
            url,
            team: non_empty(w.team.clone()),
            events,
            secret_env: non_empty(w.secret_env.clone()),
        });
    }
    Ok(out)
}

/// `[[servers]]`: the uppermost layer's list; names are unique and URLs are http(s).
fn servers(layers: &[Parsed]) -> Result<Vec<super::ServerEntry>, ConfigError> {
    let Some((p, list)) = top_located!(layers, servers) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<super::ServerEntry> = Vec::new();
    for s in list {
        let name = s.name.get_ref().trim().to_string();
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            return Err(at(
                p,
                s.name.span(),
                "each [[servers]] entry needs a name of its own",
            ));
        }
        let url = s.url.get_ref().trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(at(
                p,
                s.url.span(),
                "a server's url is an http:// or https:// address",
            ));
        }
        out.push(super::ServerEntry {
            name,
            url,
            token_env: s.token_env.clone(),
            token_file: s.token_file.clone(),
            ca_file: s.ca_file.clone(),
        });
    }
    Ok(out)
}

/// `[agents.ID]`: an upper layer's agent replaces a lower one's whole.
fn agents(layers: &[Parsed]) -> Result<BTreeMap<String, AgentSpec>, ConfigError> {
    let mut agent_layers: BTreeMap<String, (&Parsed, Range<usize>, &AgentLayer)> = BTreeMap::new();
    for parsed in layers {
        for (id, agent) in &parsed.layer.agents {
            agent_layers.insert(id.get_ref().clone(), (parsed, id.span(), agent));
        }
    }
    let mut agents = BTreeMap::new();
    for (id, (parsed, span, a)) in agent_layers {
        if !super::valid_agent_id(&id) {
            return Err(at(
                parsed,
                span,
                format!(
                    "invalid agent id {id:?}: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
                ),
            ));
        }
        if let Some(name) = a.env.keys().find(|k| crate::model::env::is_reserved(k)) {
            return Err(at(
                parsed,
                span,
                format!(
                    "agent {id:?} sets env {name:?}, which agentdeck reserves for itself (HOME, PATH, AGENTDECK_*, OPENCODE_*, XDG_* …)"
                ),
            ));
        }
        let Some(model) = a.model.clone().filter(|m| !m.trim().is_empty()) else {
            return Err(at(
                parsed,
                span,
                format!("agent {id:?} has no model: add model = \"provider/model\""),
            ));
        };
        agents.insert(
            id.clone(),
            AgentSpec {
                name: a.name.clone().unwrap_or_else(|| id.clone()),
                harness: a.harness.unwrap_or(HarnessKind::Opencode),
                model,
                system_prompt: a.system_prompt.clone(),
                image: a.image.clone(),
                resources: a.resources.clone(),
                command: a.command.clone().unwrap_or_default(),
                env: a.env.clone(),
                idle_timeout: a.idle_timeout.unwrap_or(Duration::from_secs(30 * 60)),
                permission: a.permission.clone(),
                budget: match &a.budget {
                    Some(b) => Some(budget(parsed, b)?),
                    None => None,
                },
                warm: match &a.warm {
                    Some(w) => warm(parsed, w)?,
                    None => 0,
                },
                id,
            },
        );
    }
    Ok(agents)
}

/// `[sessions]`: the default agent must be one of the agents.
fn sessions(
    layers: &[Parsed],
    agents: &BTreeMap<String, AgentSpec>,
) -> Result<SessionsConfig, ConfigError> {
    let default_agent = match top_located!(layers, sessions.default_agent) {
        Some((p, name)) if !name.get_ref().is_empty() => {
            if !agents.contains_key(name.get_ref()) {
                let known: Vec<&str> = agents.keys().map(String::as_str).collect();
                return Err(at(
                    p,
                    name.span(),
                    format!(
                        "unknown agent {:?}; the configured agents are: {}",
                        name.get_ref(),
                        if known.is_empty() {
                            "(none)".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            Some(name.get_ref().clone())
        }
        _ => None,
    };
    Ok(SessionsConfig {
        default_team: top!(layers, sessions.default_team).unwrap_or_else(|| "default".to_string()),
        default_agent,
        phase_timeout: top!(layers, sessions.phase_timeout).unwrap_or(Duration::from_secs(300)),
        idle_action: top!(layers, sessions.idle_action).unwrap_or(IdleAction::Suspend),
    })
}

/// `[api] listen`, or `--listen` / `AGENTDECK_LISTEN`.
fn listen(layers: &[Parsed], overrides: &Overrides) -> Result<SocketAddr, ConfigError> {
    Ok(match &overrides.listen {
        Some(text) => text.parse::<SocketAddr>().map_err(|e| {
            ConfigError::Value(format!(
                "invalid listen address {text:?} (from --listen or AGENTDECK_LISTEN): {e}; write it like 127.0.0.1:3000"
            ))
        })?,
        None => match top_located!(layers, api.listen) {
            Some((p, addr)) => addr.get_ref().parse::<SocketAddr>().map_err(|e| {
                at(
                    p,
                    addr.span(),
                    format!("invalid listen address: {e}; write it like 127.0.0.1:3000"),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        },
    })
}

/// `[[api.tokens]]`: each token given once, directly or from an environment variable, long
/// enough to be a secret.
fn tokens(layers: &[Parsed]) -> Result<Vec<ApiToken>, ConfigError> {
    let mut tokens = Vec::new();
    let Some((p, list)) = top_located!(layers, api.tokens) else {
        return Ok(tokens);
    };
    for t in list {
        let (token, span) = match (&t.token, &t.token_env) {
            (Some(token), None) => (token.get_ref().clone(), token.span()),
            (None, Some(var)) => match std::env::var(var.get_ref()) {
                Ok(value) => (value.trim().to_string(), var.span()),
                Err(_) => {
                    return Err(at(
                        p,
                        var.span(),
                        format!("environment variable {} is not set", var.get_ref()),
                    ));
                }
            },
            (Some(token), Some(_)) => {
                return Err(at(
                    p,
                    token.span(),
                    "give either token or token_env, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::Unlocated {
                    origin: p.source.clone(),
                    message: format!(
                        "an [[api.tokens]] entry for team {:?} has neither token nor token_env",
                        t.team
                    ),
                });
            }
        };
        if token.len() < 16 {
            return Err(at(
                p,
                span,
                "API token too short: use at least 16 characters (e.g. `openssl rand -hex 24`)",
            ));
        }
        if tokens.iter().any(|x: &ApiToken| x.token == token) {
            return Err(at(p, span, "the same API token is listed twice"));
        }
        tokens.push(ApiToken {
            token,
            team: t.team.clone(),
            name: t.name.clone().filter(|n| !n.trim().is_empty()),
            read_only: t.read_only,
        });
    }
    Ok(tokens)
}

/// `[worker]`, and `--no-worker`.
fn worker(layers: &[Parsed], overrides: &Overrides) -> Result<WorkerConfig, ConfigError> {
    let concurrency = match top_located!(layers, worker.concurrency) {
        Some((p, n)) if *n.get_ref() == 0 || *n.get_ref() > 256 => {
            return Err(at(
                p,
                n.span(),
                "worker.concurrency must be between 1 and 256",
            ));
        }
        Some((_, n)) => *n.get_ref(),
        None => 4,
    };
    let max_attempts = match top_located!(layers, worker.max_attempts) {
        Some((p, n)) if *n.get_ref() < 1 => {
            return Err(at(p, n.span(), "worker.max_attempts must be at least 1"));
        }
        Some((_, n)) => *n.get_ref(),
        None => 5,
    };
    Ok(WorkerConfig {
        enabled: overrides
            .worker
            .or_else(|| top!(layers, worker.enabled))
            .unwrap_or(true),
        concurrency,
        lease: top!(layers, worker.lease).unwrap_or(Duration::from_secs(30)),
        max_attempts,
        backoff: top!(layers, worker.backoff).unwrap_or(Duration::from_secs(2)),
        max_backoff: top!(layers, worker.max_backoff).unwrap_or(Duration::from_secs(300)),
        // Below a second, a heartbeat (a third of it) could not keep up with a busy database.
        fleet_lease: top!(layers, worker.fleet_lease)
            .unwrap_or(Duration::from_secs(15))
            .max(Duration::from_secs(1)),
    })
}

/// `[gateway]`, and `--gateway-url`.
fn gateway(layers: &[Parsed], overrides: &Overrides) -> GatewayConfig {
    let url =
        non_empty(overrides.gateway_url.clone()).or_else(|| non_empty(top!(layers, gateway.url)));
    GatewayConfig {
        sandbox_url: non_empty(top!(layers, gateway.sandbox_url)).or_else(|| url.clone()),
        url,
        master_key_env: non_empty(top!(layers, gateway.master_key_env))
            .unwrap_or_else(|| "AGENTDECK_GATEWAY_MASTER_KEY".to_string()),
        virtual_keys: top!(layers, gateway.virtual_keys).unwrap_or(false),
        sandbox_key_env: non_empty(top!(layers, gateway.sandbox_key_env)),
        key_budget: top!(layers, gateway.key_budget),
        key_duration: top!(layers, gateway.key_duration).unwrap_or(Duration::from_secs(24 * 3600)),
    }
}

/// `[kubernetes]`.
fn kubernetes(layers: &[Parsed]) -> Result<KubernetesConfig, ConfigError> {
    let harness_port = match top_located!(layers, kubernetes.harness_port) {
        Some((p, port)) if *port.get_ref() == 0 => {
            return Err(at(
                p,
                port.span(),
                "kubernetes.harness_port must be a port number from 1 to 65535",
            ));
        }
        Some((_, port)) => *port.get_ref(),
        None => 4096,
    };
    Ok(KubernetesConfig {
        context: non_empty(top!(layers, kubernetes.context)),
        namespace: non_empty(top!(layers, kubernetes.namespace))
            .unwrap_or_else(|| "agentdeck".to_string()),
        team_namespaces: top!(layers, kubernetes.team_namespaces).unwrap_or_default(),
        api_version: top!(layers, kubernetes.api_version).unwrap_or(SandboxApiVersion::Auto),
        endpoint: top!(layers, kubernetes.endpoint).unwrap_or(EndpointMode::Auto),
        harness_port,
        service_account: non_empty(top!(layers, kubernetes.service_account)),
        bootstrap: match non_empty(top!(layers, kubernetes.bootstrap_program)) {
            Some(path) => BootstrapBinary::Path(path),
            None => BootstrapBinary::Image(
                non_empty(top!(layers, kubernetes.bootstrap_image))
                    .unwrap_or_else(|| super::AGENTDECK_IMAGE.to_string()),
            ),
        },
    })
}

/// `[tui]`: key overrides merge across layers, each remembered with where it was written.
fn tui(layers: &[Parsed]) -> TuiConfig {
    let mut keys = Vec::new();
    for p in layers {
        for (action, list) in p.layer.tui.keys.iter().flatten() {
            let (line, column) = error::line_column(&p.text, action.span().start);
            let at = format!("{}:{line}:{column}", p.source);
            keys.retain(|(a, _, _): &(String, Vec<String>, String)| a != action.get_ref());
            keys.push((action.get_ref().clone(), list.clone(), at));
        }
    }
    TuiConfig {
        theme: non_empty(top!(layers, tui.theme)),
        read_only: top!(layers, tui.read_only).unwrap_or(false),
        read_only_contexts: top!(layers, tui.read_only_contexts).unwrap_or_default(),
        mouse: top!(layers, tui.mouse).unwrap_or(false),
        preview: top!(layers, tui.preview).unwrap_or(true),
        show_ended: top!(layers, tui.show_ended).unwrap_or(false),
        keys,
    }
}

/// `[local]`.
fn local(layers: &[Parsed], dirs: &Dirs) -> LocalConfig {
    LocalConfig {
        root: non_empty(top!(layers, local.root))
            .map(PathBuf::from)
            .unwrap_or_else(|| dirs.data_dir.join("sandboxes")),
        env_allowlist: top!(layers, local.env_allowlist).unwrap_or_default(),
        program: non_empty(top!(layers, local.program)).map(PathBuf::from),
    }
}
