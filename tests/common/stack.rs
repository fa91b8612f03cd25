//! The real agent stack (a LiteLLM gateway with mock and scripted models, and opencode), from
//! `scripts/offline-stack.sh`: installed once into the cache dir, started on first use.
//!
//! Outside CI a test that needs it is skipped, loudly, when it cannot be had; with
//! `AGENTDECK_E2E_REQUIRED=1` (set by scripts/test.sh) its absence fails the test.

use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Stack {
    pub gateway_url: String,
    /// PATH with opencode on it.
    pub path: String,
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/offline-stack.sh")
}

/// The running stack, starting (and, the first time, installing) it if needed.
pub fn stack() -> Option<Stack> {
    let out = Command::new("bash").arg(script()).arg("up").output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => return skip(&String::from_utf8_lossy(&out.stderr)),
        Err(e) => return skip(&e.to_string()),
    };
    let mut gateway_url = None;
    let mut path_prefix = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(v) = line.strip_prefix("export AGENTDECK_GATEWAY_URL=") {
            gateway_url = Some(v.trim().to_string());
        }
        if let Some(v) = line.strip_prefix("export PATH=") {
            path_prefix = v.split(':').next().map(|p| p.trim_matches('"').to_string());
        }
    }
    let (Some(gateway_url), Some(prefix)) = (gateway_url, path_prefix) else {
        return skip("offline-stack.sh up printed no gateway URL or PATH");
    };
    let path = format!("{prefix}:{}", std::env::var("PATH").unwrap_or_default());
    Some(Stack { gateway_url, path })
}

fn skip(why: &str) -> Option<Stack> {
    if std::env::var("AGENTDECK_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("the offline agent stack is required here but could not be started: {why}");
    }
    eprintln!(
        "\n==========\nSKIPPED: the offline agent stack (LiteLLM + opencode) is not available: {why}\n\
         Run `scripts/offline-stack.sh up` to install it (needs PyPI and npm).\n==========\n"
    );
    None
}
