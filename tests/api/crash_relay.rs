//! A crash between commit and publish (injected: the real binary exits right after the
//! deciding transaction commits): the trigger is in the outbox, and the relay of the next
//! worker publishes it once.

use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_in_order, start_worker, wait_quiet};
use sqlx::Row;

const EVENTS: &str = r#"{"schema":"runwatch.workflow_run.v1","event_id":"c1","provider":"github","repository":{"owner":"acme","name":"crash","id":"77"},"commit_sha":"aaaa","branch":"f","pr_number":3,"run":{"id":"1","attempt":1,"workflow":"build","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}
{"schema":"runwatch.workflow_run.v1","event_id":"c2","provider":"github","repository":{"owner":"acme","name":"crash","id":"77"},"commit_sha":"bbbb","branch":"f","pr_number":4,"run":{"id":"2","attempt":1,"workflow":"build","status":"completed","conclusion":"success","updated_at":"2026-03-01T10:00:01Z"}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test enables it)"
)]
async fn relay_publishes_a_trigger_whose_worker_crashed_after_commit() {
    let env = TestEnv::new().await;
    let bus = crate::helpers::app::bus(&env.config).await;
    publish_in_order(&bus, EVENTS).await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .arg("run")
        .envs(env.env_vars())
        .env("RUNWATCH_CRASH_AFTER_COMMIT", "1")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("crashed in time")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "the injected crash happened; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let unsent: i64 = sqlx::query("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(
        unsent, 1,
        "the decision committed, the trigger was not published"
    );
    assert!(
        all_triggers(&bus).await.is_empty(),
        "nothing published before the crash"
    );

    let worker = start_worker(&env.config);
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    let triggers = all_triggers(&bus).await;
    let attempts: i32 = sqlx::query("SELECT attempts FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("attempts");
    // The relay publishes the trace context written with the decision (docs/design.md
    // "Trace context"): the message's traceparent is the outbox row's.
    let stored: Option<String> = sqlx::query("SELECT traceparent FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("traceparent");
    let relayed = bus
        .jetstream()
        .get_stream(&env.config.streams.triggers)
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    let header = relayed
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_string());
    worker.shutdown().await;
    pool.close().await;
    env.cleanup().await;
    assert_eq!(triggers.len(), 1, "published exactly once: {triggers:?}");
    assert_eq!(triggers[0]["commit_sha"], "aaaa");
    assert!(attempts >= 1, "published by the relay");
    assert!(stored.is_some(), "the decision stored a trace context");
    assert_eq!(header, stored, "the relayed trigger carries it");
}
