//! Test helpers for NATS: unique names, the test configuration (`config.rs`), a clean-up guard that deletes
//! a test's streams even when the test panics, and a private nats-server process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runwatch::config::Config;
use runwatch::event::Provider;
use runwatch::trigger::{Trigger, TriggerRepository, TriggerRun};

use super::services;
pub use services::nats_url;

pub use super::config::{test_config, test_config_for};

/// A suffix unique across parallel tests and test processes: pid, counter, time.
pub fn unique_suffix() -> String {
    services::unique("n")
}

/// Deletes the configuration's three streams when dropped (also on panic), from a thread of
/// its own so that it works inside and outside a runtime.
pub struct StreamsGuard {
    url: String,
    streams: Vec<String>,
}

impl StreamsGuard {
    pub fn new(config: &Config) -> StreamsGuard {
        StreamsGuard {
            url: config.nats.url.clone(),
            streams: vec![
                config.streams.events.clone(),
                config.streams.triggers.clone(),
                config.streams.dead.clone(),
            ],
        }
    }
}

impl Drop for StreamsGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let streams = std::mem::take(&mut self.streams);
        services::clean_up_blocking(async move {
            let connect = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(url.as_str());
            let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            for name in streams {
                let _ = tokio::time::timeout(Duration::from_secs(5), js.delete_stream(&name)).await;
            }
        });
    }
}

pub use super::procs::nats_server_bin;

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A private nats-server with JetStream on 127.0.0.1:`port`, storing in `store`. Killed
/// (SIGKILL) when dropped.
pub struct NatsServer {
    bin: PathBuf,
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start(store: &Path) -> NatsServer {
        let mut server = NatsServer {
            bin: nats_server_bin(),
            port: free_port(),
            store: store.to_path_buf(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Logs to the test output (shown with `--nocapture` or on failure); `RUST_LOG` filters,
/// default `runwatch=debug`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("runwatch=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A trigger of a failed `test` workflow, with its failed job `unit` (step 3, `Run tests`);
/// `tag` and `n` make its id, run and commit.
pub fn sample_trigger(tag: &str, n: u32) -> Trigger {
    let mut runs = BTreeMap::new();
    runs.insert(
        format!("{}", 9000 + n),
        TriggerRun {
            attempt: 1,
            workflow: "test".into(),
            status: runwatch::event::Status::Completed,
            conclusion: Some(runwatch::event::Conclusion::Failure),
            url: None,
            updated_at: "2026-11-25T10:03:00Z".parse().expect("time"),
            jobs: vec![runwatch::trigger::TriggerJob {
                id: format!("{}", 7000 + n),
                name: "unit".into(),
                conclusion: Some(runwatch::event::Conclusion::Failure),
                url: None,
                stage: None,
                failure_reason: None,
                title: None,
                summary: None,
                failed_steps: vec![runwatch::job::Step {
                    number: Some(3),
                    name: "Run tests".into(),
                }],
                failed_steps_omitted: 0,
                runner_labels: vec!["ubuntu-latest".into()],
                started_at: None,
                completed_at: None,
            }],
            jobs_omitted: 0,
        },
    );
    Trigger {
        schema: runwatch::trigger::TRIGGER_SCHEMA.to_string(),
        trigger_id: runwatch::trigger::trigger_id(&[tag, &n.to_string()]),
        rule: "all_completed_with_failure".into(),
        rule_name: "all_completed_with_failure".into(),
        provider: Provider::Github,
        repository: TriggerRepository {
            owner: "octo-org".into(),
            name: "octo-repo".into(),
            id: Some("300029405".into()),
            internal_id: 1,
        },
        pr_number: Some(u64::from(n)),
        commit_sha: format!("d3adb33f{n}"),
        branch: Some("feature/demo".into()),
        workflow: None,
        episode: 0,
        runs,
        failed_workflows: vec!["test".into()],
        fired_at: "2026-11-25T10:03:00Z".parse().expect("time"),
        budget: None,
        pull_request: None,
        known_flaky: Vec::new(),
        trace: None,
    }
}
