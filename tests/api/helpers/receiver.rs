//! A real `runwatch ingest` process for the hostile-client tests (`tests/api/ingest_hostile.rs`):
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

/// GitLab's documented "Pipeline Hook" example (a failed pipeline of merge request 1; its
/// stages and user left out) with `builds` as its builds.
pub fn gitlab_pipeline(builds: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
      "object_kind": "pipeline",
      "object_attributes": {
        "id": 31, "iid": 3, "name": "Pipeline for branch: master", "ref": "master", "tag": false,
        "sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
        "before_sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
        "source": "merge_request_event", "status": "failed", "detailed_status": "failed",
        "stages": ["build", "test", "deploy"],
        "created_at": "2016-08-12 15:23:28 UTC", "finished_at": "2016-08-12 15:26:29 UTC",
        "duration": 63, "queued_duration": 12, "variables": [],
        "url": "http://example.com/gitlab-org/gitlab-test/-/pipelines/31"
      },
      "merge_request": {
        "id": 1, "iid": 1, "title": "Test", "source_branch": "test", "source_project_id": 1,
        "target_branch": "master", "target_project_id": 1, "state": "opened",
        "merge_status": "can_be_merged", "detailed_merge_status": "mergeable",
        "url": "http://192.168.64.1:3005/gitlab-org/gitlab-test/merge_requests/1"
      },
      "project": {
        "id": 1, "name": "Gitlab Test", "description": "Atque in sunt eos similique dolores voluptatem.",
        "web_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test", "avatar_url": null,
        "git_ssh_url": "git@192.168.64.1:gitlab-org/gitlab-test.git",
        "git_http_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test.git",
        "namespace": "Gitlab Org", "visibility_level": 20,
        "path_with_namespace": "gitlab-org/gitlab-test", "default_branch": "master"
      },
      "commit": {
        "id": "bcbb5ec396a2c0f828686f14fac9b80b780504f2", "message": "test\n",
        "timestamp": "2016-08-12T17:23:21+02:00",
        "url": "http://example.com/gitlab-org/gitlab-test/commit/bcbb5ec396a2c0f828686f14fac9b80b780504f2",
        "author": {"name": "User", "email": "user@gitlab.com"}
      },
      "builds": builds
    })
}
