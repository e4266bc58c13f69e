//! [`TestApp`], the way into the harness: a test's services and the real `runwatch`
//! binary's worker, ingest and deliver processes on them; their HTTP endpoints; polling.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::env::TestEnv;
use super::procs::{self, WorkerProc};

/// The way into the harness: a fresh database (migrated) and stream names ([`TestEnv`]), a
/// connected bus with the streams created, a pool on the database and a temp folder; and
/// the real `runwatch` binary's three services on them: [`spawn_worker`](Self::spawn_worker)
/// (`run`), [`spawn_ingest`](Self::spawn_ingest) and [`spawn_deliver`](Self::spawn_deliver).
pub struct TestApp {
    pub env: TestEnv,
    pub dir: tempfile::TempDir,
    pub bus: runwatch::bus::Bus,
    pub pool: sqlx::PgPool,
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::configured(|_| {}).await
    }

    /// [`TestApp::new`] with `configure` applied to the test configuration first (then
    /// validated): what the test's in-process services and spawned processes run with.
    pub async fn configured(configure: impl FnOnce(&mut runwatch::config::Config)) -> TestApp {
        let mut env = TestEnv::new().await;
        configure(&mut env.config);
        env.config
            .validate()
            .expect("the test's configuration is valid");
        let bus = bus(&env.config).await;
        let pool = runwatch::store::connect(&env.config.database)
            .await
            .expect("pool");
        TestApp {
            env,
            dir: tempfile::tempdir().expect("temp dir"),
            bus,
            pool,
        }
    }

    /// `runwatch run` configured like this app, with `rules` (TOML) as its rules file, a
    /// 100 ms timer sweep, and `extra` environment variables (which win); waits until its
    /// HTTP port listens. Files go to the app's folder.
    pub fn spawn_worker(&self, rules: &str, extra: &[(&str, &str)]) -> App {
        spawn_worker(&self.env, self.dir.path(), rules, extra)
    }

    /// `runwatch ingest` configured like this app on a free port, taking GitHub deliveries
    /// signed with [`receiver::SECRET`](super::receiver::SECRET), with `extra` settings.
    pub fn spawn_ingest(&self, extra: &[(&str, &str)]) -> super::receiver::Receiver {
        super::receiver::Receiver::start(&self.env, extra)
    }

    /// `runwatch deliver` configured like this app, with `config` (TOML) as its
    /// configuration file; waits until its `/readyz` answers 200. The caller stops it.
    pub async fn spawn_deliver(&self, config: &str, extra: &[(&str, &str)]) -> WorkerProc {
        spawn_deliver(&self.env, self.dir.path(), config, extra).await
    }

    pub async fn cleanup(self) {
        self.pool.close().await;
        self.env.cleanup().await;
    }
}

/// A bus connected to `config`'s NATS server with its three streams created.
pub async fn bus(config: &runwatch::config::Config) -> runwatch::bus::Bus {
    let bus = runwatch::bus::Bus::connect(config)
        .await
        .expect("connect to NATS");
    bus.ensure_streams().await.expect("create the streams");
    bus
}

/// A running `runwatch run` process with its HTTP port and its log file.
pub struct App {
    pub proc: WorkerProc,
    pub port: u16,
    pub log: PathBuf,
}

/// [`TestApp::spawn_worker`] for `env`, files in `dir`.
fn spawn_worker(env: &TestEnv, dir: &Path, rules: &str, extra: &[(&str, &str)]) -> App {
    let rules_file = dir.join("rules.toml");
    std::fs::write(&rules_file, rules).expect("write rules");
    let port = procs::free_port().expect("free port");
    let mut vars = env.env_vars();
    vars.push(("RUNWATCH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    vars.push((
        "RUNWATCH_RULES_FILE".into(),
        rules_file.display().to_string(),
    ));
    vars.push(("RUNWATCH_TIMERS__INTERVAL".into(), "100ms".into()));
    for (k, v) in extra {
        vars.push(((*k).into(), (*v).into()));
    }
    // Later entries win: keep the last value of each variable.
    let mut seen = std::collections::HashSet::new();
    vars.reverse();
    vars.retain(|(k, _)| seen.insert(k.clone()));
    let log = dir.join("worker.log");
    let bin = Path::new(env!("CARGO_BIN_EXE_runwatch"));
    let proc = WorkerProc::start(bin, vars, &log).expect("start runwatch run");
    procs::wait_listening(port, Duration::from_secs(60)).expect("runwatch listens");
    App { proc, port, log }
}

impl App {
    /// SIGTERM, then asserts a clean exit (status 0) within 20 s; the log on failure.
    pub fn stop(&mut self) {
        let code = self
            .proc
            .terminate(Duration::from_secs(20))
            .expect("terminate runwatch");
        assert_eq!(
            code,
            Some(0),
            "runwatch did not stop cleanly:\n{}",
            self.log_text()
        );
    }

    /// `GET path`: (status, body); an error when nothing answers.
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, text))
    }

    /// The `/metrics` exposition (with the HTTP head).
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("GET /metrics").1
    }

    /// The worker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// [`TestApp::spawn_deliver`] for `env`: `config` written to `dir/deliver.toml`, a free
/// HTTP port, `extra` environment variables after the others; the log in `dir/deliver.log`.
async fn spawn_deliver(
    env: &TestEnv,
    dir: &Path,
    config: &str,
    extra: &[(&str, &str)],
) -> WorkerProc {
    let path = dir.join("deliver.toml");
    std::fs::write(&path, config).expect("config");
    let port = procs::free_port().expect("port");
    let mut vars = env.env_vars();
    vars.retain(|(k, _)| k != "RUNWATCH_HTTP__LISTEN");
    vars.push(("RUNWATCH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    vars.push(("RUNWATCH_CONFIG".into(), path.display().to_string()));
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let bin = Path::new(env!("CARGO_BIN_EXE_runwatch"));
    let proc = WorkerProc::start_command(bin, &["deliver"], vars, &dir.join("deliver.log"))
        .expect("start deliver");
    let url = format!("http://127.0.0.1:{port}/readyz");
    eventually(
        Duration::from_secs(60),
        "runwatch deliver ready",
        || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        },
    )
    .await;
    proc
}

/// Runs the `runwatch` binary with `args` where nothing can be reached (NATS and Postgres
/// on port 1, no `RUNWATCH_CONFIG`): for what must be decided before connecting.
pub fn runwatch_offline(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(args)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
        .env_remove("RUNWATCH_CONFIG")
        .output()
        .expect("run binary")
}

/// [`runwatch_offline`] `simulate --rules FILE /dev/null`, with `rules` written to FILE in
/// a temp folder.
pub fn simulate_rules(rules: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, rules).unwrap();
    runwatch_offline(&["simulate", "--rules", file.to_str().unwrap(), "/dev/null"])
}

/// Polls `f` until it returns `Some`, at most `limit`; panics naming `what` after that.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
