//! The REST API of a real `agentdeck serve` process, as the end-to-end and fleet tests drive it:
//! the process (stopped on drop), its client, and waits for what its sessions say.

use super::{agentdeck, eventually};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

pub const TURN: Duration = Duration::from_secs(90);

pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    /// The REST API of the `agentdeck serve` listening on `port`, once it answers.
    pub async fn answering(port: u16) -> Api {
        let api = Api {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
        };
        eventually(Duration::from_secs(30), "serve to answer", || async {
            api.http
                .get(format!("{}/healthz", api.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        api
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap_or(Value::Null)
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    pub async fn messages(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/api/sessions/{id}/messages?limit=1000"))
            .await["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    /// Waits until the last message is a complete assistant reply whose text contains `want`.
    pub async fn reply_containing(&self, id: &str, want: &str) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let messages = self.messages(id).await;
            let done = messages.last().is_some_and(|last| {
                let text: String = last["parts"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p["text"].as_str()).collect())
                    .unwrap_or_default();
                last["role"] == "assistant" && last["status"] == "complete" && text.contains(want)
            });
            if done {
                return messages;
            }
            if start.elapsed() > TURN {
                let session = self.get(&format!("/api/sessions/{id}")).await;
                panic!(
                    "no reply containing {want:?} within {TURN:?}\nsession: {session}\nmessages: {}",
                    serde_json::to_string_pretty(&texts(&messages)).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn start_serve(root: &Path, db: &str, stack: &super::stack::Stack, port: u16) -> Serve {
    start_serve_with(root, db, stack, port, "")
}

/// `agentdeck serve` with agent `coder` (opencode on the scripted model), and `extra` config.
pub fn start_serve_with(
    root: &Path,
    db: &str,
    stack: &super::stack::Stack,
    port: u16,
    extra: &str,
) -> Serve {
    start_serve_logged(root, db, stack, port, extra, "serve.log")
}

/// The config the real processes of these tests run with: agent `coder` (opencode on the
/// scripted model), and `extra`; written to `root/agentdeck.toml`, whose path is returned.
pub fn write_config(root: &Path, extra: &str) -> std::path::PathBuf {
    let config = root.join("agentdeck.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.coder]\nmodel = \"litellm/scripted\"\n\
             command = [\"opencode\", \"serve\", \"--hostname\", \"{{host}}\", \"--port\", \"{{port}}\"]\n\
             {extra}\n[sessions]\nphase_timeout = \"90s\"\n"
        ),
    )
    .unwrap();
    config
}

/// As [`start_serve_with`], logging to `root/log` (several serves sharing one data dir, as
/// processes of one machine do).
pub fn start_serve_logged(
    root: &Path,
    db: &str,
    stack: &super::stack::Stack,
    port: u16,
    extra: &str,
    log: &str,
) -> Serve {
    let config = write_config(root, extra);
    let log = std::fs::File::create(root.join(log)).unwrap();
    let child = agentdeck(root)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("AGENTDECK_CONFIG", &config)
        .env("AGENTDECK_DATABASE_URL", db)
        .env("AGENTDECK_GATEWAY_URL", &stack.gateway_url)
        .env("PATH", &stack.path)
        .env("AGENTDECK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Serve(child)
}

/// Asserts the transcript's seqs run on without a gap.
pub fn assert_in_order(messages: &[Value]) {
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the transcript is in order, with no gap: {seqs:?}"
    );
}

pub fn texts(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let text: String = m["parts"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["text"].as_str()).collect())
                .unwrap_or_default();
            (m["role"].as_str().unwrap_or("").to_string(), text)
        })
        .collect()
}
