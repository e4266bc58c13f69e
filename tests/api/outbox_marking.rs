//! The triggers a worker publishes are marked sent by that worker: by the next batch's
//! record transaction, or by a statement of their own when no batch follows. With a lease
//! longer than the test, the relay cannot be the one that marks them.

use std::time::{Duration, Instant};

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_lines, start_worker};
use sqlx::Row;

/// A group of one failed run: it fires.
fn failing(i: usize) -> String {
    format!(
        r#"{{"schema":"runwatch.workflow_run.v1","event_id":"m{i}","provider":"github","repository":{{"owner":"acme","name":"marks","id":"78"}},"commit_sha":"c{i:04}","branch":"f","pr_number":{},"run":{{"id":"{i}","attempt":1,"workflow":"build","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}}}"#,
        i + 1
    )
}

/// Polls the outbox until `want` rows are there and all are sent, for up to 10 s; returns
/// (rows, sent, most attempts).
async fn wait_marked(pool: &sqlx::PgPool, want: i64) -> (i64, i64, i32) {
    let started = Instant::now();
    loop {
        let row = sqlx::query(
            "SELECT count(*) AS n, count(sent_at) AS sent, COALESCE(max(attempts), 0) AS attempts FROM outbox",
        )
        .fetch_one(pool)
        .await
        .expect("outbox");
        let got = (row.get("n"), row.get("sent"), row.get("attempts"));
        if (got.0 == want && got.1 == want) || started.elapsed() > Duration::from_secs(10) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_triggers_are_marked_sent_by_the_worker_not_the_relay() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    // Longer than every wait below: a trigger marked sent was marked by the consume task.
    config.outbox.lease = Duration::from_secs(60);
    // Small batches, so the marks of one batch ride on a later batch's transaction.
    config.consumer.batch_size = 5;
    config.validate().expect("config");
    let bus = crate::helpers::app::bus(&config).await;
    let pool = runwatch::store::connect(&config.database)
        .await
        .expect("pool");
    let worker = start_worker(&config);

    // One trigger and nothing after it: marked on its own.
    publish_lines(&bus, &[failing(0)]).await;
    let alone = wait_marked(&pool, 1).await;

    // 60 triggers in batches of 5: most marked by the next batches' transactions.
    let lines: Vec<String> = (1..=60).map(failing).collect();
    publish_lines(&bus, &lines).await;
    let burst = wait_marked(&pool, 61).await;

    let published = all_triggers(&bus).await.len();
    worker.shutdown().await;
    pool.close().await;
    env.cleanup().await;
    assert_eq!(alone, (1, 1, 0), "(rows, sent, attempts) after one trigger");
    assert_eq!(burst, (61, 61, 0), "(rows, sent, attempts) after the burst");
    assert_eq!(published, 61, "each trigger published once");
}
