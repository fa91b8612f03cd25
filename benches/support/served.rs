//! The real `agentdeck serve` as a process of its own (for benches of the cockpit as its
//! client), a tiny HTTP client to ask it things without touching the connections being
//! measured, and the bytes on its TCP connections as the kernel counts them (`ss -ti`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary this `cargo bench` (or `cargo test`) built.
pub const BINARY: &str = env!("CARGO_BIN_EXE_agentdeck");

/// A token long enough for `[[api.tokens]]` (16 characters at least).
pub const TOKEN: &str = "bench-token-0123456789abcdef";

/// A port nothing listens on now (another program may take it before we do: unlikely here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `agentdeck serve` on 127.0.0.1, killed when dropped.
pub struct Serve {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve --no-worker` on `database_url` in a home of its own under `home`, with
    /// [`TOKEN`] mapped to `team` (`*`: every team), and waits (at most 60 s) until it answers
    /// `GET /healthz`. No worker: nothing but the cockpit's requests happens in it.
    pub fn start(home: &Path, database_url: &str, team: &str) -> Serve {
        std::fs::create_dir_all(home).expect("serve's home");
        let config = home.join("serve.toml");
        std::fs::write(
            &config,
            format!("[[api.tokens]]\ntoken = \"{TOKEN}\"\nteam = \"{team}\"\nname = \"bench\"\n"),
        )
        .expect("write serve's config");
        let port = free_port();
        let log = home.join("serve.log");
        let child = Command::new(BINARY)
            .args([
                "serve",
                "--no-worker",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("AGENTDECK_CONFIG", &config)
            .env("AGENTDECK_DATABASE_URL", database_url)
            .env("AGENTDECK_RUNTIME", "local")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("serve's log"))
            .spawn()
            .expect("start agentdeck serve");
        let mut serve = Serve { child, port, log };
        serve.wait_until_it_answers(Duration::from_secs(60));
        serve
    }

    fn wait_until_it_answers(&mut self, within: Duration) {
        let started = Instant::now();
        loop {
            if get(self.port, "/healthz").is_some_and(|(status, _)| status == 200) {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "serve ended ({exit}) before it answered; {}",
                    self.log_text()
                );
            }
            if started.elapsed() > within {
                panic!(
                    "serve did not answer /healthz within {within:?}; {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        format!(
            "its log ({}):\n{}",
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port` over a connection of its own (HTTP/1.0: the server closes it
/// after the answer, so it is gone from the established connections measured); the status and
/// the body, or `None` when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The requests the server at `port` has answered so far, by `METHOD route status`, from its
/// `/metrics` (`agentdeck_http_requests_total`; a request is counted once its handler answered,
/// so a stream is counted as soon as it is open).
pub fn requests(port: u16) -> BTreeMap<String, u64> {
    let Some((200, text)) = get(port, "/metrics") else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("agentdeck_http_requests_total{"))
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once("} ")?;
            let label = |name: &str| {
                let (_, rest) = labels.split_once(&format!("{name}=\""))?;
                rest.split_once('"').map(|(v, _)| v.to_string())
            };
            Some((
                format!(
                    "{} {} {}",
                    label("method")?,
                    label("route")?,
                    label("status")?
                ),
                n.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// How many `GET route` requests answered 200 the server at `port` has counted.
pub fn answered(port: u16, route: &str) -> u64 {
    requests(port)
        .get(&format!("GET {route} 200"))
        .copied()
        .unwrap_or(0)
}

/// What the kernel counted on one TCP connection, seen from the server's end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counted {
    /// Payload bytes the server sent (`bytes_sent`; `bytes_acked` on older kernels).
    pub sent: u64,
    /// Payload bytes the server received (`bytes_received`).
    pub received: u64,
    /// Segments both ways, pure acknowledgements included (`segs_out` + `segs_in`).
    pub segments: u64,
}

/// The established connections to 127.0.0.1:`port` now, by the client's address, from
/// `ss -tinH state established '( sport = :PORT )'` (iproute2).
pub fn connections(port: u16) -> BTreeMap<String, Counted> {
    let out = Command::new("ss")
        .args([
            "-tinH",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("run ss (iproute2)");
    parse_ss(&String::from_utf8_lossy(&out.stdout))
}

/// `ss -tinH` prints a line per connection (queues, local address, peer address), then an
/// indented line of its TCP info (`bytes_sent:N … segs_in:N …`).
fn parse_ss(text: &str) -> BTreeMap<String, Counted> {
    let mut out = BTreeMap::new();
    let mut peer: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            peer = line.split_whitespace().nth(3).map(str::to_string);
            continue;
        }
        let Some(peer) = peer.take() else { continue };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        out.insert(
            peer,
            Counted {
                sent: field("bytes_sent:")
                    .or_else(|| field("bytes_acked:"))
                    .unwrap_or(0),
                received: field("bytes_received:").unwrap_or(0),
                segments: field("segs_out:").unwrap_or(0) + field("segs_in:").unwrap_or(0),
            },
        );
    }
    out
}

/// Follows the connections to a port over a window: each connection's counts at its first and
/// last sight (a connection opened during the window counts from zero; one closed during it
/// counts until it was last seen, at most a poll's interval short).
#[derive(Default)]
pub struct Wire {
    first: BTreeMap<String, Counted>,
    last: BTreeMap<String, Counted>,
}

impl Wire {
    /// Starts with the connections open now.
    pub fn start(port: u16) -> Wire {
        let now = connections(port);
        Wire {
            first: now.clone(),
            last: now,
        }
    }

    /// Looks again (call it every second or so).
    pub fn poll(&mut self, port: u16) {
        for (peer, counted) in connections(port) {
            self.first.entry(peer.clone()).or_default();
            self.last.insert(peer, counted);
        }
    }

    /// How many connections were seen.
    pub fn connections(&self) -> usize {
        self.last.len()
    }

    /// What passed on them between the first and the last look, all connections together.
    pub fn total(&self) -> Counted {
        let mut total = Counted::default();
        for (peer, last) in &self.last {
            let first = self.first.get(peer).copied().unwrap_or_default();
            total.sent += last.sent.saturating_sub(first.sent);
            total.received += last.received.saturating_sub(first.received);
            total.segments += last.segments.saturating_sub(first.segments);
        }
        total
    }
}
