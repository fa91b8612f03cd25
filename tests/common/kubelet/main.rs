//! `test-kubelet`: the tests' kubelet (tests/common/kubelet) as a program, for a long-running
//! node of `scripts/test-cluster.sh` (the namespace `agentdeck`, so that sessions made from the
//! cockpit get running pods). Runs until SIGTERM or SIGINT, then kills its processes and
//! deletes its Node.
//!
//! ```sh
//! cargo run --example test-kubelet -- --kubeconfig admin.kubeconfig --node n1 \
//!     --namespace agentdeck --root /tmp/kubelet [--tls-cert kubelet.crt --tls-key kubelet.key]
//! ```
//! Logs go to stderr (`RUST_LOG`, default `info`).

#[path = "mod.rs"]
mod kubelet;

use anyhow::Context as _;
use clap::Parser;
use std::io::IsTerminal as _;
use std::path::PathBuf;

/// The tests' kubelet: runs the pods of a real API server's Node as local processes.
#[derive(Parser)]
#[command(name = "test-kubelet")]
struct Args {
    /// A kubeconfig with rights on nodes, pods, events, secrets and configmaps.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Node's name.
    #[arg(long)]
    node: String,
    /// A namespace whose unscheduled pods go to this node (repeat for more).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// The kubelet's folder: pods' volumes and logs, its certificate.
    #[arg(long)]
    root: PathBuf,
    /// The HTTPS server's certificate (PEM); without it a self-signed one is made in the root.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The HTTPS server's key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("using {}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(config).context("a client of the API server")?;
    let kubelet = kubelet::TestKubelet::start(kubelet::KubeletOptions {
        client,
        node: args.node,
        namespaces: args.namespaces,
        root: args.root,
        tls: args.tls_cert.zip(args.tls_key),
    })
    .await?;
    tracing::info!(
        node = kubelet.node(),
        port = kubelet.port(),
        "running; SIGTERM or SIGINT stops"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    kubelet.stop().await
}
