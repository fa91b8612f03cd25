//! The deck of a cockpit that is a client of `serve` (`agentdeck --server URL`): every read and
//! every action goes through `serve`'s REST API with the operator's token, limited to the
//! token's team; this process holds no database or cluster credentials and opens no
//! port-forwards. What changes comes on one stream (`GET /api/changes`), followed again by
//! itself when it drops: the top bar says "reconnecting", and the first event of every
//! connection makes the cockpit read again what it shows, so nothing is missed.

use super::sse::{self, SseEvent};
use super::{Connectivity, Deck, ServerLink, ServerState};
use crate::config::{AgentSpec, Config};
use crate::core::live::Live;
use crate::core::{
    AttachedShell, Change, ChangeFeed, CoreError, CreateSession, Diagnosis, FleetRow, Reloaded,
    Result, Shell, ShellOptions,
};
use crate::model::{Answer, Ask, AskKind, Command, Message, Session, SessionQuery};
use crate::runtime::{HealthChange, LogOptions, LogStream, RuntimeError, SandboxRef};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// How long a request may take (streams have no limit).
const REQUEST_WAIT: Duration = Duration::from_secs(30);
/// Longest wait between two tries to follow the change stream again.
const RECONNECT_MOST: Duration = Duration::from_secs(5);

/// Where the link to `serve` stands, for the top bar.
#[derive(Debug, Clone, PartialEq)]
enum Link {
    Connecting,
    Connected,
    Reconnecting(String),
    Refused(String),
}

struct Shared {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    streams: reqwest::Client,
    /// For the shell's WebSocket: HTTP/1.1, the only one that upgrades.
    upgrades: reqwest::Client,
    changes: broadcast::Sender<Change>,
    health: broadcast::Sender<HealthChange>,
    link: Mutex<Link>,
    /// Whether the server has said who the token is (and its agents) yet.
    introduced: AtomicBool,
    /// The token may read and never act.
    read_only: AtomicBool,
    agents: RwLock<Vec<AgentSpec>>,
    /// Sessions as the change stream last sent them: the cockpit reads each one it hears of,
    /// and gets it from here without a round trip.
    fresh: Mutex<HashMap<Uuid, Session>>,
    /// Whether the change stream is followed (a cockpit's deck), and whether it has opened
    /// yet: what is read once it is open misses nothing, so the stream's opening `resync`
    /// (read everything again) is needed only by what was read before (`early_lists`: lists,
    /// sessions, messages).
    followed: AtomicBool,
    opened: watch::Sender<bool>,
    early_lists: AtomicUsize,
}

/// How long a list waits for the change stream to open before it is read anyway.
const OPENING_WAIT: Duration = Duration::from_secs(2);

pub struct Remote {
    shared: Arc<Shared>,
    config: RwLock<Arc<Config>>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(f) = &self.follower {
            f.abort();
        }
    }
}

/// Whether a token may be sent to `url`: over TLS, or to this machine.
fn safe_for_a_token(url: &reqwest::Url) -> bool {
    if url.scheme() == "https" {
        return true;
    }
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Changes held for a cockpit that is slow to take them (then it reads everything again).
const CHANGES_HELD: usize = 4096;

impl Remote {
    /// Connects to `serve` at `url` with `token` (checked at once: a wrong one is said now,
    /// not as a blank screen), and starts following its change stream (a cockpit).
    pub async fn connect(
        url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        config: Arc<Config>,
    ) -> std::result::Result<Remote, String> {
        let remote = Remote::open(url, token, ca_file, config)?;
        remote.shared.introduce().await.map_err(|e| e.to_string())?;
        Ok(remote.following())
    }

    /// Like [`Remote::connect`], for one of several servers: a server that does not answer
    /// yet, or refuses the token, is no error here. The deck says so (`connectivity`) and keeps
    /// trying by itself, as it does after a drop; only an address or a file that cannot be
    /// used is an error.
    pub fn connect_in_background(
        url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        config: Arc<Config>,
    ) -> std::result::Result<Remote, String> {
        Ok(Remote::open(url, token, ca_file, config)?.following())
    }

    /// Connects for a command run once (`agentdeck --server URL sessions …`): no change stream.
    pub async fn connect_for_commands(
        url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        config: Arc<Config>,
    ) -> std::result::Result<Remote, String> {
        let remote = Remote::open(url, token, ca_file, config)?;
        remote.shared.introduce().await.map_err(|e| e.to_string())?;
        Ok(remote)
    }

    /// Starts following the change stream (a cockpit's deck).
    fn following(mut self) -> Remote {
        self.shared.followed.store(true, Ordering::Relaxed);
        self.follower = Some(tokio::spawn(follow(self.shared.clone())));
        self
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        &self.shared.base
    }

    /// How the link to the server stands now.
    pub fn link(&self) -> ServerLink {
        let link = self
            .shared
            .link
            .lock()
            .map(|l| l.clone())
            .unwrap_or(Link::Connecting);
        match link {
            Link::Connected => ServerLink::Connected,
            Link::Connecting => ServerLink::Reconnecting("connecting".into()),
            Link::Reconnecting(why) => ServerLink::Reconnecting(why),
            Link::Refused(why) => ServerLink::Refused(why),
        }
    }

    fn open(
        url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        config: Arc<Config>,
    ) -> std::result::Result<Remote, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("--server {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "--server {url:?}: use an http:// or https:// address"
            ));
        }
        if token.is_some() && !safe_for_a_token(&parsed) {
            return Err(format!(
                "refusing to send a token to {url} over plain HTTP: use https://, or a loopback \
                 address"
            ));
        }
        crate::net::ensure_crypto();
        let ca = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                Some(
                    reqwest::Certificate::from_pem(&pem)
                        .map_err(|e| format!("--ca-file {}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        let client = |builder: reqwest::ClientBuilder| {
            let builder = match &ca {
                Some(ca) => builder.add_root_certificate(ca.clone()),
                None => builder,
            };
            builder
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))
        };
        let http = client(reqwest::Client::builder().timeout(REQUEST_WAIT))?;
        let streams = client(reqwest::Client::builder().connect_timeout(REQUEST_WAIT))?;
        let upgrades = client(
            reqwest::Client::builder()
                .connect_timeout(REQUEST_WAIT)
                .http1_only(),
        )?;
        let shared = Arc::new(Shared {
            base: url.trim_end_matches('/').to_string(),
            token,
            http,
            streams,
            upgrades,
            changes: broadcast::channel(CHANGES_HELD).0,
            health: broadcast::channel(1024).0,
            link: Mutex::new(Link::Connecting),
            introduced: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            agents: RwLock::new(Vec::new()),
            fresh: Mutex::new(HashMap::new()),
            followed: AtomicBool::new(false),
            opened: watch::channel(false).0,
            early_lists: AtomicUsize::new(0),
        });
        Ok(Remote {
            shared,
            config: RwLock::new(config),
            follower: None,
        })
    }
}

impl Shared {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; the body of a 2xx answer, or the server's own words for anything else.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = self.succeeded(request).await?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// Sends a request; its answer when it is a 2xx, else the server's own words.
    async fn succeeded(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if !response.status().is_success() {
            return Err(self.refusal(response).await);
        }
        Ok(response)
    }

    /// What an answer that is not a success says, in the server's own words.
    async fn refusal(&self, response: reqwest::Response) -> CoreError {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let said = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{} answered {status}", self.base));
        match status.as_u16() {
            401 | 403 => CoreError::Server(format!("{} refused: {said}", self.base)),
            404 => CoreError::Server(said),
            409 => CoreError::Conflict(said),
            400 | 422 => CoreError::Invalid(said),
            _ => CoreError::Server(said),
        }
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(self.http.get(self.url(path))).await
    }

    /// A GET whose answer is read straight from its bytes as a `T` (no tree of values first:
    /// a page of sessions is half a megabyte).
    async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.succeeded(self.http.get(self.url(path))).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        serde_json::from_slice(&body).map_err(|e| {
            CoreError::Server(format!("an answer of the server could not be read: {e}"))
        })
    }

    /// Before a list is read: waits (a little) for the change stream to open, so that its
    /// opening `resync` need not read the list again; a list read before it opened counts.
    async fn before_a_list(&self) {
        if !self.followed.load(Ordering::Relaxed) {
            return;
        }
        let mut opened = self.opened.subscribe();
        let waited = tokio::time::timeout(OPENING_WAIT, opened.wait_for(|open| *open)).await;
        if !matches!(waited, Ok(Ok(_))) {
            self.early_lists.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Before anything else of the sessions is read (a session, its messages): read before
    /// the change stream opened, it needs the stream's opening `resync`.
    fn before_a_read(&self) {
        if self.followed.load(Ordering::Relaxed) && !*self.opened.borrow() {
            self.early_lists.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(self.http.post(self.url(path)).json(&body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Result<Value> {
        self.call(self.http.patch(self.url(path)).json(&body)).await
    }

    async fn agents(&self) -> Result<Vec<AgentSpec>> {
        read(&self.get("/api/agents").await?["agents"])
    }

    /// Who the token is (a wrong one is said here) and the server's agents.
    async fn introduce(&self) -> Result<()> {
        let me = self.get("/api/whoami").await?;
        self.read_only.store(
            me["read_only"].as_bool().unwrap_or(false),
            Ordering::Relaxed,
        );
        let agents = self.agents().await?;
        if let Ok(mut a) = self.agents.write() {
            *a = agents;
        }
        self.introduced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Opens an SSE stream at `path`.
    async fn stream(&self, path: &str) -> Result<BoxStream<'static, SseEvent>> {
        let response = self
            .authorized(self.streams.get(self.url(path)))
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let said = body["message"].as_str().unwrap_or("").to_string();
            return Err(if matches!(status.as_u16(), 401 | 403) {
                CoreError::Server(format!("{} refused: {said}", self.base))
            } else {
                CoreError::Server(format!("{} answered {status}: {said}", self.base))
            });
        }
        Ok(sse::events(response))
    }

    /// Opens a shell in the session's sandbox: `GET /api/sessions/{id}/shell`, upgraded to a
    /// WebSocket (HTTP/1.1 only, on a connection of its own).
    async fn shell(&self, id: Uuid, options: &ShellOptions) -> Result<AttachedShell> {
        use reqwest::header;
        let key = crate::shell_socket::generate_key();
        let url = self.url(&format!(
            "/api/sessions/{id}/shell?{}",
            crate::shell_socket::query(options)
        ));
        let request = self
            .upgrades
            .get(url)
            .version(reqwest::Version::HTTP_11)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key);
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.refusal(response).await);
        }
        let accepted = response
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if accepted.as_deref() != Some(&crate::shell_socket::accept_key(key.as_bytes())) {
            return Err(CoreError::Server(format!(
                "{} answered the shell's upgrade without the WebSocket's key: is a proxy in \
                 the way?",
                self.base
            )));
        }
        let upgraded = response.upgrade().await.map_err(|e| {
            CoreError::Server(format!("{}: the shell's upgrade failed: {e}", self.base))
        })?;
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            upgraded,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        crate::shell_socket::attach(ws, self.base.clone())
            .await
            .map_err(CoreError::Server)
    }

    fn set_link(&self, link: Link) {
        if let Ok(mut l) = self.link.lock() {
            *l = link;
        }
    }
}

fn unreachable(base: &str, e: &reqwest::Error) -> CoreError {
    // What the error rests on, all of it (a TLS refusal is a connect error too).
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    let why = if chain.to_lowercase().contains("certificate") {
        format!(
            "its TLS certificate is not trusted here ({}): pass --ca-file with the CA that \
             signed it",
            chain.rsplit(": ").next().unwrap_or_default()
        )
    } else if e.is_connect() {
        "nothing answers there".to_string()
    } else if e.is_timeout() {
        format!("no answer within {}s", REQUEST_WAIT.as_secs())
    } else {
        e.to_string()
    };
    CoreError::Server(format!("{base}: {why}"))
}

/// A query parameter's value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `v` as a `T`, read in place (no copy of a long list first).
fn read<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T> {
    T::deserialize(v)
        .map_err(|e| CoreError::Server(format!("an answer of the server could not be read: {e}")))
}

/// Follows the change stream for as long as the deck lives, again after every drop.
async fn follow(shared: Arc<Shared>) {
    let mut wait = Duration::from_millis(250);
    loop {
        let introduced = match shared.introduced.load(Ordering::Relaxed) {
            true => Ok(()),
            false => shared.introduce().await.map(|()| {
                let _ = shared.changes.send(Change::Agents);
            }),
        };
        let stream = match introduced {
            Ok(()) => shared.stream("/api/changes").await,
            Err(e) => Err(e),
        };
        match stream {
            Ok(mut events) => {
                shared.set_link(Link::Connected);
                wait = Duration::from_millis(250);
                let mut opening = !*shared.opened.borrow();
                while let Some(event) = events.next().await {
                    if std::mem::take(&mut opening) && event.event == "resync" {
                        shared.opened.send_replace(true);
                        // Every list so far was read with the stream open: nothing was missed.
                        if shared.early_lists.load(Ordering::SeqCst) == 0 {
                            continue;
                        }
                    }
                    on_change(&shared, event).await;
                }
                shared.set_link(Link::Reconnecting("the change stream ended".into()));
            }
            Err(CoreError::Server(why)) if why.contains("refused") => {
                shared.set_link(Link::Refused(why));
                wait = RECONNECT_MOST;
            }
            Err(e) => shared.set_link(Link::Reconnecting(e.to_string())),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT_MOST);
    }
}

async fn on_change(shared: &Shared, event: SseEvent) {
    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    let change = match event.event.as_str() {
        "resync" => Change::Resync,
        "session" => match serde_json::from_value::<Session>(data) {
            Ok(session) => {
                let id = session.id;
                if let Ok(mut fresh) = shared.fresh.lock() {
                    fresh.insert(id, session);
                }
                Change::Session(id)
            }
            Err(_) => Change::Resync,
        },
        "message" => match (data["session"].as_str(), data["seq"].as_i64()) {
            (Some(s), Some(seq)) => match Uuid::parse_str(s) {
                Ok(session) => Change::Message { session, seq },
                Err(_) => Change::Resync,
            },
            _ => Change::Resync,
        },
        "health" => {
            let session = data["session"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok());
            if let (Some(session), Ok(health)) =
                (session, serde_json::from_value(data["health"].clone()))
            {
                let _ = shared.health.send(HealthChange {
                    sandbox: SandboxRef {
                        runtime: "remote".into(),
                        name: session.to_string(),
                    },
                    session_id: Some(session),
                    health,
                });
            }
            return;
        }
        "agents" => {
            if let Ok(agents) = shared.agents().await
                && let Ok(mut a) = shared.agents.write()
            {
                *a = agents;
            }
            Change::Agents
        }
        _ => return,
    };
    let _ = shared.changes.send(change);
}

#[async_trait]
impl Deck for Remote {
    fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn describe(&self) -> String {
        self.shared.base.clone()
    }

    fn runtime_kind(&self) -> String {
        "remote".into()
    }

    fn runtime_context(&self) -> Option<String> {
        None
    }

    fn read_only(&self) -> bool {
        self.shared.read_only.load(Ordering::Relaxed)
    }

    fn agents(&self) -> Vec<AgentSpec> {
        self.shared
            .agents
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    async fn list(&self, query: &SessionQuery) -> Result<Vec<Session>> {
        // The API gives at most 1000 a page: pages follow one another until the limit.
        let limit = usize::try_from(query.limit.unwrap_or(100).max(1)).unwrap_or(usize::MAX);
        let mut filters = String::new();
        if let Some(team) = query.teams.as_ref().and_then(|t| t.first()) {
            filters.push_str(&format!("&team={}", encode(team)));
        }
        if let Some(agent) = &query.agent_id {
            filters.push_str(&format!("&agent={}", encode(agent)));
        }
        if let Some(statuses) = &query.statuses {
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            filters.push_str(&format!("&status={}", names.join(",")));
        }
        #[derive(serde::Deserialize)]
        struct Page {
            sessions: Vec<Session>,
        }
        self.shared.before_a_list().await;
        let mut out: Vec<Session> = Vec::new();
        let mut cursor = query.before;
        while out.len() < limit {
            let page = (limit - out.len()).min(1000);
            let mut path = format!("/api/sessions?limit={page}{filters}");
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let Page { sessions } = self.shared.get_as(&path).await?;
            let done = sessions.len() < page;
            cursor = sessions.last().map(|s| s.id);
            out.extend(sessions);
            if done || cursor.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn session(&self, id: Uuid) -> Result<Session> {
        let fresh = self
            .shared
            .fresh
            .lock()
            .ok()
            .and_then(|mut f| f.remove(&id));
        match fresh {
            Some(session) => Ok(session),
            None => {
                self.shared.before_a_read();
                read(&self.shared.get(&format!("/api/sessions/{id}")).await?)
            }
        }
    }

    async fn messages(&self, id: Uuid, after_seq: i64, limit: i64) -> Result<Vec<Message>> {
        let path = format!(
            "/api/sessions/{id}/messages?after_seq={after_seq}&limit={}",
            limit.clamp(1, 1000)
        );
        self.shared.before_a_read();
        read(&self.shared.get(&path).await?["messages"])
    }

    async fn send(&self, id: Uuid, text: &str) -> Result<Message> {
        read(
            &self
                .shared
                .post(
                    &format!("/api/sessions/{id}/messages"),
                    json!({ "text": text }),
                )
                .await?,
        )
    }

    async fn create(&self, request: CreateSession) -> Result<Session> {
        let body = json!({
            "agent_id": request.agent_id,
            "title": request.title,
            "initial_prompt": request.initial_prompt,
            "env_vars": request.env,
            "team": request.team,
        });
        read(&self.shared.post("/api/sessions", body).await?)
    }

    async fn command(&self, id: Uuid, command: Command) -> Result<Session> {
        let action = match command {
            Command::Restart => "restart",
            Command::Suspend => "suspend",
            Command::Resume => "resume",
            Command::Abort => "abort",
            Command::End => {
                let request = self
                    .shared
                    .http
                    .delete(self.shared.url(&format!("/api/sessions/{id}")));
                return read(&self.shared.call(request).await?);
            }
            Command::Send => {
                return Err(CoreError::Invalid(
                    "a message is sent with its text (Deck::send)".into(),
                ));
            }
        };
        read(
            &self
                .shared
                .post(&format!("/api/sessions/{id}/{action}"), json!({}))
                .await?,
        )
    }

    async fn fork(&self, id: Uuid, at_seq: i64) -> Result<Session> {
        read(
            &self
                .shared
                .post(
                    &format!("/api/sessions/{id}/fork"),
                    json!({ "message_seq": at_seq }),
                )
                .await?,
        )
    }

    async fn diffs(&self, id: Uuid) -> Result<Vec<crate::model::TurnDiff>> {
        read(&self.shared.get(&format!("/api/sessions/{id}/diff")).await?["turns"])
    }

    async fn resolve(&self, text: &str) -> Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(text.trim()) {
            return Ok(id);
        }
        let Some(fragment) = crate::model::id_fragment(text) else {
            return Err(crate::core::not_a_session_id(text));
        };
        let session: Session = read(
            &self
                .shared
                .get(&format!("/api/sessions/{fragment}"))
                .await?,
        )?;
        Ok(session.id)
    }

    async fn rename(&self, id: Uuid, title: &str) -> Result<Session> {
        read(
            &self
                .shared
                .patch(&format!("/api/sessions/{id}"), json!({ "title": title }))
                .await?,
        )
    }

    async fn set_budget(&self, id: Uuid, usd: Option<f64>) -> Result<Session> {
        read(
            &self
                .shared
                .post(&format!("/api/sessions/{id}/budget"), json!({ "usd": usd }))
                .await?,
        )
    }

    async fn asks(&self, id: Uuid, pending_only: bool) -> Result<Vec<Ask>> {
        let only = if pending_only { "?status=pending" } else { "" };
        let (permissions, questions) = (
            format!("/api/sessions/{id}/permissions{only}"),
            format!("/api/sessions/{id}/questions{only}"),
        );
        let (permissions, questions) =
            tokio::join!(self.shared.get(&permissions), self.shared.get(&questions));
        let mut asks: Vec<Ask> = read(&permissions?["permissions"])?;
        asks.extend(read::<Vec<Ask>>(&questions?["questions"])?);
        asks.sort_by_key(|a| a.asked_at);
        Ok(asks)
    }

    async fn answer(&self, id: Uuid, ask: &str, answer: Answer) -> Result<Ask> {
        let (path, body) = match (&answer, answer.kind()) {
            (Answer::Permission { reply, message }, _) => (
                format!("/api/sessions/{id}/permissions/{ask}"),
                json!({ "reply": reply.as_str(), "message": message }),
            ),
            (_, AskKind::Question) | (_, AskKind::Permission) => (
                format!("/api/sessions/{id}/questions/{ask}"),
                answer.to_json(),
            ),
        };
        read(&self.shared.post(&path, body).await?)
    }

    async fn fleet_health(&self) -> Result<Vec<FleetRow>> {
        let body = self.shared.get("/api/sandboxes").await?;
        let rows = body["sandboxes"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .map(|row| {
                let id: Uuid = read(&row["session"])?;
                let title = row["title"].as_str().unwrap_or_default().to_string();
                let health = match row["error"].as_str() {
                    Some(e) => Err(e.to_string()),
                    None => Ok(read(&row["health"])?),
                };
                Ok((id, title, health))
            })
            .collect()
    }

    async fn pools(&self) -> Result<Vec<crate::model::PoolHealth>> {
        let body = self.shared.get("/api/sandboxes").await?;
        let pools = body["pools"].as_array().cloned().unwrap_or_default();
        Ok(pools
            .iter()
            .filter_map(|p| serde_json::from_value(p.clone()).ok())
            .collect())
    }

    async fn team_budgets(&self) -> Result<Vec<crate::model::TeamSpend>> {
        let body = self.shared.get("/api/usage").await?;
        let teams = body["teams"].as_array().cloned().unwrap_or_default();
        Ok(teams
            .iter()
            .filter_map(|t| {
                Some(crate::model::TeamSpend {
                    team: t["team"].as_str()?.to_string(),
                    spent_usd: t["spent_this_month_usd"].as_f64().unwrap_or(0.0),
                    budget_usd: Some(t["budget_usd"].as_f64()?),
                })
            })
            .collect())
    }

    async fn logs(&self, id: Uuid, options: LogOptions) -> Result<LogStream> {
        let mut path = format!("/api/sessions/{id}/logs?follow={}", options.follow);
        if let Some(tail) = options.tail {
            path.push_str(&format!("&tail={tail}"));
        }
        if let Some(since) = options.since {
            path.push_str(&format!("&since={}", since.as_secs()));
        }
        let events = self.shared.stream(&path).await?;
        Ok(Box::pin(
            events
                .take_while(|e| futures::future::ready(e.event != "end"))
                .map(|e| Ok::<_, RuntimeError>(e.data)),
        ))
    }

    async fn diagnose(&self, id: Uuid) -> Result<Diagnosis> {
        let body = self
            .shared
            .get(&format!("/api/sessions/{id}/diagnosis"))
            .await?;
        Diagnosis::from_json(&body).map_err(CoreError::Server)
    }

    async fn shell(&self, id: Uuid, options: &ShellOptions) -> Result<Shell> {
        // A read-only token is refused by the server, in its words.
        self.shared.shell(id, options).await.map(Shell::Attached)
    }

    async fn connectivity(&self) -> Connectivity {
        let server = self.link();
        let part = |v: &Value| match v["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(v["error"].as_str().unwrap_or("unknown").to_string()),
        };
        let status = match server {
            ServerLink::Connected => self.shared.get("/api/status").await.ok(),
            _ => None,
        };
        match status {
            Some(status) => Connectivity {
                store: part(&status["store"]),
                runtime: part(&status["runtime"]),
                gateway: part(&status["gateway"]),
                fleet: status["fleet"].as_str().map(str::to_string),
                servers: vec![ServerState {
                    name: None,
                    link: server,
                }],
            },
            // What the server cannot be asked is not known: only the link is said.
            None => Connectivity {
                store: Ok(()),
                runtime: Ok(()),
                gateway: Ok(()),
                fleet: None,
                servers: vec![ServerState {
                    name: None,
                    link: match server {
                        ServerLink::Connected => {
                            ServerLink::Reconnecting("the server did not answer".into())
                        }
                        other => other,
                    },
                }],
            },
        }
    }

    /// The cockpit's own file (its keys and theme); the server's configuration is the server's.
    async fn reload(&self) -> Result<Reloaded> {
        super::reload_own_file(&self.config)
    }

    fn changes(&self) -> ChangeFeed {
        ChangeFeed::new(self.shared.changes.subscribe())
    }

    fn deltas(&self, session: Uuid) -> BoxStream<'static, Live> {
        let shared = self.shared.clone();
        let path = format!("/api/sessions/{session}/live");
        Box::pin(
            futures::stream::once(async move { shared.stream(&path).await })
                .flat_map(move |opened| match opened {
                    Ok(events) => events
                        .filter_map(move |e| async move {
                            match e.event.as_str() {
                                "delta" => {
                                    let d: Value = serde_json::from_str(&e.data).ok()?;
                                    Some(Live::Delta(crate::model::LiveDelta {
                                        session,
                                        seq: d["seq"].as_i64()?,
                                        part: usize::try_from(d["part"].as_u64()?).ok()?,
                                        text: d["text"].as_str()?.to_string(),
                                    }))
                                }
                                "missed" => Some(Live::Missed),
                                _ => None,
                            }
                        })
                        .boxed(),
                    Err(_) => futures::stream::empty().boxed(),
                })
                // The stream dropped: the stored text is read again.
                .chain(futures::stream::once(async { Live::Missed })),
        )
    }

    fn health_changes(&self) -> broadcast::Receiver<HealthChange> {
        self.shared.health.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token goes over TLS, or to this machine; nowhere else in the clear.
    #[test]
    fn a_token_is_sent_only_where_it_is_safe() {
        let safe = |u: &str| safe_for_a_token(&reqwest::Url::parse(u).unwrap());
        assert!(safe("https://deck.example.com"));
        assert!(safe("http://127.0.0.1:3000"));
        assert!(safe("http://localhost:3000"));
        assert!(safe("http://[::1]:3000"));
        assert!(!safe("http://deck.example.com"));
        assert!(!safe("http://10.0.0.7:3000"));
    }

    #[tokio::test]
    async fn plain_http_elsewhere_is_refused_before_anything_is_sent() {
        let config = Arc::new(
            crate::config::load_text(
                "",
                "t.toml",
                crate::config::Dirs {
                    config_dir: "/c".into(),
                    data_dir: "/d".into(),
                    state_dir: "/s".into(),
                    cache_dir: "/k".into(),
                },
            )
            .expect("config"),
        );
        let refused = Remote::connect(
            "http://deck.example.com",
            Some("t".repeat(20)),
            None,
            config,
        )
        .await
        .err()
        .unwrap_or_default();
        assert!(refused.contains("over plain HTTP"), "{refused}");
    }
}
