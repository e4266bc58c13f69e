//! A real `runwatch ingest` process for the hostile-client tests (`tests/ingest_hostile.rs`):
//! started on a free port with a GitHub secret and extra settings, its resident memory, raw
//! HTTP/1.1 requests, its `/metrics`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use runwatch::ingest::github;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::env::TestEnv;
use super::procs::{self, WorkerProc};

pub const SECRET: &str = "hostile-test-secret";

pub struct Receiver {
    pub proc: WorkerProc,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// `runwatch ingest` on a free port with `extra` settings (environment variables).
    pub fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Receiver {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = procs::free_port().expect("free port");
        let mut vars = env.env_vars();
        vars.push((
            "RUNWATCH_INGEST__LISTEN".into(),
            format!("127.0.0.1:{port}"),
        ));
        vars.push(("RUNWATCH_INGEST__GITHUB_SECRETS".into(), SECRET.into()));
        vars.push(("RUST_LOG".into(), "warn".into()));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log = dir.path().join("ingest.log");
        let bin = Path::new(env!("CARGO_BIN_EXE_runwatch"));
        let proc =
            WorkerProc::start_command(bin, &["ingest"], vars, &log).expect("start runwatch ingest");
        procs::wait_listening(port, Duration::from_secs(60)).expect("runwatch ingest listens");
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        Receiver {
            proc,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Resident memory of the process, in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.proc.pid().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// One request on a new connection: (status, whole answer); status 0 when the
    /// connection was closed or reset without an answer.
    pub async fn request(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body).await;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        (status(&text), text)
    }

    pub async fn signed(&self, event: &str, delivery: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {}\r\n\r\n",
            body.len(),
            github::sign(SECRET.as_bytes(), body)
        );
        self.request(&head, body).await
    }

    pub async fn metrics(&self) -> String {
        let (code, text) = self
            .request(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"",
            )
            .await;
        assert_eq!(code, 200, "{text}");
        text
    }

    pub fn stop(mut self) {
        let code = self
            .proc
            .terminate(Duration::from_secs(20))
            .expect("terminate");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_eq!(
            code,
            Some(0),
            "runwatch ingest did not stop cleanly:\n{log}"
        );
    }
}

pub fn status(text: &str) -> u16 {
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The value of a series on /metrics (0 when absent).
pub fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// How long until the server closes `s` (reads and discards what it sends), at most `limit`.
pub async fn closed_after(
    s: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

pub fn fixture() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github/workflow_run/completed.payload.json");
    std::fs::read(path).expect("fixture")
}
