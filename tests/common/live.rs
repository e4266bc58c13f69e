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
