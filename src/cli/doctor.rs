//! `agentdeck doctor`: checks the store, the runtime, the gateway and the harness, and says
//! what is wrong and how to fix it.

use super::output::{Output, Table, json};
use crate::config::Config;
use crate::runtime::Check;

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// What the cockpit and the runtime refuse in a configuration that reads well: keys that
/// clash, a theme that cannot be loaded, an agent the configured runtime cannot run. Each is a
/// failed check naming the fix (the configuration said `ok` while the cockpit would not start
/// and every Kubernetes session of an image-less agent failed).
fn config_checks(config: &Config) -> Vec<Check> {
    let read = config
        .sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" + ");
    let mut problems: Vec<(String, String, String)> = Vec::new();
    if let Err(e) = crate::tui::actions::Keymap::with_keys(false, &config.tui.keys) {
        problems.push((
            "config ([tui] keys)".into(),
            format!("{e}: the cockpit will not start"),
            "bind each key to one action per screen under [tui] keys".into(),
        ));
    }
    if let Err(e) =
        crate::tui::theme::Theme::choose(config.tui.theme.as_deref(), &config.dirs.config_dir)
    {
        problems.push((
            "config ([tui] theme)".into(),
            format!("{e}: the cockpit will not start"),
            "name a built-in theme (default, mono) or a theme file in the config folder".into(),
        ));
    }
    for agent in config.agents.values() {
        if let Some((why, fix)) = crate::runtime::agent_unfit(config.runtime, agent) {
            problems.push((format!("agent ({})", agent.id), why, fix));
        }
    }
    if problems.is_empty() {
        return vec![Check {
            name: "config".into(),
            ok: true,
            detail: read,
            fix: None,
        }];
    }
    problems
        .into_iter()
        .map(|(name, detail, fix)| Check {
            name,
            ok: false,
            detail,
            fix: Some(fix),
        })
        .collect()
}

pub async fn checks(config: &Config) -> Vec<Check> {
    let mut checks = config_checks(config);

    let shown = crate::store::redact_url(&config.database_url);
    let mut fleet = None;
    let store = match crate::store::open(&config.database_url).await {
        Ok(store) => match store.ping().await {
            Ok(()) => {
                fleet = Some(fleet_check(store.as_ref()).await);
                Check {
                    name: "store".into(),
                    ok: true,
                    detail: format!("{} answers", store.describe()),
                    fix: None,
                }
            }
            Err(e) => Check {
                name: "store".into(),
                ok: false,
                detail: format!("{shown}: {e}"),
                fix: Some("check that the database is running and the URL is right".into()),
            },
        },
        Err(e) => Check {
            name: "store".into(),
            ok: false,
            detail: format!("{shown}: {e}"),
            fix: Some(if config.database_url.starts_with("postgres") {
                "start Postgres, or set AGENTDECK_DATABASE_URL / --database-url to a reachable one"
                    .into()
            } else {
                "check that the data directory is writable".into()
            }),
        },
    };
    checks.push(store);
    checks.extend(fleet);

    match super::runtime_for(config).await {
        Ok(runtime) => {
            checks.extend(runtime.check().await);
            let pools = runtime.pool_health().await;
            checks.extend(pool_checks(config, &pools));
        }
        Err(e) => checks.push(Check {
            name: format!("{} runtime", config.runtime.as_str()),
            ok: false,
            detail: format!("{e:#}"),
            fix: None,
        }),
    }

    match &config.gateway.url {
        None => checks.push(Check {
            name: "gateway".into(),
            ok: false,
            detail: "no gateway configured".into(),
            fix: Some("set [gateway] url in the config file".into()),
        }),
        Some(url) => checks.push(match crate::gateway::check_health(url).await {
            Ok(()) => Check {
                name: "gateway".into(),
                ok: true,
                detail: format!("{url} is live"),
                fix: None,
            },
            Err(e) => Check {
                name: "gateway".into(),
                ok: false,
                detail: e,
                fix: Some(
                    "start LiteLLM (`eval \"$(scripts/offline-stack.sh up)\"` for an offline one) or fix [gateway] url"
                        .into(),
                ),
            },
        }),
    }

    if config.runtime == crate::config::RuntimeKind::Local {
        for agent in config.agents.values() {
            let name = format!("harness ({})", agent.id);
            // (an agent with no command is said once, with the configuration)
            let Some(program) = agent.command.first() else {
                continue;
            };
            checks.push(match on_path(program) {
                    Some(path) => Check {
                        name,
                        ok: true,
                        detail: format!("{program} found at {}", path.display()),
                        fix: None,
                    },
                    None => Check {
                        name,
                        ok: false,
                        detail: format!("{program} not found on PATH"),
                        fix: Some(if program == "opencode" {
                            "install it with `npm i -g opencode-ai`, or run `eval \"$(scripts/offline-stack.sh up)\"`".into()
                        } else {
                            format!("install {program} or fix the agent's command")
                        }),
                    },
            });
        }
    }
    checks
}

/// Each agent's warm pool: how many of its sandboxes are ready for the next sessions.
fn pool_checks(config: &Config, pools: &[crate::model::PoolHealth]) -> Vec<Check> {
    config
        .agents
        .values()
        .filter(|a| a.warm > 0)
        .map(|agent| {
            let pool = pools.iter().find(|p| p.agent == agent.id);
            let (ready, starting) = pool.map_or((0, 0), |p| (p.ready, p.starting));
            let want = agent.warm as usize;
            let mut detail = format!("{ready} of {want} ready");
            if starting > 0 {
                detail.push_str(&format!(", {starting} starting"));
            }
            Check {
                name: format!("warm pool ({})", agent.id),
                ok: ready >= want,
                detail,
                fix: (ready < want).then(|| {
                    let logs = match config.runtime {
                        crate::config::RuntimeKind::Local => {
                            format!("{}/*/sandbox.log", config.local.root.display())
                        }
                        crate::config::RuntimeKind::Kubernetes => format!(
                            "kubectl -n {} get pods -l {}={}; agent-sandbox's extensions must be installed, its controller run with --extensions",
                            config.kubernetes.namespace,
                            crate::runtime::kubernetes::names::LABEL_POOL,
                            crate::runtime::kubernetes::names::pool_name(&agent.id)
                        ),
                    };
                    format!(
                        "a running `agentdeck serve` (or cockpit) keeps the pool; if it stays short, its sandboxes say why ({logs})"
                    )
                }),
            }
        })
        .collect()
}

/// Who runs the fleet's work, and how many live sessions each core follows. Informational: a
/// store with no live core is fine until someone starts one.
async fn fleet_check(store: &dyn crate::store::Store) -> Check {
    let cores = match store.list_cores().await {
        Ok(cores) => cores,
        Err(e) => {
            return Check {
                name: "fleet".into(),
                ok: false,
                detail: format!("cannot read the fleet: {e}"),
                fix: Some("run `agentdeck migrate` with this agentdeck".into()),
            };
        }
    };
    let working: Vec<String> = cores
        .iter()
        .filter(|c| c.fleet)
        .map(|c| {
            let mut held = format!("{} sessions", c.sessions);
            for role in &c.roles {
                held.push_str(", ");
                held.push_str(role);
            }
            format!("{} ({}: {held})", c.id, c.kind)
        })
        .collect();
    let aside = cores.iter().filter(|c| !c.fleet).count();
    let mut detail = match working.len() {
        0 => "no process runs fleet work now (`agentdeck serve`, `agentdeck worker` or a cockpit \
              does while it runs)"
            .to_string(),
        n => format!("{n} working: {}", working.join("; ")),
    };
    if aside > 0 {
        detail.push_str(&format!("; {aside} cockpit(s) standing aside"));
    }
    Check {
        name: "fleet".into(),
        ok: true,
        detail,
        fix: None,
    }
}

pub async fn run(config: &Config, output: Output) -> anyhow::Result<bool> {
    let checks = checks(config).await;
    let all_ok = checks.iter().all(|c| c.ok);
    match output {
        Output::Json => println!("{}", json(&checks)?),
        Output::Table => {
            let mut table = Table::new(&["", "CHECK", "DETAIL", "FIX"]);
            for c in &checks {
                table.row(vec![
                    if c.ok { "ok" } else { "FAIL" }.to_string(),
                    c.name.clone(),
                    c.detail.clone(),
                    c.fix.clone().unwrap_or_default(),
                ]);
            }
            print!("{}", table.render());
        }
    }
    Ok(all_ok)
}
