//! The JetStream bus against a real NATS server (`NATS_URL`, default
//! nats://127.0.0.1:4222). Every test uses streams, subjects and a durable of its own and
//! deletes its streams at the end, so tests run in parallel and in any order.

use crate::helpers::nats as nats_common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures::StreamExt;
use runwatch::bus::{Bus, BusError, DeadLetter, StreamKind, dead_headers};
use runwatch::config::Config;
use runwatch::event::Provider;
use runwatch::trigger::Trigger;
use tokio::time::Instant;

use nats_common::{
    NatsServer, StreamsGuard, init_tracing, test_config, test_config_for, unique_suffix,
};

async fn setup() -> (Config, Bus, StreamsGuard) {
    init_tracing();
    let config = test_config();
    let guard = StreamsGuard::new(&config);
    let bus = crate::helpers::app::bus(&config).await;
    bus.ensure_consumer().await.expect("ensure consumer");
    (config, bus, guard)
}

fn event_body(id: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"schema":"runwatch.workflow_run.v1","event_id":"{id}"}}"#
    ))
}

fn trigger(n: u32) -> Trigger {
    nats_common::sample_trigger("bus-test", n)
}

/// Pulls until `want` messages were collected or `within` passed; acks each.
async fn pull_ack_all(
    puller: &mut runwatch::bus::Puller,
    want: usize,
    within: Duration,
) -> Vec<(u64, Bytes)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        for msg in puller
            .next_batch(64, Duration::from_millis(20), Duration::from_millis(500))
            .await
        {
            let seq = msg.info().expect("info").stream_sequence;
            got.push((seq, msg.message.payload.clone()));
            msg.double_ack().await.expect("ack");
        }
    }
    got
}

async fn wait_pending(bus: &Bus, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = bus.consumer_pending().await.expect("pending");
        if n == want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ensure_streams_is_idempotent_and_safe_concurrently() {
    let (config, bus, _guard) = setup().await;
    // Twice more in a row.
    bus.ensure_streams().await.expect("again");
    bus.ensure_streams().await.expect("and again");
    bus.ensure_consumer().await.expect("consumer again");

    for (kind, prefix) in [
        (StreamKind::Events, &config.streams.events_subject_prefix),
        (
            StreamKind::Triggers,
            &config.streams.triggers_subject_prefix,
        ),
        (StreamKind::Dead, &config.streams.dead_subject_prefix),
    ] {
        let mut stream = bus
            .jetstream()
            .get_stream(bus.stream_name(kind))
            .await
            .expect("stream exists");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.subjects, vec![format!("{prefix}.>")]);
        assert_eq!(
            info.config.duplicate_window,
            config.streams.duplicate_window
        );
        assert_eq!(
            info.config.storage,
            async_nats::jetstream::stream::StorageType::File
        );
        assert_eq!(info.config.num_replicas, 1);
    }

    // Fresh names, three replicas starting at once, each with its own connection.
    let fresh = test_config();
    let _fresh_guard = StreamsGuard::new(&fresh);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = fresh.clone();
        tasks.push(tokio::spawn(async move {
            let bus = Bus::connect(&c).await?;
            bus.ensure_streams().await?;
            bus.ensure_consumer().await?;
            Ok::<_, BusError>(())
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("concurrent ensure");
    }

    // A changed duplicate window is applied to the existing streams, changed consumer
    // settings to the existing durable.
    let mut changed = fresh.clone();
    changed.streams.duplicate_window = Duration::from_secs(90);
    changed.consumer.ack_wait = Duration::from_secs(45);
    changed.consumer.max_ack_pending = 500;
    let bus2 = Bus::connect(&changed).await.expect("connect");
    bus2.ensure_streams().await.expect("update");
    bus2.ensure_consumer().await.expect("update consumer");
    let mut s = bus2
        .jetstream()
        .get_stream(&fresh.streams.events)
        .await
        .expect("stream");
    assert_eq!(
        s.info().await.expect("info").config.duplicate_window,
        Duration::from_secs(90)
    );
    let consumer = s
        .consumer_info(&fresh.consumer.durable)
        .await
        .expect("consumer");
    assert_eq!(consumer.config.ack_wait, Duration::from_secs(45));
    assert_eq!(consumer.config.max_ack_pending, 500);
    assert_eq!(consumer.config.max_deliver, -1);
    assert_eq!(
        consumer.config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    assert_eq!(
        consumer.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::All
    );
}

#[tokio::test]
async fn publish_errors_are_mapped() {
    init_tracing();
    // No streams at all: nothing answers.
    let mut config = test_config();
    config.nats.request_timeout = Duration::from_secs(1);
    let _guard = StreamsGuard::new(&config);
    let bus = Bus::connect(&config).await.expect("connect");
    let err = bus
        .publish_event(Provider::Github, "x1", event_body("x1"))
        .await
        .expect_err("no stream");
    assert!(matches!(err, BusError::Publish { .. }), "{err}");
    assert!(err.is_transient());

    // Something listens but never acknowledges: a PubAck timeout.
    let _sub = bus
        .client()
        .subscribe(format!("{}.>", config.streams.events_subject_prefix))
        .await
        .expect("subscribe");
    bus.client().flush().await.expect("flush");
    let t0 = Instant::now();
    let err = bus
        .publish_event(Provider::Github, "x2", event_body("x2"))
        .await
        .expect_err("no ack");
    assert!(err.is_timeout(), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    let results = bus.publish_triggers(&[trigger(1)]).await;
    assert!(
        results[0]
            .as_ref()
            .is_err_and(|e| matches!(e, BusError::Publish { .. }))
    );
}

#[tokio::test]
async fn publish_event_dedupes_on_event_id() {
    let (config, bus, _guard) = setup().await;
    let first = bus
        .publish_event(Provider::Github, "evt-1", event_body("evt-1"))
        .await
        .expect("publish");
    assert!(!first.duplicate);
    let again = bus
        .publish_event(Provider::Github, "evt-1", event_body("evt-1"))
        .await
        .expect("publish again");
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    let other = bus
        .publish_event(Provider::Gitlab, "evt-2", event_body("evt-2"))
        .await
        .expect("publish other");
    assert!(!other.duplicate);
    assert_eq!(other.sequence, first.sequence + 1);
    assert_eq!(
        bus.stream_state(StreamKind::Events)
            .await
            .expect("state")
            .messages,
        2
    );
    assert_eq!(
        bus.event_subject(Provider::Gitlab),
        format!("{}.gitlab", config.streams.events_subject_prefix)
    );

    // An id that cannot be a header value is refused, not a panic.
    let err = bus
        .publish_event(Provider::Github, "bad\r\nid", event_body("x"))
        .await
        .expect_err("CR/LF in id");
    assert!(matches!(err, BusError::Invalid { .. }), "{err}");
    assert!(!err.is_transient());
    let err = bus
        .publish_event(Provider::Github, "", event_body("x"))
        .await
        .expect_err("empty id");
    assert!(matches!(err, BusError::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn puller_gets_batches_and_acks() {
    let (_config, bus, _guard) = setup().await;
    let mut puller = bus.puller().await.expect("puller");

    // Nothing there: an empty batch after `idle`.
    let t0 = Instant::now();
    let empty = puller
        .next_batch(10, Duration::from_millis(10), Duration::from_millis(300))
        .await;
    assert!(empty.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(290));
    assert!(t0.elapsed() < Duration::from_secs(3));

    for i in 0..10 {
        let id = format!("e{i}");
        bus.publish_event(Provider::Github, &id, event_body(&id))
            .await
            .expect("publish");
    }
    let mut seqs = Vec::new();
    let first = puller
        .next_batch(4, Duration::from_millis(200), Duration::from_secs(5))
        .await;
    assert_eq!(first.len(), 4, "a full batch of max");
    let mut all = first;
    let deadline = Instant::now() + Duration::from_secs(10);
    while all.len() < 10 && Instant::now() < deadline {
        let batch = puller
            .next_batch(4, Duration::from_millis(100), Duration::from_secs(1))
            .await;
        assert!(batch.len() <= 4);
        all.extend(batch);
    }
    assert_eq!(all.len(), 10);
    for msg in &all {
        let info = msg.info().expect("info");
        assert_eq!(info.delivered, 1);
        seqs.push(info.stream_sequence);
        msg.ack().await.expect("ack");
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    assert_eq!(wait_pending(&bus, 0).await, 0);

    // Linger: one message returns after about `linger`, not after `idle`.
    bus.publish_event(Provider::Github, "late", event_body("late"))
        .await
        .expect("publish");
    let t0 = Instant::now();
    let one = puller
        .next_batch(10, Duration::from_millis(100), Duration::from_secs(10))
        .await;
    assert_eq!(one.len(), 1);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    one[0].ack().await.expect("ack");
}

#[tokio::test]
async fn nak_with_delay_is_redelivered() {
    let (_config, bus, _guard) = setup().await;
    let mut puller = bus.puller().await.expect("puller");
    bus.publish_event(Provider::Github, "n1", event_body("n1"))
        .await
        .expect("publish");
    let batch = puller
        .next_batch(10, Duration::from_millis(20), Duration::from_secs(5))
        .await;
    assert_eq!(batch.len(), 1);
    let seq = batch[0].info().expect("info").stream_sequence;
    assert_eq!(batch[0].info().expect("info").delivered, 1);
    let naked_at = Instant::now();
    batch[0]
        .ack_with(AckKind::Nak(Some(Duration::from_millis(700))))
        .await
        .expect("nak");
    assert_eq!(bus.consumer_pending().await.expect("pending"), 1);

    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while again.is_empty() && Instant::now() < deadline {
        again = puller
            .next_batch(10, Duration::from_millis(20), Duration::from_millis(500))
            .await;
    }
    assert_eq!(again.len(), 1);
    assert!(
        naked_at.elapsed() >= Duration::from_millis(600),
        "the delay was honoured"
    );
    let info = again[0].info().expect("info");
    assert_eq!(info.delivered, 2);
    assert_eq!(info.stream_sequence, seq);
    again[0].ack_with(AckKind::Term).await.expect("term");
    assert_eq!(wait_pending(&bus, 0).await, 0);
}

#[tokio::test]
async fn publish_triggers_pipelined_and_deduplicated() {
    let (config, bus, _guard) = setup().await;
    let t1 = trigger(1);
    let t2 = trigger(2);
    let results = bus
        .publish_triggers(&[t1.clone(), t1.clone(), t2.clone()])
        .await;
    assert_eq!(results.len(), 3);
    for r in &results {
        r.as_ref().expect("acked");
    }
    // A republish (e.g. by the outbox relay) stores nothing new.
    for r in bus.publish_triggers(std::slice::from_ref(&t1)).await {
        r.expect("acked");
    }
    assert!(bus.publish_triggers(&[]).await.is_empty());

    let stored = bus.read_all_triggers().await.expect("read");
    assert_eq!(stored.len(), 2);
    let decoded: Vec<Trigger> = stored
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).expect("trigger JSON"))
        .collect();
    assert_eq!(decoded, vec![t1.clone(), t2.clone()]);
    assert_eq!(stored[0].0, 1);
    assert_eq!(stored[1].0, 2);

    // The raw stream: from the start, and only new ones.
    let mut from_start = bus.trigger_messages(true).await.expect("tail");
    let (seq, _) = tokio::time::timeout(Duration::from_secs(5), from_start.next())
        .await
        .expect("in time")
        .expect("some")
        .expect("ok");
    assert_eq!(seq, 1);
    let mut only_new = bus.trigger_messages(false).await.expect("tail new");
    let t3 = trigger(3);
    for r in bus.publish_triggers(std::slice::from_ref(&t3)).await {
        r.expect("acked");
    }
    let (seq, body) = tokio::time::timeout(Duration::from_secs(5), only_new.next())
        .await
        .expect("in time")
        .expect("some")
        .expect("ok");
    assert_eq!(seq, 3);
    assert_eq!(serde_json::from_slice::<Trigger>(&body).expect("json"), t3);

    // The subject is <triggers prefix>.<provider> and the msg id is the trigger id.
    let stream = bus
        .jetstream()
        .get_stream(&config.streams.triggers)
        .await
        .expect("stream");
    let raw = stream.get_raw_message(1).await.expect("raw");
    assert_eq!(
        raw.subject.as_str(),
        format!("{}.github", config.streams.triggers_subject_prefix)
    );
    assert_eq!(
        raw.headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string()),
        Some(t1.trigger_id.to_string())
    );
}

#[tokio::test]
async fn dead_letter_carries_headers_and_dedupes() {
    let (config, bus, _guard) = setup().await;
    let detail = format!("line one\r\nline two {}", "x".repeat(3000));
    let payload = b"not json at all\n\x00\xff".to_vec();
    let letter = DeadLetter {
        reason: "not_json",
        detail: &detail,
        original_subject: "rwt.some.events.github",
        stream_seq: 42,
        deliveries: 3,
        payload: &payload,
    };
    bus.dead_letter(&letter).await.expect("dead letter");
    bus.dead_letter(&letter).await.expect("redo is fine");
    bus.dead_letter(&DeadLetter {
        reason: "weird.reason *",
        stream_seq: 43,
        ..letter
    })
    .await
    .expect("odd reason");

    let dead = bus.read_all_dead().await.expect("read");
    assert_eq!(dead.len(), 2, "the redo was deduplicated");
    let d = &dead[0];
    assert_eq!(
        d.subject,
        format!("{}.not_json", config.streams.dead_subject_prefix)
    );
    assert_eq!(d.reason, "not_json");
    assert!(d.detail.starts_with("line one  line two"), "{}", d.detail);
    assert!(!d.detail.contains('\n') && !d.detail.contains('\r'));
    assert!(d.detail.len() <= 1024);
    assert_eq!(d.original_subject, "rwt.some.events.github");
    assert_eq!(d.original_seq, Some(42));
    assert_eq!(d.deliveries, Some(3));
    assert_eq!(d.truncated_from, None);
    assert_eq!(d.payload.as_ref(), payload.as_slice());
    assert_eq!(
        d.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()),
        Some(format!("dead-{}-42", config.streams.events))
    );
    assert_eq!(
        d.headers
            .get(dead_headers::DELIVERIES)
            .map(|v| v.as_str().to_string()),
        Some("3".to_string())
    );
    assert_eq!(
        dead[1].subject,
        format!("{}.weird_reason__", config.streams.dead_subject_prefix)
    );

    // A payload at the server's limit is cut to fit next to the headers, not refused.
    let huge = vec![b'x'; bus.client().max_payload()];
    bus.dead_letter(&DeadLetter {
        stream_seq: 44,
        payload: &huge,
        ..letter
    })
    .await
    .expect("huge payload");
    let dead = bus.read_all_dead().await.expect("read");
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[2].truncated_from, Some(huge.len() as u64));
    assert!(dead[2].payload.len() < huge.len());
}

#[tokio::test]
async fn consumer_pending_counts_undelivered_and_unacked() {
    let (_config, bus, _guard) = setup().await;
    assert_eq!(bus.consumer_pending().await.expect("pending"), 0);
    for i in 0..5 {
        let id = format!("p{i}");
        bus.publish_event(Provider::Github, &id, event_body(&id))
            .await
            .expect("publish");
    }
    assert_eq!(wait_pending(&bus, 5).await, 5);
    let mut puller = bus.puller().await.expect("puller");
    let batch = puller
        .next_batch(2, Duration::from_millis(50), Duration::from_secs(5))
        .await;
    assert_eq!(batch.len(), 2);
    // Delivered-but-unacked still counts (and so does whatever the client prefetched).
    assert_eq!(bus.consumer_pending().await.expect("pending"), 5);
    for m in &batch {
        m.double_ack().await.expect("ack");
    }
    assert_eq!(wait_pending(&bus, 3).await, 3);
    let rest = pull_ack_all(&mut puller, 3, Duration::from_secs(10)).await;
    assert_eq!(rest.len(), 3);
    assert_eq!(wait_pending(&bus, 0).await, 0);
}

#[tokio::test]
async fn puller_recovers_when_the_consumer_is_deleted() {
    let (config, bus, _guard) = setup().await;
    let mut puller = bus.puller().await.expect("puller");
    bus.publish_event(Provider::Github, "a", event_body("a"))
        .await
        .expect("publish");
    let got = pull_ack_all(&mut puller, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);

    bus.jetstream()
        .delete_consumer_from_stream(&config.consumer.durable, &config.streams.events)
        .await
        .expect("delete consumer");
    bus.publish_event(Provider::Github, "b", event_body("b"))
        .await
        .expect("publish");
    // The recreated durable starts from the beginning: "a" comes again (harmless by
    // design: events merge idempotently), then "b".
    let got = pull_ack_all(&mut puller, 2, Duration::from_secs(20)).await;
    let seqs: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.contains(&2),
        "b delivered after the consumer was recreated: {seqs:?}"
    );
    assert!(puller.is_pulling());
}

#[tokio::test]
async fn puller_recovers_when_the_events_stream_is_deleted() {
    let (config, bus, _guard) = setup().await;
    let mut puller = bus.puller().await.expect("puller");
    bus.jetstream()
        .delete_stream(&config.streams.events)
        .await
        .expect("delete stream");
    // The puller re-creates the stream and the durable while it waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut published = false;
    while got.is_empty() && Instant::now() < deadline {
        if !published {
            published = bus
                .publish_event(Provider::Github, "z", event_body("z"))
                .await
                .is_ok();
        }
        for msg in puller
            .next_batch(10, Duration::from_millis(20), Duration::from_millis(300))
            .await
        {
            got.push(msg.message.payload.clone());
            msg.ack().await.expect("ack");
        }
    }
    assert_eq!(got, vec![event_body("z")]);
}

#[tokio::test]
async fn puller_survives_a_server_restart() {
    init_tracing();
    let store = tempfile::tempdir().expect("tempdir");
    let mut server = NatsServer::start(store.path());
    let config = test_config_for(&server.url(), &unique_suffix());

    let bus = Bus::connect(&config).await.expect("connect");
    // JetStream may need a moment after the port opens.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match bus.ensure_streams().await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for JetStream: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("JetStream not ready: {e}"),
        }
    }
    bus.ensure_consumer().await.expect("consumer");
    let mut puller = bus.puller().await.expect("puller");

    for id in ["before-1", "before-2"] {
        bus.publish_event(Provider::Github, id, event_body(id))
            .await
            .expect("publish");
    }
    let got = pull_ack_all(&mut puller, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);

    server.kill();
    // While the server is down the puller returns empty batches after `idle` and does not
    // fail (long enough for missed heartbeats and failed recovery attempts).
    for _ in 0..3 {
        let t0 = Instant::now();
        let batch = puller
            .next_batch(10, Duration::from_millis(20), Duration::from_millis(1200))
            .await;
        assert!(batch.is_empty());
        assert!(
            t0.elapsed() >= Duration::from_millis(1100),
            "{:?}",
            t0.elapsed()
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
    server.restart();

    // Publish after the restart (retrying while the client reconnects).
    let after = ["after-1", "after-2", "after-3"];
    let start = Instant::now();
    for id in after {
        loop {
            match bus
                .publish_event(Provider::Github, id, event_body(id))
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "cannot publish after restart: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !after.iter().all(|id| seen.contains(*id)) {
        for msg in puller
            .next_batch(10, Duration::from_millis(20), Duration::from_millis(500))
            .await
        {
            let body = String::from_utf8_lossy(&msg.message.payload).to_string();
            for id in after.iter().chain(["before-1", "before-2"].iter()) {
                if body.contains(&format!("\"{id}\"")) {
                    seen.insert(id.to_string());
                }
            }
            msg.ack().await.expect("ack");
        }
    }
    assert!(
        after.iter().all(|id| seen.contains(*id)),
        "messages published after the restart were delivered within 30 s: {seen:?} (after {:?})",
        start.elapsed()
    );
    assert!(puller.is_pulling());
    bus.drain().await.expect("drain");
    server.kill();
}
