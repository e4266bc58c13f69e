//! `runwatch dead list` and `dead redrive`: a dead letter's original payload goes back to
//! its original subject with a fresh Nats-Msg-Id, is applied, and leaves the dead stream.

use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, start_worker, wait_quiet};
use runwatch::bus::{DeadLetter, StreamKind};
use runwatch::dead_letters::{RedriveSelection, dead_list, redrive};
use runwatch::event::Provider;

const GOOD: &str = r#"{"schema":"runwatch.workflow_run.v1","event_id":"g1","provider":"github","repository":{"owner":"acme","name":"p","id":"5"},"commit_sha":"cafe","branch":"f","pr_number":1,"run":{"id":"1","attempt":1,"workflow":"build","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven() {
    let env = TestEnv::new().await;
    let config = env.config.clone();
    let bus = crate::helpers::app::bus(&config).await;
    let subject = bus.event_subject(Provider::Github);

    // A valid event that was dead-lettered (as after max_deliver during an outage), with its
    // original event id still in the duplicate window of the events stream.
    let ack = bus
        .publish_event(
            Provider::Github,
            "g1",
            bytes::Bytes::from_static(GOOD.as_bytes()),
        )
        .await
        .unwrap();
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
    assert!(
        lines[0].contains(&format!("subject={subject} original_seq={}", ack.sequence)),
        "{text}"
    );
    assert!(
        lines[0].contains("detail=\"database: connection refused\""),
        "{text}"
    );
    assert!(
        lines[0].contains(r#"payload="{\"schema\":\"runwatch.workflow_run.v1\",\"ev…""#),
        "{text}"
    );
    assert!(
        lines[1].starts_with("seq=2 reason=not_json subject=elsewhere.github original_seq=999"),
        "{text}"
    );

    // The same through the binary.
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(["dead", "list"])
        .envs(env.env_vars())
        .output()
        .unwrap();
    assert!(
        bin.status.success(),
        "{}",
        String::from_utf8_lossy(&bin.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&bin.stdout).lines().count(), 2);

    // redrive --seq 1: republished (not deduplicated away although g1 is in the window),
    // applied by the worker, and gone from the dead stream.
    let worker = start_worker(&config);
    let r = redrive(&bus, RedriveSelection::Sequence(1)).await.unwrap();
    assert_eq!(r.redriven.len(), 1);
    assert!(
        r.redriven[0].1 > ack.sequence,
        "a new message in the events stream"
    );
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
    assert_eq!(
        bus.stream_state(StreamKind::Dead).await.unwrap().messages,
        1
    );

    worker.shutdown().await;
    env.cleanup().await;
}

/// Runs `runwatch dead ARGS` with a 30 s `nats.request_timeout`; returns (exit status,
/// stdout, stderr, how long it took).
fn dead_cli(env: &TestEnv, args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .arg("dead")
        .args(args)
        .envs(env.env_vars())
        .env("RUNWATCH_NATS__REQUEST_TIMEOUT", "30s")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

fn listed(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|l| {
            l.strip_prefix("seq=")
                .and_then(|r| r.split(' ').next())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Issue 17 item 2: redriving (deleting) the newest dead letter left `dead list` and `dead
/// redrive` waiting for the stream's last sequence, which no longer exists, until
/// `nats.request_timeout` ran out (exit 2). Deleted letters anywhere (newest, middle) must
/// not stall either command: each answers well within the 30 s timeout it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_list_and_redrive_do_not_wait_for_deleted_letters() {
    let env = TestEnv::new().await;
    let config = env.config.clone();
    let bus = crate::helpers::app::bus(&config).await;
    let subject = bus.event_subject(Provider::Github);
    for n in 1..=5u64 {
        bus.dead_letter(&DeadLetter {
            reason: "max_deliver",
            detail: "database: connection refused",
            original_subject: &subject,
            stream_seq: n,
            deliveries: 10,
            payload: format!("letter {n}").as_bytes(),
        })
        .await
        .unwrap();
    }
    let prompt = Duration::from_secs(10);

    // Redrive the newest letter: the stream's last sequence (5) is now deleted.
    let (code, out, err, took) = dead_cli(&env, &["redrive", "--seq", "5"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("redriven dead_seq=5 "), "{out}");
    let (code, out, err, took_list) = dead_cli(&env, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(listed(&out), vec![1, 2, 3, 4], "{out}");
    assert!(
        took < prompt && took_list < prompt,
        "redrive {took:?}, list {took_list:?}"
    );

    // A deleted letter in the middle, then the newest remaining one redriven.
    bus.jetstream()
        .get_stream(&config.streams.dead)
        .await
        .unwrap()
        .delete_message(2)
        .await
        .unwrap();
    let (code, out, err, took) = dead_cli(&env, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(listed(&out), vec![1, 3, 4], "{out}");
    assert!(took < prompt, "list {took:?}");
    let (code, _, err, took) = dead_cli(&env, &["redrive", "--seq", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(took < prompt, "redrive {took:?}");

    // The rest, all at once; then nothing is left, and listing an empty stream is prompt.
    let (code, out, err, took) = dead_cli(&env, &["redrive", "--all"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("redriven dead_seq=1 ") && out.contains("redriven dead_seq=3 "),
        "{out}"
    );
    assert!(err.contains("redriven=2 refused=0"), "{err}");
    assert!(took < prompt, "redrive --all {took:?}");
    let (code, out, err, took) = dead_cli(&env, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("0 dead letters"), "{err}");
    assert!(took < prompt, "list {took:?}");
    assert!(bus.read_all_dead().await.unwrap().is_empty());

    // The library reader too, with letters deleted and new ones stored after them.
    for n in 6..=8u64 {
        bus.dead_letter(&DeadLetter {
            reason: "not_json",
            detail: "x",
            original_subject: &subject,
            stream_seq: 100 + n,
            deliveries: 1,
            payload: b"junk",
        })
        .await
        .unwrap();
    }
    bus.jetstream()
        .get_stream(&config.streams.dead)
        .await
        .unwrap()
        .delete_message(8)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let left = bus.read_all_dead().await.unwrap();
    assert_eq!(
        left.iter().map(|d| d.sequence).collect::<Vec<_>>(),
        vec![6, 7]
    );
    assert!(
        started.elapsed() < config.nats.request_timeout,
        "{:?}",
        started.elapsed()
    );
    // What a quiet read asks the stream: the first message stored at or after a sequence.
    assert_eq!(
        bus.next_stored_sequence(StreamKind::Dead, 1).await.unwrap(),
        Some(6)
    );
    assert_eq!(
        bus.next_stored_sequence(StreamKind::Dead, 7).await.unwrap(),
        Some(7)
    );
    assert_eq!(
        bus.next_stored_sequence(StreamKind::Dead, 8).await.unwrap(),
        None
    );

    env.cleanup().await;
}
