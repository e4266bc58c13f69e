//! Driving the live pipeline in tests: workers in this process (each with its own NATS
//! connection and database pool), publishing, waiting for quiescence, reading triggers.

use std::time::{Duration, Instant};

use futures::StreamExt;
use runwatch::bus::Bus;
use runwatch::config::Config;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

pub struct RunningWorker {
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), runwatch::worker::WorkerError>>,
}

impl RunningWorker {
    pub async fn shutdown(self) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("worker did not stop cleanly: {other:?}"),
        }
    }
}

pub fn start_worker(config: &Config) -> RunningWorker {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(runwatch::worker::run(
        config.clone(),
        runwatch::worker::RunOptions::default(),
        None,
        stop.clone(),
    ));
    RunningWorker { stop, handle }
}

/// Publishes JSON lines (valid ones through their provider subject); returns how many.
pub async fn publish_lines(bus: &Bus, lines: &[String]) -> usize {
    let futs = lines.iter().map(|l| async move {
        let e = runwatch::pull_request::decode_input(l.as_bytes(), &Default::default())
            .expect("valid event");
        bus.publish_event(e.provider(), e.event_id(), bytes::Bytes::from(l.clone()))
            .await
            .expect("publish");
    });
    let n = lines.len();
    futures::stream::iter(futs)
        .buffered(64)
        .collect::<Vec<_>>()
        .await;
    n
}

/// In stream order, one at a time (so a single worker applies them in this order).
pub async fn publish_in_order(bus: &Bus, text: &str) -> usize {
    let mut n = 0;
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let e = runwatch::pull_request::decode_input(l.as_bytes(), &Default::default())
            .expect("valid event");
        bus.publish_event(
            e.provider(),
            e.event_id(),
            bytes::Bytes::from(l.to_string()),
        )
        .await
        .expect("publish");
        n += 1;
    }
    n
}

/// Waits until the consumer has nothing pending, the outbox is empty and no timer is
/// pending, twice in a row.
pub async fn wait_quiet(config: &Config, bus: &Bus, limit: Duration) {
    let pool = runwatch::store::connect(&config.database)
        .await
        .expect("pool");
    let started = Instant::now();
    let mut calm = 0;
    loop {
        let pending = bus.consumer_pending().await.unwrap_or(u64::MAX);
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent,
                    (SELECT count(*) FROM groups WHERE due_wall_at IS NOT NULL) AS timers",
        )
        .fetch_one(&pool)
        .await
        .expect("query");
        let unsent: i64 = row.get("unsent");
        let timers: i64 = row.get("timers");
        if pending == 0 && unsent == 0 && timers == 0 {
            calm += 1;
            if calm >= 3 {
                break;
            }
        } else {
            calm = 0;
        }
        assert!(
            started.elapsed() < limit,
            "not quiet after {limit:?}: pending={pending} unsent={unsent} timers={timers}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pool.close().await;
}

/// Every trigger in the outbound stream, as JSON values, in stream order.
pub async fn all_triggers(bus: &Bus) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut s = Box::pin(bus.trigger_messages(true).await.expect("trigger stream"));
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1500), s.next()).await {
        let (_, payload) = m.expect("trigger message");
        out.push(serde_json::from_slice(&payload).expect("trigger JSON"));
    }
    out
}

/// Posts raw bytes to `path` on `addr` with these headers (one request per connection);
/// returns (status, body), status 0 when nothing parseable came back.
pub async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// The webhook secret (and token) a [`Pipeline`] is configured with.
pub const SECRET: &str = "hook-secret";

/// The ingest HTTP server and a worker in this process, on a [`TestApp`](super::app::TestApp)'s
/// streams and database, and the rules file when there is one.
pub struct Pipeline {
    pub env: super::env::TestEnv,
    pub bus: Bus,
    pub addr: std::net::SocketAddr,
    pub rules: Option<tempfile::NamedTempFile>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    worker: RunningWorker,
}

impl Pipeline {
    /// Starts ingest (on a free port, taking GitHub deliveries signed with [`SECRET`]) and
    /// a worker with `rules` (TOML) as the rules file when given; `configure` sets what else
    /// the test needs (other providers' tokens) first.
    pub async fn start(rules: Option<&str>, configure: impl FnOnce(&mut Config)) -> Pipeline {
        let rules = rules.map(|rules| {
            let file = tempfile::NamedTempFile::new().expect("rules file");
            std::fs::write(file.path(), rules).expect("write rules");
            file
        });
        let rules_file = rules.as_ref().map(|f| f.path().to_path_buf());
        let super::app::TestApp { env, bus, pool, .. } =
            super::app::TestApp::configured(|config| {
                config.rules_file = rules_file;
                config.ingest.github_secrets = vec![runwatch::ingest::Secret::new(SECRET)];
                configure(config);
                config.ingest.listen = "127.0.0.1:0".parse().expect("addr");
            })
            .await;
        pool.close().await;
        let stop = CancellationToken::new();
        let (addr, server) = runwatch::ingest::serve(&env.config, bus.clone(), None, stop.clone())
            .await
            .expect("ingest serves");
        let worker = start_worker(&env.config);
        Pipeline {
            env,
            bus,
            addr,
            rules,
            stop,
            server,
            worker,
        }
    }

    /// Posts `raw` to `/webhooks/github` as delivery `delivery` of `event` with this content
    /// type, signed with [`SECRET`] as GitHub signs it (over the raw body).
    pub async fn github(
        &self,
        event: &str,
        delivery: &str,
        content_type: &str,
        raw: &[u8],
    ) -> (u16, String) {
        let sig = runwatch::ingest::github::sign(SECRET.as_bytes(), raw);
        post(
            self.addr,
            "/webhooks/github",
            &[
                ("Content-Type", content_type),
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
            ],
            raw,
        )
        .await
    }

    /// Waits (at most 90 s) until everything is decided; returns every trigger published.
    pub async fn quiet_triggers(&self) -> Vec<serde_json::Value> {
        wait_quiet(&self.env.config, &self.bus, Duration::from_secs(90)).await;
        all_triggers(&self.bus).await
    }

    /// The body of every message in the events stream, in stream order (up to the last
    /// sequence when called; each message waited for at most 5 s).
    pub async fn stored_events(&self) -> Vec<bytes::Bytes> {
        use runwatch::bus::{EventsFrom, StreamKind};
        let state = self.bus.stream_state(StreamKind::Events).await.unwrap();
        let (_, mut messages) = self
            .bus
            .event_messages_from(EventsFrom::Sequence(1))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        {
            let m = m.unwrap();
            out.push(m.payload);
            if m.sequence >= state.last_sequence {
                break;
            }
        }
        out
    }

    /// Stops the worker (asserting a clean stop) and ingest; drops the database and streams.
    pub async fn stop(self) {
        self.worker.shutdown().await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.env.cleanup().await;
    }
}
