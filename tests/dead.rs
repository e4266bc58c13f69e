//! `runwatch dead list` and `dead redrive`: a dead letter's original payload goes back to
//! its original subject with a fresh Nats-Msg-Id, is applied, and leaves the dead stream.

mod common;

use std::time::Duration;

use common::env::TestEnv;
use common::live::{all_triggers, start_worker, wait_quiet};
use runwatch::bus::{Bus, DeadLetter, StreamKind};
use runwatch::event::Provider;
use runwatch::dead::{RedriveSelection, dead_list, redrive};

const GOOD: &str = r#"{"schema":"runwatch.workflow_run.v1","event_id":"g1","provider":"github","repository":{"owner":"acme","name":"p","id":"5"},"commit_sha":"cafe","branch":"f","pr_number":1,"run":{"id":"1","attempt":1,"workflow":"build","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven() {
    let env = TestEnv::new().await;
    let config = env.config.clone();
    let bus = Bus::connect(&config).await.unwrap();
    bus.ensure_streams().await.unwrap();
    let subject = bus.event_subject(Provider::Github);

    // A valid event that was dead-lettered (as after max_deliver during an outage), with its
    // original event id still in the duplicate window of the events stream.
    let ack = bus.publish_event(Provider::Github, "g1", bytes::Bytes::from_static(GOOD.as_bytes())).await.unwrap();
    bus.jetstream()
        .get_stream(&config.streams.events)
        .await
        .unwrap()
        .delete_message(ack.sequence)
        .await
        .unwrap();
    bus.dead_letter(&DeadLetter {
        reason: "max_deliver",
        detail: "database: connection refused",
        original_subject: &subject,
        stream_seq: ack.sequence,
        deliveries: 10,
        payload: GOOD.as_bytes(),
    })
    .await
    .unwrap();
    // A dead letter whose subject is not an events subject: refused by redrive.
    bus.dead_letter(&DeadLetter {
        reason: "not_json",
        detail: "x",
        original_subject: "elsewhere.github",
        stream_seq: 999,
        deliveries: 1,
        payload: b"junk",
    })
    .await
    .unwrap();

    // list
    let mut out = Vec::new();
    assert_eq!(dead_list(&bus, 40, &mut out).await.unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("seq=1 reason=max_deliver "), "{text}");
    assert!(lines[0].contains(&format!("subject={subject} original_seq={}", ack.sequence)), "{text}");
    assert!(lines[0].contains("detail=\"database: connection refused\""), "{text}");
    assert!(lines[0].contains(r#"payload="{\"schema\":\"runwatch.workflow_run.v1\",\"ev…""#), "{text}");
    assert!(lines[1].starts_with("seq=2 reason=not_json subject=elsewhere.github original_seq=999"), "{text}");

    // The same through the binary.
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(["dead", "list"])
        .envs(env.env_vars())
        .output()
        .unwrap();
    assert!(bin.status.success(), "{}", String::from_utf8_lossy(&bin.stderr));
    assert_eq!(String::from_utf8_lossy(&bin.stdout).lines().count(), 2);

    // redrive --seq 1: republished (not deduplicated away although g1 is in the window),
    // applied by the worker, and gone from the dead stream.
    let worker = start_worker(&config);
    let r = redrive(&bus, RedriveSelection::Sequence(1)).await.unwrap();
    assert_eq!(r.redriven.len(), 1);
    assert!(r.redriven[0].1 > ack.sequence, "a new message in the events stream");
    assert!(r.refused.is_empty());
    wait_quiet(&config, &bus, Duration::from_secs(60)).await;
    let triggers = all_triggers(&bus).await;
    assert_eq!(triggers.len(), 1, "the redriven event fired");
    assert_eq!(triggers[0]["pr_number"], 1);
    // Redriving the same letter again is not possible: it is gone.
    assert!(redrive(&bus, RedriveSelection::Sequence(1)).await.is_err());

    // redrive --all: the foreign subject is refused and stays.
    let r = redrive(&bus, RedriveSelection::All).await.unwrap();
    assert!(r.redriven.is_empty());
    assert_eq!(r.refused.len(), 1);
    assert_eq!(r.refused[0].0, 2);
    let left = bus.read_all_dead().await.unwrap();
    assert_eq!(left.iter().map(|d| d.sequence).collect::<Vec<_>>(), vec![2]);
    assert_eq!(bus.stream_state(StreamKind::Dead).await.unwrap().messages, 1);

    worker.shutdown().await;
    env.cleanup().await;
}
