//! Recovery without a hand, each fault on its own: a nats-server restart (the worker pulls
//! again), Postgres down (naks with backoff, `/readyz` 503, then resumes and is ready again),
//! and an exhausted pool with killed backends. The server that a test kills is its own
//! process (tests/api/helpers/procs.rs); the worker runs in this process.

use crate::helpers::app::eventually;
use crate::helpers::procs;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::helpers::env::TestEnv;
use crate::helpers::live::{
    all_triggers, publish_in_order, publish_lines, start_worker, wait_quiet,
};
use runwatch::bus::Bus;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A group of one run that completes with a failure: one trigger.
fn failing_group(tag: &str, sha: &str, pr: u32) -> String {
    format!(
        r#"{{"schema":"runwatch.workflow_run.v1","event_id":"{tag}-{sha}","provider":"github","repository":{{"owner":"acme","name":"recovery","id":"91"}},"commit_sha":"{sha}","branch":"f","pr_number":{pr},"run":{{"id":"{sha}-1","attempt":1,"workflow":"build","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}}}"#
    )
}

/// Trigger commit shas seen so far.
async fn fired(bus: &Bus) -> Vec<String> {
    all_triggers(bus)
        .await
        .iter()
        .map(|t| t["commit_sha"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `sha` has a trigger.
async fn wait_fired(bus: &Bus, sha: &str, within: Duration) {
    eventually(within, &format!("a trigger for {sha}"), || async {
        fired(bus).await.iter().any(|s| s == sha).then_some(())
    })
    .await;
}

/// The status code of `GET /readyz` on 127.0.0.1:`port` (0 when nothing answers).
async fn readyz(port: u16) -> u16 {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn wait_readyz(port: u16, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(within, &format!("/readyz answering {want}"), || async {
        (readyz(port).await == want).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pulls_again_after_nats_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = procs::NatsProc::start(&dir.path().join("nats")).unwrap();
    let mut env = TestEnv::new().await;
    env.config.nats.url = nats.url();
    env.config.consumer.heartbeat = Duration::from_secs(1);
    let worker = start_worker(&env.config);
    let bus = crate::helpers::app::bus(&env.config).await;
    publish_in_order(&bus, &failing_group("n", "before", 1)).await;
    wait_fired(&bus, "before", Duration::from_secs(30)).await;

    nats.restart().unwrap();
    // Published after the restart (the publisher's client reconnects by itself).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e: runwatch::event::Event =
            serde_json::from_str(&failing_group("n", "after", 2)).unwrap();
        let line = failing_group("n", "after", 2);
        match bus
            .publish_event(e.provider, &e.event_id, bytes::Bytes::from(line))
            .await
        {
            Ok(_) => break,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot publish after the restart: {err}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    wait_fired(&bus, "after", Duration::from_secs(60)).await;
    assert!(!worker.handle.is_finished(), "the worker is still running");
    wait_quiet(&env.config, &bus, Duration::from_secs(30)).await;
    let shas = fired(&bus).await;
    worker.shutdown().await;
    env.cleanup().await;
    assert_eq!(
        shas,
        vec!["before".to_string(), "after".to_string()],
        "each fired once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_holds_the_batch_while_postgres_is_down_then_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = procs::PgProc::start(&dir.path().join("pg")).unwrap();
    let mut env = TestEnv::new().await;
    env.config.database.url = pg.url("runwatch");
    env.config.database.acquire_timeout = Duration::from_secs(1);
    env.config.retry.min_delay = Duration::from_millis(200);
    env.config.retry.max_delay = Duration::from_secs(2);
    env.config.consumer.max_deliver = 50;
    let http_port = procs::free_port().unwrap();
    env.config.http.listen = format!("127.0.0.1:{http_port}").parse().unwrap();
    let worker = start_worker(&env.config);
    let bus = crate::helpers::app::bus(&env.config).await;
    wait_readyz(http_port, 200, Duration::from_secs(30)).await;
    publish_in_order(&bus, &failing_group("p", "up", 1)).await;
    wait_fired(&bus, "up", Duration::from_secs(30)).await;

    pg.stop_immediate().unwrap();
    let took = wait_readyz(http_port, 503, Duration::from_secs(10)).await;
    eprintln!("/readyz 503 after {took:?}");
    let consumer_seq = || async {
        let stream = bus
            .jetstream()
            .get_stream(&env.config.streams.events)
            .await
            .unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&env.config.consumer.durable)
            .await
            .unwrap();
        c.info().await.unwrap().delivered.consumer_sequence
    };
    let before = consumer_seq().await;
    publish_in_order(&bus, &failing_group("p", "down", 2)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let deliveries = consumer_seq().await - before;
    assert_eq!(
        readyz(http_port).await,
        503,
        "still not ready while the database is down"
    );
    // The batch is held and retried in the worker (backoff 200ms .. 2s, plus a 1 s acquire
    // timeout per attempt) and kept in progress: delivered once, no delivery spent.
    assert_eq!(
        deliveries, 1,
        "{deliveries} deliveries in 8 s while the database was down"
    );
    assert!(!fired(&bus).await.contains(&"down".to_string()));

    pg.start_again().unwrap();
    let took = wait_readyz(http_port, 200, Duration::from_secs(30)).await;
    eprintln!("/readyz 200 {took:?} after Postgres came back; {deliveries} deliveries while down");
    wait_fired(&bus, "down", Duration::from_secs(30)).await;
    wait_quiet(&env.config, &bus, Duration::from_secs(30)).await;
    let dead = bus.read_all_dead().await.unwrap();
    let shas = fired(&bus).await;
    worker.shutdown().await;
    env.cleanup().await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    assert_eq!(shas, vec!["up".to_string(), "down".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_an_exhausted_pool_and_killed_backends() {
    let mut env = TestEnv::new().await;
    env.config.database.max_connections = 1;
    env.config.database.acquire_timeout = Duration::from_secs(1);
    env.config.consumer.batch_size = 16;
    env.config.consumer.max_deliver = 50;
    let trace = crate::helpers::trace::shuffled(23, 60, 2, 0.5, 0.05);
    let (lines, failing) = (trace.lines(), trace.must_fire());
    assert!(!failing.is_empty());
    let worker = start_worker(&env.config);
    let bus = crate::helpers::app::bus(&env.config).await;
    let half = lines.len() / 2;
    publish_lines(&bus, &lines[..half]).await;
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;

    // A long transaction holding every group row: the worker's one connection waits on the
    // lock, so its other tasks cannot get one (pool exhausted) until the lock goes.
    let mut holder = sqlx::PgConnection::connect(&env.config.database.url)
        .await
        .unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM groups FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    publish_lines(&bus, &lines[half..]).await;
    let mut admin = sqlx::PgConnection::connect(&env.config.database.url)
        .await
        .unwrap();
    let terminate =
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity
                     WHERE application_name = 'runwatch' AND datname = current_database()";
    let mut killed = 0i64;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let n: i64 = sqlx::Row::get(
            &sqlx::query(terminate).fetch_one(&mut admin).await.unwrap(),
            "n",
        );
        killed += n;
    }
    tx.rollback().await.unwrap();
    holder.close().await.unwrap();
    // And once more while it works: as soon as it has a backend again.
    let mut n = 0i64;
    let started = std::time::Instant::now();
    while n == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker opened no backend within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        n = sqlx::Row::get(
            &sqlx::query(terminate).fetch_one(&mut admin).await.unwrap(),
            "n",
        );
    }
    killed += n;
    admin.close().await.unwrap();
    assert!(
        killed >= 2,
        "the worker's backends were terminated ({killed})"
    );

    wait_quiet(&env.config, &bus, Duration::from_secs(120)).await;
    let triggers = all_triggers(&bus).await;
    let dead = bus.read_all_dead().await.unwrap();
    assert!(!worker.handle.is_finished(), "the worker is still running");
    worker.shutdown().await;
    env.cleanup().await;
    let shas: Vec<String> = triggers
        .iter()
        .map(|t| t["commit_sha"].as_str().unwrap().to_string())
        .collect();
    let set: BTreeSet<String> = shas.iter().cloned().collect();
    assert_eq!(set.len(), shas.len(), "no group fired twice");
    assert_eq!(set, failing, "exactly the failing groups fired");
    assert!(
        dead.is_empty(),
        "nothing dead-lettered: {:?}",
        dead.iter().map(|d| &d.detail).collect::<Vec<_>>()
    );
}
