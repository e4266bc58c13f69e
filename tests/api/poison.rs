//! Poison input lands in the dead-letter stream with its reason; the worker carries on.

use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_in_order, start_worker, wait_quiet};
use futures::StreamExt;
use runwatch::event::Provider;

const GOOD: &str = r#"{"schema":"runwatch.workflow_run.v1","event_id":"g1","provider":"github","repository":{"owner":"acme","name":"p","id":"5"},"commit_sha":"cafe","branch":"f","pr_number":1,"run":{"id":"1","attempt":1,"workflow":"build","status":"completed","conclusion":"timed_out","updated_at":"2026-03-01T10:00:00Z"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_with_its_reason_and_the_worker_carries_on() {
    let env = TestEnv::new().await;
    let bus = crate::helpers::app::bus(&env.config).await;
    let poison: Vec<(&str, Vec<u8>, &str)> = vec![
        ("p1", b"this is not json".to_vec(), "not_json"),
        (
            "p2",
            GOOD.replace("\"pr_number\":1", "\"pr_number\":\"one\"")
                .into_bytes(),
            "invalid",
        ),
        (
            "p3",
            GOOD.replace("workflow_run.v1", "workflow_run.v0")
                .into_bytes(),
            "schema",
        ),
        (
            "p4",
            format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(),
            "oversize",
        ),
    ];
    for (id, body, _) in &poison {
        bus.publish_event(Provider::Github, id, bytes::Bytes::from(body.clone()))
            .await
            .unwrap();
    }
    publish_in_order(&bus, GOOD).await;
    let worker = start_worker(&env.config);
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    let triggers = all_triggers(&bus).await;
    let mut dead = Vec::new();
    let mut stream = Box::pin(bus.dead_messages().await.unwrap());
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await {
        dead.push(m.unwrap());
    }
    worker.shutdown().await;
    let prefix = env.config.streams.events_subject_prefix.clone();
    env.cleanup().await;

    assert_eq!(triggers.len(), 1, "the good event still fired");
    assert_eq!(
        dead.len(),
        poison.len(),
        "every poison message dead-lettered once"
    );
    let mut reasons: Vec<String> = dead.iter().map(|d| d.reason.clone()).collect();
    reasons.sort();
    let mut want: Vec<String> = poison.iter().map(|p| p.2.to_string()).collect();
    want.sort();
    assert_eq!(reasons, want);
    for d in &dead {
        assert!(d.original_seq.unwrap_or(0) > 0);
        assert!(d.original_subject.starts_with(&prefix));
        assert!(!d.detail.is_empty());
    }
}
