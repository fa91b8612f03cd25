//! Shared fixtures for the integration tests, written once: a fresh Postgres database per test
//! (dropped afterwards), a temporary SQLite store, an in-test sandbox runtime and harness, a
//! running API server on a free port, and helpers to run the real binary.
#![allow(dead_code)]

pub mod agent_api;
pub mod cluster;
pub mod fake_kube;
pub mod fakes;
pub mod kubelet;
pub mod stack;

use agentdeck::config::{self, Config, Dirs};
use agentdeck::store::{self, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The server the Postgres tests use (trust auth on these machines); override with
/// AGENTDECK_TEST_PG (a URL to a database the tests may create databases from).
pub fn pg_admin_url() -> String {
    std::env::var("AGENTDECK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test, dropped when the test ends.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        use sqlx::Connection;
        let admin = pg_admin_url();
        let name = format!("agentdeck_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("Postgres is needed for this test at {admin}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = pg_admin_url();
        let name = self.name.clone();
        // Drop runs outside any async context we could block on: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                Some(())
            })
        })
        .join();
    }
}

/// A temporary SQLite store file.
pub struct SqliteDb {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl SqliteDb {
    pub fn create() -> SqliteDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("agentdeck.db").display());
        SqliteDb { dir, url }
    }
}

/// A backend to run a test on, keeping its database alive as long as the test holds it.
pub enum TestDb {
    Pg(PgDb),
    Sqlite(SqliteDb),
}

impl TestDb {
    pub async fn postgres() -> TestDb {
        TestDb::Pg(PgDb::create().await)
    }
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(SqliteDb::create())
    }
    pub fn url(&self) -> &str {
        match self {
            TestDb::Pg(db) => &db.url,
            TestDb::Sqlite(db) => &db.url,
        }
    }
    /// Makes every insert into `tasks` fail (as a full disk or a dropped connection would, at the
    /// worst moment), or stops doing so.
    pub async fn refuse_tasks(&self, refuse: bool) {
        use sqlx::Connection;
        let statements: &[&str] = match (self, refuse) {
            (TestDb::Pg(_), true) => &[
                "CREATE OR REPLACE FUNCTION refuse_task() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION 'injected: no task today'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_task BEFORE INSERT ON tasks \
                 FOR EACH ROW EXECUTE FUNCTION refuse_task()",
            ],
            (TestDb::Pg(_), false) => &["DROP TRIGGER refuse_task ON tasks"],
            (TestDb::Sqlite(_), true) => &["CREATE TRIGGER refuse_task BEFORE INSERT ON tasks \
                 BEGIN SELECT RAISE(ABORT, 'injected: no task today'); END"],
            (TestDb::Sqlite(_), false) => &["DROP TRIGGER refuse_task"],
        };
        match self {
            TestDb::Pg(pg) => {
                let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
                for sql in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            }
            TestDb::Sqlite(lite) => {
                let mut conn = sqlx::SqliteConnection::connect(&lite.url).await.unwrap();
                for sql in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// A new, migrated store on this database (call twice for two "processes").
    pub async fn open(&self) -> Arc<dyn Store> {
        let store = store::open(self.url()).await.expect("open store");
        store.migrate().await.expect("migrate");
        store
    }
}

/// Directories under `root` (for a config that touches no real home).
pub fn dirs_in(root: &Path) -> Dirs {
    Dirs {
        config_dir: root.join("config"),
        data_dir: root.join("data"),
        state_dir: root.join("state"),
        cache_dir: root.join("cache"),
    }
}

/// A configuration from TOML text (on top of the built-in defaults), with the store URL set.
pub fn config_with(text: &str, database_url: &str, root: &Path) -> Config {
    let mut config = config::load_text(text, "test.toml", dirs_in(root)).expect("test config");
    config.database_url = database_url.to_string();
    config
}

/// The agentdeck binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentdeck"))
}

/// A command running the real binary with a home of its own under `root`.
pub fn agentdeck(root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary());
    cmd.env("HOME", root)
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_DATA_HOME", root.join("data"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env_remove("AGENTDECK_DATABASE_URL")
        .env_remove("AGENTDECK_CONFIG")
        .env_remove("AGENTDECK_LISTEN")
        // A developer's own remote settings would make a test a client of their server.
        .env_remove("AGENTDECK_SERVER")
        .env_remove("AGENTDECK_TOKEN")
        .env_remove("AGENTDECK_CA_FILE")
        .env_remove("AGENTDECK_TLS_CERT")
        .env_remove("AGENTDECK_TLS_KEY");
    cmd
}

/// `cmd` run on a pseudo-terminal of its own (util-linux's `script`, which passes its input
/// on and returns the command's exit status): for what acts differently on a terminal. Its
/// environment is kept; its arguments are quoted for the shell `script` runs it with.
pub fn on_a_terminal(cmd: &std::process::Command) -> std::process::Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line.join(" "), "/dev/null"]);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    script
}

/// Kills, when dropped, every process working in a folder under `root` (a test's sandboxes,
/// which outlive the `serve` that started them, as every sandbox does), with its process group.
pub struct KillUnder(pub PathBuf);

impl Drop for KillUnder {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let under = std::fs::read_link(entry.path().join("cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.0));
            if under {
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` every 50 ms until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A core with the in-test runtime and harness, its worker, and the REST API on a free port.
pub struct ApiServer {
    pub base: String,
    pub core: agentdeck::core::Core,
    pub runtime: Arc<fakes::InTestRuntime>,
    pub harness: Arc<fakes::InTestHarness>,
    pub http: reqwest::Client,
    worker: Option<agentdeck::core::worker::WorkerHandle>,
    server: tokio::task::JoinHandle<()>,
    _root: tempfile::TempDir,
}

/// The test agents and a quick worker, on top of the built-in defaults.
pub const TEST_CONFIG: &str = r#"
[worker]
concurrency = 4
lease = "5s"
backoff = "100ms"
max_backoff = "1s"

[sessions]
phase_timeout = "10s"

[agents.coder]
model = "litellm/mock-gpt"
command = ["true"]
env = { AGENT_LEVEL = "agent", SHARED = "agent" }

[agents.sleepy]
model = "litellm/mock-gpt"
command = ["true"]
idle_timeout = "1s"
"#;

impl ApiServer {
    pub async fn start(db: &TestDb, extra_config: &str) -> ApiServer {
        agentdeck::net::ensure_crypto();
        let root = tempfile::tempdir().expect("temp dir");
        let mut config = config_with(
            &format!("{TEST_CONFIG}\n{extra_config}"),
            db.url(),
            root.path(),
        );
        // The in-test harness reaches no model: no gateway (deliveries wait for a configured
        // one that does not answer), unless the test configures one.
        if !extra_config.contains("[gateway]") {
            config.gateway.url = None;
            config.gateway.sandbox_url = None;
        }
        let runtime = Arc::new(fakes::InTestRuntime::default());
        let harness = Arc::new(fakes::InTestHarness::default());
        let store = db.open().await;
        let core =
            agentdeck::core::Core::with_store(config, store, runtime.clone(), harness.clone());
        core.sync_agents().await.expect("sync agents");
        let worker =
            agentdeck::core::worker::spawn(core.clone(), agentdeck::model::CoreKind::Serve);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = {
            let core = core.clone();
            tokio::spawn(async move {
                let _ = agentdeck::api::serve(core, listener, None, std::future::pending()).await;
            })
        };
        ApiServer {
            base,
            core,
            runtime,
            harness,
            http: reqwest::Client::new(),
            worker: Some(worker),
            server,
            _root: root,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the worker only (nothing then reads the runtime but what the test calls).
    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop(Duration::from_secs(5)).await;
        }
    }

    pub async fn stop(mut self) {
        self.server.abort();
        if let Some(w) = self.worker.take() {
            w.stop(Duration::from_secs(5)).await;
        }
    }
}
