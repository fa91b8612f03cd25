//! The command line: the cockpit (no subcommand), `serve`, `worker`, `sessions`, `agents`,
//! `migrate` and `doctor`.

mod doctor;
pub mod output;

use crate::config::{self, Config, Overrides, RuntimeKind};
use crate::core::{Core, CreateSession};
use crate::model::{Session, SessionQuery, SessionStatus};
use crate::runtime::kubernetes::KubernetesRuntime;
use crate::runtime::local::LocalRuntime;
use crate::runtime::{SandboxRuntime, Unavailable};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use output::{Output, Table, ago, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "agentdeck",
    version,
    about = "An operator cockpit and control core for AI agents in production",
    long_about = "With no subcommand, opens the cockpit. `agentdeck serve` runs the REST API and \
                  the worker. With no configuration at all, agentdeck keeps its data in an \
                  embedded SQLite file and runs sandboxes as local processes."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    /// The cockpit's theme: default, light, 16-colour, mono, or one in the config dir's
    /// themes/ folder (NO_COLOR picks mono).
    #[arg(long, env = "AGENTDECK_THEME")]
    pub theme: Option<String>,
    /// No dangerous action (restart, suspend, end, abort) in the cockpit.
    #[arg(long)]
    pub read_only: bool,
    /// Let the cockpit take the mouse (off by default, so selecting text to copy works).
    #[arg(long)]
    pub mouse: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Config file (default: config.toml in the XDG config dir).
    #[arg(long, global = true, env = "AGENTDECK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store URL: postgres://… or sqlite://… (default: the embedded SQLite file).
    #[arg(
        long,
        global = true,
        env = "AGENTDECK_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where sandboxes run.
    #[arg(long, global = true, env = "AGENTDECK_RUNTIME", value_enum)]
    pub runtime: Option<RuntimeArg>,
    /// The LLM gateway's URL.
    #[arg(long, global = true, env = "AGENTDECK_GATEWAY_URL", value_name = "URL")]
    pub gateway_url: Option<String>,
    /// Log filter (tracing syntax), e.g. `info` or `agentdeck=debug`.
    #[arg(long, global = true, env = "AGENTDECK_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Run the cockpit as a client of `agentdeck serve` at this address (its REST API, with
    /// the token of AGENTDECK_TOKEN or --token-file): no database or cluster credentials here.
    /// Or a `[[servers]]` entry's name; the cockpit takes several (`eu,us`), and with none
    /// given follows every configured server at once.
    #[arg(long, global = true, env = "AGENTDECK_SERVER", value_name = "URL|NAME")]
    pub server: Option<String>,
    /// A file holding the token for --server (else AGENTDECK_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for --server, besides the system's roots.
    #[arg(long, global = true, env = "AGENTDECK_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Where a client of `serve` connects: its URL, token and CA file.
struct ServerChoice {
    url: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
}

/// The `serve`s to be a client of.
enum Servers {
    /// None: this machine's own store and runtime.
    Here,
    One(ServerChoice),
    /// Several `[[servers]]` entries, by name (a cockpit follows them all at once).
    Several(Vec<(String, ServerChoice)>),
}

/// The `serve` a command is a client of: `--server NAME` (a `[[servers]]` entry) or
/// `--server URL`; with no `--server`, the one `[[servers]]` entry if there is one; `None`: this
/// machine's own store and runtime.
fn server_choice(global: &Global, config: &Config) -> Result<Option<ServerChoice>> {
    match servers_for(global, config)? {
        Servers::Here => Ok(None),
        Servers::One(one) => Ok(Some(one)),
        Servers::Several(several) => {
            let names: Vec<&str> = several.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "several servers ({}): a command goes to one; pick it with --server NAME",
                names.join(", ")
            )
        }
    }
}

/// The `serve`s a cockpit follows: as [`server_choice`], and several at once with every
/// `[[servers]]` entry (no `--server`) or `--server NAME,NAME`.
fn servers_for(global: &Global, config: &Config) -> Result<Servers> {
    let entry_named = |asked: &str| config.servers.iter().find(|s| s.name == asked);
    let unknown = |asked: &str| {
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        anyhow::anyhow!(
            "--server {asked:?}: no [[servers]] entry has that name ({}); or give its URL",
            if names.is_empty() {
                "none is configured".to_string()
            } else {
                format!("named: {}", names.join(", "))
            }
        )
    };
    let entries: Vec<&crate::config::ServerEntry> = match &global.server {
        Some(asked) if asked.contains("://") && entry_named(asked).is_none() => {
            return Ok(Servers::One(ServerChoice {
                url: asked.clone(),
                token: server_token(global)?,
                ca_file: global.ca_file.clone(),
            }));
        }
        Some(asked) => asked
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| entry_named(n).ok_or_else(|| unknown(n)))
            .collect::<Result<_>>()?,
        None => config.servers.iter().collect(),
    };
    match entries.as_slice() {
        [] => Ok(Servers::Here),
        [one] => Ok(Servers::One(entry_choice(one, global)?)),
        several => Ok(Servers::Several(
            several
                .iter()
                .map(|e| Ok((e.name.clone(), entry_choice(e, global)?)))
                .collect::<Result<_>>()?,
        )),
    }
}

/// A `[[servers]]` entry's address, token (its file, its variable, else `--token-file` or
/// AGENTDECK_TOKEN) and CA file.
fn entry_choice(entry: &crate::config::ServerEntry, global: &Global) -> Result<ServerChoice> {
    let token = match (&entry.token_file, &entry.token_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "server {:?}: cannot read the token file {}",
                    entry.name,
                    path.display()
                )
            })?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        }
        (None, Some(var)) => Some(
            std::env::var(var)
                .with_context(|| format!("server {:?}: {var} is not set", entry.name))?
                .trim()
                .to_string(),
        ),
        (None, None) => server_token(global)?,
    };
    Ok(ServerChoice {
        url: entry.url.clone(),
        token,
        ca_file: entry.ca_file.clone().or_else(|| global.ca_file.clone()),
    })
}

/// The token for `--server`: from `--token-file`, else `AGENTDECK_TOKEN` (never printed).
fn server_token(global: &Global) -> Result<Option<String>> {
    match &global.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            Ok(Some(token))
        }
        None => Ok(std::env::var("AGENTDECK_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RuntimeArg {
    Local,
    Kubernetes,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the REST API and the worker.
    Serve {
        /// Address to listen on (default 127.0.0.1:3000).
        #[arg(long, env = "AGENTDECK_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
        /// Serve the API only; leave tasks to other workers (as `[worker] enabled = false`).
        #[arg(long)]
        no_worker: bool,
        /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
        #[arg(
            long,
            env = "AGENTDECK_TLS_CERT",
            value_name = "FILE",
            requires = "tls_key"
        )]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(
            long,
            env = "AGENTDECK_TLS_KEY",
            value_name = "FILE",
            requires = "tls_cert"
        )]
        tls_key: Option<PathBuf>,
    },
    /// Run only the worker (provisioning, lifecycle, reaping, queued tasks).
    Worker,
    /// Sessions: list, show, create, end.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// Agents from the configuration.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Bring the database schema up to date, and nothing else.
    Migrate,
    /// Check the store, the runtime, the gateway and the harness; say what to fix.
    Doctor {
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Inside a warm sandbox (the runtimes start it): start the harness, warm it up, and open it
    /// to the session that claims the sandbox. See README, "Warm pools".
    #[command(hide = true)]
    Bootstrap {
        /// The sandbox's port.
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Where the harness's model calls come in (its config names this).
        #[arg(long, value_name = "ADDR")]
        gateway_listen: std::net::SocketAddr,
        /// The LLM gateway's base URL.
        #[arg(long, value_name = "URL")]
        gateway: String,
        /// The hand-over folder (a memory-backed volume on Kubernetes).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The model of the warm-up turn (`provider/model`).
        #[arg(long)]
        model: String,
        /// A file to write before the harness starts: FROM with `{gateway_door}` replaced by
        /// where the harness's model calls come in (when that port is chosen here: port 0).
        #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
        render: Vec<PathBuf>,
        /// The harness's command; `{host}` and `{port}` are where it listens.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Hands a claim (JSON on stdin) to a warm sandbox's bootstrap and waits until it took it.
    #[command(hide = true)]
    HandOver {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    /// List sessions, newest first.
    List {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Only these statuses (comma-separated).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one session and its latest messages.
    Show {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Create a session; a worker (serve or a cockpit) provisions it.
    Create {
        /// The agent (default: the configured default agent).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        title: Option<String>,
        /// The first message to the agent.
        #[arg(long)]
        prompt: Option<String>,
        /// NAME=VALUE for the sandbox; repeatable.
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Everything about one session (phases, sandbox health, log tail, gateway) and what to do.
    Diagnose {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// What the session's agent asked a person (permissions, questions) and who answered.
    Asks {
        id: String,
        /// Only what still waits for an answer.
        #[arg(long)]
        pending: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Answer what the agent waits for: a permission (`--reply once|always|reject`, with
    /// `--message` for a reason the agent hears) or a question (`--label`, once per question,
    /// or `--reject`).
    Answer {
        id: String,
        /// The ask's id (from `sessions asks`).
        ask: String,
        #[arg(long, value_name = "once|always|reject")]
        reply: Option<String>,
        #[arg(long)]
        message: Option<String>,
        /// The answer to a question (an option's label or your own words): one for each of its
        /// parts, in order. (A part that takes several choices is answered through the API.)
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Decline to answer the question.
        #[arg(long)]
        reject: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Fork a session: a new one, in a sandbox of its own, whose conversation is this one's up
    /// to message `--at` (the `#N` of `sessions show`).
    Fork {
        id: String,
        #[arg(long, value_name = "SEQ")]
        at: i64,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Follow the session's transcript as it goes (for a terminal without the cockpit): its
    /// last messages, then each one as it is complete, until the session ends or ctrl-c.
    Follow {
        id: String,
        /// How many of its last messages to show first.
        #[arg(long, default_value_t = 10)]
        last: i64,
    },
    /// Send a message to the session's agent (`-` reads it from standard input); it is stored
    /// at once and delivered when the agent can take it.
    Send {
        id: String,
        text: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Give a session a new title.
    Rename {
        id: String,
        title: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// What the agent changed in files, turn by turn, as unified diffs (kept with the
    /// transcript: it reads the same once the sandbox is gone).
    Diff {
        id: String,
        /// Only each file's name and its added and removed lines.
        #[arg(long)]
        stat: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Give a session a budget of its own in USD (`none` lifts it): raises the budget that
    /// stopped its turns.
    Budget {
        id: String,
        /// USD, or `none`.
        usd: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// An interactive shell in the session's sandbox (its working folder and env on the local
    /// runtime, `pods/exec` in its pod on Kubernetes); it ends when the shell does, with its
    /// exit status. Standard input that is not a terminal is sent to the shell as a script.
    Shell { id: String },
    /// Restart a session's sandbox (a failed session is provisioned again).
    Restart {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Suspend a session: its sandbox stops, its transcript stays.
    Suspend {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Resume a suspended session.
    Resume {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Stop the agent's running turn.
    Abort {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// End a session: its sandbox is destroyed, its transcript kept.
    End {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List the configured agents.
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
}

/// Exit codes beyond 0/1.
pub const EXIT_NOT_A_TERMINAL: i32 = 2;

pub fn load_config(global: &Global, listen: Option<String>) -> Result<Config> {
    let overrides = Overrides {
        config_file: global.config.clone(),
        database_url: global.database_url.clone(),
        listen,
        runtime: global.runtime.map(|r| match r {
            RuntimeArg::Local => RuntimeKind::Local,
            RuntimeArg::Kubernetes => RuntimeKind::Kubernetes,
        }),
        worker: None,
        gateway_url: global.gateway_url.clone(),
    };
    Ok(config::load(&overrides)?)
}

/// The sandbox runtime the configuration asks for.
///
/// A Kubernetes runtime without a usable cluster configuration is not an error here: sessions
/// can still be listed and read, and anything that needs a sandbox fails with the reason.
pub async fn runtime_for(config: &Config) -> Result<Arc<dyn SandboxRuntime>> {
    Ok(match config.runtime {
        RuntimeKind::Local => Arc::new(
            LocalRuntime::new(&config.local).context("cannot start the local sandbox runtime")?,
        ),
        RuntimeKind::Kubernetes => match KubernetesRuntime::connect(&config.kubernetes).await {
            Ok(rt) => Arc::new(rt),
            Err(err) => {
                tracing::debug!(%err, "the Kubernetes runtime is unavailable");
                Arc::new(Unavailable::new(
                    "kubernetes",
                    err.to_string(),
                    Some("point KUBECONFIG (or [kubernetes] context) at a cluster with agent-sandbox; scripts/kind-up.sh makes one".into()),
                ))
            }
        },
    })
}

async fn open_core(config: Config) -> Result<Core> {
    let store = crate::store::redact_url(&config.database_url);
    let runtime = runtime_for(&config).await?;
    let harness = crate::harness::opencode::Opencode::new()
        .context("cannot start the opencode harness client")?;
    let opening = Core::open(config, runtime, Arc::new(harness));
    tokio::pin!(opening);
    // A store that is slow to answer is said at once, not after seconds of a blank terminal.
    tokio::select! {
        core = &mut opening => return core,
        () = tokio::time::sleep(Duration::from_secs(1)) => {
            eprintln!("agentdeck: waiting for the store at {store}…");
        }
    }
    opening.await
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    // Inside a sandbox: no configuration, no store.
    match &cli.command {
        Some(Command::Bootstrap {
            listen,
            gateway_listen,
            gateway,
            dir,
            model,
            render,
            command,
        }) => {
            return crate::bootstrap::run(crate::bootstrap::Options {
                listen: *listen,
                gateway_listen: *gateway_listen,
                gateway: gateway.clone(),
                dir: dir.clone(),
                model: model.clone(),
                render: render
                    .chunks(2)
                    .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())))
                    .collect(),
                command: command.clone(),
            })
            .await;
        }
        Some(Command::HandOver { dir }) => return crate::bootstrap::hand_over(dir).await,
        _ => {}
    }
    let listen = match &cli.command {
        Some(Command::Serve { listen, .. }) => listen.clone(),
        _ => None,
    };
    let config = load_config(&cli.global, listen)?;
    match cli.command {
        None => {
            use std::io::IsTerminal;
            if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
                eprintln!(
                    "agentdeck: the cockpit needs a terminal. For scripts use `agentdeck sessions list`, \
                     `agentdeck serve` (REST API on {}) or `agentdeck doctor`.",
                    config.listen
                );
                return Ok(EXIT_NOT_A_TERMINAL);
            }
            let remote: Option<Arc<dyn crate::deck::Deck>> =
                match servers_for(&cli.global, &config)? {
                    Servers::Here => None,
                    Servers::One(server) => Some(Arc::new(
                        crate::deck::Remote::connect(
                            &server.url,
                            server.token,
                            server.ca_file.as_deref(),
                            Arc::new(config.clone()),
                        )
                        .await
                        .map_err(anyhow::Error::msg)?,
                    )),
                    Servers::Several(servers) => Some(Arc::new(
                        crate::deck::Multi::connect(
                            servers
                                .into_iter()
                                .map(|(name, s)| (name, s.url, s.token, s.ca_file))
                                .collect(),
                            Arc::new(config.clone()),
                        )
                        .await
                        .map_err(anyhow::Error::msg)?,
                    )),
                };
            if let Some(deck) = remote {
                crate::tui::run(
                    deck,
                    crate::tui::Options {
                        theme: cli.theme.clone(),
                        read_only: cli.read_only,
                        mouse: cli.mouse,
                    },
                )
                .await?;
                return Ok(0);
            }
            let with_worker = config.worker.enabled;
            let core = open_core(config).await?;
            let worker = with_worker
                .then(|| crate::core::worker::spawn(core.clone(), crate::model::CoreKind::Cockpit));
            let deck: Arc<dyn crate::deck::Deck> =
                Arc::new(crate::deck::Embedded::new(core, crate::tui::operator()));
            let result = crate::tui::run(
                deck,
                crate::tui::Options {
                    theme: cli.theme.clone(),
                    read_only: cli.read_only,
                    mouse: cli.mouse,
                },
            )
            .await;
            if let Some(worker) = worker {
                worker.stop(Duration::from_secs(5)).await;
            }
            result.map(|()| 0)
        }
        Some(Command::Serve {
            no_worker,
            tls_cert,
            tls_key,
            ..
        }) => {
            let with_worker = config.worker.enabled && !no_worker;
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    Some(crate::api::tls::acceptor(&cert, &key).map_err(anyhow::Error::msg)?)
                }
                _ => None,
            };
            serve(config, with_worker, tls).await.map(|()| 0)
        }
        Some(Command::Worker) => worker(config).await.map(|()| 0),
        Some(Command::Migrate) => {
            let shown = crate::store::redact_url(&config.database_url);
            let store = crate::store::open(&config.database_url)
                .await
                .with_context(|| format!("cannot open the store at {shown}"))?;
            store.migrate().await.context("migration failed")?;
            println!("{shown}: schema is up to date");
            Ok(0)
        }
        // Run above, before any configuration is read.
        Some(Command::Bootstrap { .. } | Command::HandOver { .. }) => Ok(0),
        Some(Command::Doctor { output }) => Ok(if doctor::run(&config, output).await? {
            0
        } else {
            1
        }),
        Some(Command::Agents(AgentsCmd::List { output })) => {
            agents_list(&config, output)?;
            Ok(0)
        }
        Some(Command::Sessions(cmd)) => {
            let deck: Box<dyn crate::deck::Deck> = match server_choice(&cli.global, &config)? {
                Some(server) => {
                    // (following a transcript follows the server's changes; a command, none)
                    let (url, ca, config) =
                        (&server.url, server.ca_file.as_deref(), Arc::new(config));
                    let remote = match cmd {
                        SessionsCmd::Follow { .. } => {
                            crate::deck::Remote::connect(url, server.token, ca, config).await
                        }
                        _ => {
                            crate::deck::Remote::connect_for_commands(url, server.token, ca, config)
                                .await
                        }
                    };
                    Box::new(remote.map_err(anyhow::Error::msg)?)
                }
                None => Box::new(crate::deck::Embedded::new(
                    open_core(config).await?,
                    operator(),
                )),
            };
            match cmd {
                SessionsCmd::Shell { id } => shell(deck.as_ref(), &id).await,
                SessionsCmd::Follow { id, last } => follow(deck.as_ref(), &id, last).await,
                cmd => sessions(deck.as_ref(), cmd).await.map(|()| 0),
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

async fn serve(
    config: Config,
    with_worker: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    crate::api::check_listen(config.listen, !config.tokens.is_empty())
        .map_err(anyhow::Error::msg)?;
    let listen = config.listen;
    let core = open_core(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let worker = with_worker
        .then(|| crate::core::worker::spawn(core.clone(), crate::model::CoreKind::Serve));
    let reloads = core.reload_on_hangup();
    tracing::info!(
        %listen,
        store = %core.store_description(),
        worker = with_worker,
        "agentdeck serve is up"
    );
    eprintln!(
        "agentdeck serve: listening on {scheme}://{listen} (store: {})",
        core.store_description()
    );
    crate::api::serve(core, listener, tls, shutdown_signal())
        .await
        .context("the API server stopped")?;
    reloads.abort();
    if let Some(worker) = worker {
        worker.stop(Duration::from_secs(10)).await;
    }
    Ok(())
}

async fn worker(config: Config) -> Result<()> {
    let core = open_core(config).await?;
    let worker = crate::core::worker::spawn(core.clone(), crate::model::CoreKind::Worker);
    let reloads = core.reload_on_hangup();
    eprintln!(
        "agentdeck worker {} is running (store: {})",
        core.instance(),
        core.store_description()
    );
    shutdown_signal().await;
    reloads.abort();
    worker.stop(Duration::from_secs(10)).await;
    Ok(())
}

fn agents_list(config: &Config, output: Output) -> Result<()> {
    let agents: Vec<_> = config.agents.values().collect();
    match output {
        Output::Json => println!("{}", json(&agents)?),
        Output::Table => {
            let mut t = Table::new(&["ID", "NAME", "HARNESS", "MODEL", "IDLE TIMEOUT"]);
            for a in agents {
                t.row(vec![
                    a.id.clone(),
                    a.name.clone(),
                    a.harness.as_str().to_string(),
                    a.model.clone(),
                    humantime::format_duration(a.idle_timeout).to_string(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}

fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--env {pair:?}: write it as NAME=VALUE");
        };
        env.insert(name.to_string(), value.to_string());
    }
    Ok(env)
}

fn session_table(sessions: &[crate::model::Session]) -> String {
    let mut t = Table::new(&[
        "ID", "STATUS", "AGENT", "TEAM", "PHASE", "CREATED", "COST", "TITLE",
    ]);
    for s in sessions {
        t.row(vec![
            s.short_id(),
            s.status.word().to_string(),
            s.agent_id.clone(),
            s.team.clone(),
            s.phase.to_string(),
            ago(s.created_at),
            s.usage.cost_text(),
            s.title.clone(),
        ]);
    }
    t.render()
}

/// `sessions diff`: each turn that changed files, then its patches (or, with `stat`, each
/// file's counts). The patches are untrusted text: escape sequences are removed.
fn diff_text(turns: &[crate::model::TurnDiff], stat: bool) -> String {
    let mut out = String::new();
    for turn in turns {
        out.push_str(&format!(
            "# turn #{}: {}\n",
            turn.seq,
            crate::sanitize::line(&turn.asked)
        ));
        for f in &turn.files {
            if stat {
                out.push_str(&format!(
                    "{} | +{} -{}{}\n",
                    crate::sanitize::line(&f.file),
                    f.additions,
                    f.deletions,
                    f.status
                        .as_deref()
                        .map(|s| format!(" ({})", crate::sanitize::line(s)))
                        .unwrap_or_default()
                ));
            } else {
                out.push_str(&crate::sanitize::text(&f.patch));
                if !f.patch.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// A session's tokens, cost and budget, for `sessions show`.
fn usage_lines(s: &crate::model::Session) -> String {
    let u = &s.usage;
    let mut out = format!(
        "tokens: {} in, {} out, {} reasoning, {} cache read, {} cache write\ncost: {}",
        u.input,
        u.output,
        u.reasoning,
        u.cache_read,
        u.cache_write,
        u.cost_text()
    );
    if u.unpriced > 0 {
        out.push_str(&format!(
            " ({} message(s) at a price the gateway does not know)",
            u.unpriced
        ));
    }
    if let (Some(budget), Some(spent)) = (s.budget_usd, s.budget_spent()) {
        out.push_str(&format!(
            "\nbudget: {} ({:.0}% spent{})",
            crate::model::usd(budget),
            spent * 100.0,
            if spent >= 1.0 {
                ": it takes no new turn until the budget is raised"
            } else if spent >= crate::model::BUDGET_WARN {
                ": nearly spent"
            } else {
                ""
            }
        ));
    }
    out
}

/// Who acts from this command line, for the session's history: `cli:$USER`.
fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// `sessions follow`: the last `last` messages, then each one once it is whole (a person's at
/// once, an agent's when its turn part is complete), until the session ends or ctrl-c.
async fn follow(deck: &dyn crate::deck::Deck, id: &str, last: i64) -> Result<i32> {
    use crate::core::Change;
    let id = deck.resolve(id).await?;
    // Subscribed before reading: nothing that changes meanwhile is missed.
    let mut feed = deck.changes();
    let session = deck.session(id).await?;
    println!(
        "-- {} ({}), {}; ctrl-c stops following",
        crate::sanitize::line(&session.title),
        session.agent_id,
        session.status.word()
    );
    let mut after = (session.last_message_seq - last.max(0)).max(0);
    print_whole(deck, id, &mut after).await?;
    loop {
        let change = tokio::select! {
            change = feed.next() => change,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        match change {
            None => bail!("the feed of changes ended"),
            Some(Change::Message { session, .. }) if session == id => {
                print_whole(deck, id, &mut after).await?
            }
            Some(Change::Resync) => print_whole(deck, id, &mut after).await?,
            Some(Change::Session(s)) if s == id => {
                let session = deck.session(id).await?;
                if session.status.is_terminal() {
                    print_whole(deck, id, &mut after).await?;
                    println!("-- the session is {}", session.status.word());
                    return Ok(0);
                }
            }
            _ => {}
        }
    }
}

/// Prints the messages after `after` that are whole, in order, and moves `after` past them; it
/// stops at the first still being written (printed once it is).
async fn print_whole(deck: &dyn crate::deck::Deck, id: Uuid, after: &mut i64) -> Result<()> {
    use crate::model::{MessageRole, MessageStatus};
    let messages = deck.messages(id, *after, 1000).await?;
    for m in messages {
        let writing = m.role == MessageRole::Assistant && m.status == MessageStatus::Pending;
        if writing {
            break;
        }
        println!(
            "#{} {}{}: {}",
            m.seq,
            m.role,
            match m.status {
                MessageStatus::Complete | MessageStatus::Pending => String::new(),
                other => format!(" ({other})"),
            },
            crate::sanitize::text(&m.text())
        );
        *after = m.seq;
    }
    use std::io::Write;
    std::io::stdout()
        .flush()
        .context("cannot write to standard output")?;
    Ok(())
}

/// `sessions shell`: the shell on this terminal; agentdeck exits with the shell's status.
async fn shell(deck: &dyn crate::deck::Deck, id: &str) -> Result<i32> {
    let id = deck.resolve(id).await?;
    let shell = deck.shell(id, &crate::console::options()).await?;
    eprintln!("{}", crate::console::banner(&shell).replace('\r', ""));
    let ended = crate::console::run(shell).await?;
    tracing::info!(session = %id, %ended, "shell ended");
    Ok(match ended {
        crate::console::Ended::Exited(code) => code,
        crate::console::Ended::Left => {
            eprintln!("\r\nagentdeck: left the shell (~.)");
            0
        }
        crate::console::Ended::Failed(why) => {
            eprintln!("\r\nagentdeck: {why}");
            1
        }
    })
}

/// The `sessions` commands, on a deck: the store and runtime of this machine, or `serve`
/// (`--server`) with a team's token.
async fn sessions(deck: &dyn crate::deck::Deck, cmd: SessionsCmd) -> Result<()> {
    use crate::model::Command as Do;
    match cmd {
        SessionsCmd::List {
            team,
            agent,
            status,
            limit,
            output,
        } => {
            let statuses = if status.is_empty() {
                None
            } else {
                Some(
                    status
                        .iter()
                        .map(|s| SessionStatus::from_word(s.trim()))
                        .collect::<Result<Vec<_>, _>>()?
                        .concat(),
                )
            };
            let sessions = deck
                .list(&SessionQuery {
                    teams: team.map(|t| vec![t]),
                    agent_id: agent,
                    statuses,
                    limit: Some(limit.clamp(1, 100_000)),
                    ..Default::default()
                })
                .await?;
            match output {
                Output::Json => println!("{}", json(&sessions)?),
                Output::Table => print!("{}", session_table(&sessions)),
            }
        }
        SessionsCmd::Show { id, output } => {
            let id = deck.resolve(&id).await?;
            let session = deck.session(id).await?;
            let from = (session.last_message_seq - 20).max(0);
            let messages = deck.messages(id, from, 20).await?;
            match output {
                Output::Json => println!(
                    "{}",
                    json(&serde_json::json!({"session": session, "messages": messages}))?
                ),
                Output::Table => {
                    print!("{}", session_table(std::slice::from_ref(&session)));
                    if let Some(reason) = &session.failure_reason {
                        println!("\nfailed: {}", crate::sanitize::line(reason));
                    }
                    if let Some(detail) = &session.phase_detail {
                        println!("phase detail: {}", crate::sanitize::line(detail));
                    }
                    println!("{}", usage_lines(&session));
                    if !messages.is_empty() {
                        println!();
                        for m in &messages {
                            println!(
                                "#{} {} ({}): {}",
                                m.seq,
                                m.role,
                                m.status,
                                crate::sanitize::text(&m.text())
                            );
                        }
                    }
                }
            }
        }
        SessionsCmd::Create {
            agent,
            title,
            prompt,
            env,
            team,
            output,
        } => {
            let session = deck
                .create(CreateSession {
                    agent_id: agent,
                    title,
                    initial_prompt: prompt,
                    env: parse_env(&env)?,
                    team,
                })
                .await?;
            match output {
                Output::Json => println!("{}", json(&session)?),
                Output::Table => {
                    print!("{}", session_table(std::slice::from_ref(&session)));
                    eprintln!(
                        "queued: a worker (`agentdeck serve`, `agentdeck worker` or a cockpit) provisions it"
                    );
                }
            }
        }
        SessionsCmd::Diagnose { id, output } => {
            let diagnosis = deck.diagnose(deck.resolve(&id).await?).await?;
            match output {
                Output::Json => println!("{}", json(&diagnosis.to_json())?),
                Output::Table => print!("{}", diagnosis_text(&diagnosis)),
            }
        }
        SessionsCmd::Asks {
            id,
            pending,
            output,
        } => {
            let asks = deck.asks(deck.resolve(&id).await?, pending).await?;
            match output {
                Output::Json => println!("{}", json(&asks)?),
                Output::Table => print!("{}", asks_table(&asks)),
            }
        }
        SessionsCmd::Answer {
            id,
            ask,
            reply,
            message,
            labels,
            reject,
            output,
        } => {
            let answer = match (reply, labels.is_empty(), reject) {
                (Some(reply), true, false) => crate::model::Answer::Permission {
                    reply: reply.parse()?,
                    message,
                },
                (None, false, false) => crate::model::Answer::Question {
                    answers: labels.into_iter().map(|label| vec![label]).collect(),
                },
                (None, true, true) => crate::model::Answer::RejectQuestion,
                _ => anyhow::bail!(
                    "answer a permission with --reply once|always|reject, or a question with --label (or --reject)"
                ),
            };
            let answered = deck.answer(deck.resolve(&id).await?, &ask, answer).await?;
            match output {
                Output::Json => println!("{}", json(&answered)?),
                Output::Table => print!("{}", asks_table(std::slice::from_ref(&answered))),
            }
        }
        SessionsCmd::Fork { id, at, output } => {
            print_session(&deck.fork(deck.resolve(&id).await?, at).await?, output)?
        }
        // (run on their own before: they take the terminal, they follow changes)
        SessionsCmd::Shell { .. } => bail!("`sessions shell` runs on its own"),
        SessionsCmd::Follow { .. } => bail!("`sessions follow` runs on its own"),
        SessionsCmd::Rename { id, title, output } => {
            let session = deck.rename(deck.resolve(&id).await?, &title).await?;
            print_session(&session, output)?
        }
        SessionsCmd::Diff { id, stat, output } => {
            let turns = deck.diffs(deck.resolve(&id).await?).await?;
            match output {
                Output::Json => println!("{}", json(&turns)?),
                Output::Table if turns.is_empty() => eprintln!(
                    "no file changes recorded (the harness reports them where the sandbox's \
                     folder is a git repository and git is installed)"
                ),
                Output::Table => print!("{}", diff_text(&turns, stat)),
            }
        }
        SessionsCmd::Budget { id, usd, output } => {
            let usd =
                match usd.trim().trim_start_matches('$') {
                    "none" => None,
                    amount => Some(amount.parse::<f64>().map_err(|_| {
                        anyhow::anyhow!("{usd:?} is not an amount of USD (or `none`)")
                    })?),
                };
            let session = deck.set_budget(deck.resolve(&id).await?, usd).await?;
            match output {
                Output::Json => println!("{}", json(&session)?),
                Output::Table => println!("{}", usage_lines(&session)),
            }
        }
        SessionsCmd::Send { id, text, output } => {
            let text = if text == "-" {
                let mut read = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut read)
                    .context("cannot read the message from standard input")?;
                read
            } else {
                text
            };
            if text.trim().is_empty() {
                bail!("the message is empty: nothing was sent");
            }
            let message = deck.send(deck.resolve(&id).await?, &text).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&message)?),
                Output::Table => println!(
                    "message #{} stored ({})",
                    message.seq,
                    message.status.as_str()
                ),
            }
        }
        SessionsCmd::Restart { id, output } => print_session(
            &deck.command(deck.resolve(&id).await?, Do::Restart).await?,
            output,
        )?,
        SessionsCmd::Suspend { id, output } => print_session(
            &deck.command(deck.resolve(&id).await?, Do::Suspend).await?,
            output,
        )?,
        SessionsCmd::Resume { id, output } => print_session(
            &deck.command(deck.resolve(&id).await?, Do::Resume).await?,
            output,
        )?,
        SessionsCmd::Abort { id, output } => print_session(
            &deck.command(deck.resolve(&id).await?, Do::Abort).await?,
            output,
        )?,
        SessionsCmd::End { id, output } => print_session(
            &deck.command(deck.resolve(&id).await?, Do::End).await?,
            output,
        )?,
    }
    Ok(())
}

/// Asks as a table: what was asked (sanitised: it comes from the agent) and its answer.
fn asks_table(asks: &[crate::model::Ask]) -> String {
    use crate::sanitize::line;
    let mut table = Table::new(&["ID", "KIND", "STATUS", "ASKED", "WHAT", "ANSWER", "BY"]);
    for a in asks {
        let what = a.summary();
        let answer = a
            .answer_said()
            .or_else(|| a.answer.as_ref().map(ToString::to_string))
            .unwrap_or_default();
        table.row(vec![
            a.id.clone(),
            a.kind.to_string(),
            a.status.to_string(),
            a.asked_at.format("%F %T").to_string(),
            line(&what),
            line(&answer),
            a.answered_by.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

fn print_session(session: &Session, output: Output) -> Result<()> {
    match output {
        Output::Json => println!("{}", json(session)?),
        Output::Table => print!("{}", session_table(std::slice::from_ref(session))),
    }
    Ok(())
}

/// A diagnosis as plain text: the advice first, then what it rests on (sanitised: the failure,
/// the log and the events come from agents and pods).
fn diagnosis_text(d: &crate::core::Diagnosis) -> String {
    use crate::sanitize::line;
    use std::fmt::Write;
    let s = &d.session;
    let mut out = String::from("What to do\n");
    for a in d.advice() {
        let _ = writeln!(out, "  - {}", line(&a));
    }
    let _ = writeln!(
        out,
        "\nSession {}\n  status    {} ({})",
        s.id,
        s.status.word(),
        s.phase
    );
    if let Some(detail) = &s.phase_detail {
        let _ = writeln!(out, "  detail    {}", line(detail));
    }
    if let Some(reason) = &s.failure_reason {
        let _ = writeln!(out, "  failure   {}", line(reason));
    }
    let _ = writeln!(out, "\nPhase history (latest last)");
    for e in &d.phases {
        let phase = e.payload["phase"].as_str().unwrap_or("?");
        let detail = e.payload["detail"]
            .as_str()
            .or(e.payload["failure_reason"].as_str())
            .unwrap_or("");
        let _ = writeln!(
            out,
            "  {}  {phase:<17} {}",
            e.at.format("%F %T"),
            line(detail)
        );
    }
    let _ = writeln!(out, "\nSandbox");
    match &d.health {
        None => out.push_str("  no sandbox\n"),
        Some(Err(e)) => {
            let _ = writeln!(out, "  unknown: {}", line(e));
        }
        Some(Ok(h)) => {
            let _ = writeln!(
                out,
                "  {}{}  restarts {}  last exit {}",
                h.phase.as_str(),
                h.reason
                    .as_deref()
                    .map(|r| format!(" ({})", line(r)))
                    .unwrap_or_default(),
                h.restarts,
                h.last_termination
                    .as_deref()
                    .map(line)
                    .unwrap_or("-".into())
            );
            for e in &h.recent_events {
                let _ = writeln!(
                    out,
                    "  event {} {}: {}",
                    e.kind,
                    line(&e.reason),
                    line(&e.message)
                );
            }
        }
    }
    let _ = writeln!(out, "\nLog (last lines)");
    match &d.log_tail {
        Ok(lines) if lines.is_empty() => out.push_str("  (empty)\n"),
        Ok(lines) => {
            for l in lines {
                let _ = writeln!(out, "  {}", line(l));
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  cannot read it: {}", line(e));
        }
    }
    let _ = writeln!(
        out,
        "\nGateway\n  {}",
        match &d.gateway {
            Ok(()) => "answering".to_string(),
            Err(e) => format!("not answering: {}", line(e)),
        }
    );
    out
}
