use agentdeck::cli::{Cli, Command};
use agentdeck::telemetry::{self, Sink};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    let sink = match &cli.command {
        Some(Command::Serve { .. } | Command::Worker | Command::Bootstrap { .. }) => {
            Sink::Stderr { default: "info" }
        }
        // The cockpit draws on the terminal: its logs go to a file in the state dir.
        None => match agentdeck::config::Dirs::discover() {
            Ok(dirs) => Sink::File(dirs.state_dir.join("agentdeck.log")),
            Err(_) => Sink::Stderr { default: "error" },
        },
        _ => Sink::Stderr { default: "warn" },
    };
    if let Err(err) = telemetry::init(cli.global.log.as_deref(), sink) {
        eprintln!("agentdeck: {err:#}");
        std::process::exit(1);
    }
    agentdeck::net::ensure_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("agentdeck: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(agentdeck::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentdeck: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
