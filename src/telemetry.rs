//! Logging. `serve` and `worker` log to stderr; one-shot commands log only warnings; the
//! cockpit logs to a file in the state dir (never to the screen it draws on).

use tracing_subscriber::EnvFilter;

pub enum Sink {
    Stderr { default: &'static str },
    File(std::path::PathBuf),
}

pub fn init(filter: Option<&str>, sink: Sink) -> anyhow::Result<()> {
    let default = match &sink {
        Sink::Stderr { default } => *default,
        Sink::File(_) => "info",
    };
    let filter = match filter {
        Some(f) => {
            EnvFilter::try_new(f).map_err(|e| anyhow::anyhow!("invalid log filter {f:?}: {e}"))?
        }
        None => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match sink {
        Sink::Stderr { .. } => builder.with_writer(std::io::stderr).init(),
        Sink::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
    }
    Ok(())
}
