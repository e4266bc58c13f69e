//! `runwatch replay`: into the same database it publishes nothing new; into a fresh,
//! migrated database it publishes the same trigger ids; `--dry-run` evaluates from an empty
//! state in memory, prints the triggers that would fire, and never touches the database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_in_order, start_worker, wait_quiet};
use runwatch::bus::{EventsFrom, StreamKind};
use runwatch::config::Config;
use runwatch::engine::Engine;
use runwatch::replay::{ReplayOptions, dry_run, replay};
use runwatch::store::{self, Store, StoreOptions};
use sqlx::Row;

/// Three pull requests with two workflows each: #1 and #3 fail, #2 succeeds; plus a push
/// build that fails (no pull request: fires nothing) and one line that is not an event.
fn events() -> String {
    let mut lines = Vec::new();
    let mut n = 0;
    for (pr, conclusion) in [(1, "failure"), (2, "success"), (3, "timed_out")] {
        for (run, wf, c) in [
            (pr * 10, "lint", "success"),
            (pr * 10 + 1, "test", conclusion),
        ] {
            for (status, concl) in [
                ("in_progress", "null".to_string()),
                ("completed", format!("\"{c}\"")),
            ] {
                n += 1;
                lines.push(format!(
                    r#"{{"schema":"runwatch.workflow_run.v1","event_id":"e{n}","provider":"github","repository":{{"owner":"acme","name":"app","id":"42"}},"commit_sha":"c{pr}","branch":"b{pr}","pr_number":{pr},"run":{{"id":"{run}","attempt":1,"workflow":"{wf}","status":"{status}","conclusion":{concl},"updated_at":"2026-03-01T10:{n:02}:00Z"}}}}"#
                ));
            }
        }
    }
    lines.push(r#"{"schema":"runwatch.workflow_run.v1","event_id":"push1","provider":"github","repository":{"owner":"acme","name":"app","id":"42"},"commit_sha":"main1","branch":"main","run":{"id":"900","workflow":"test","status":"completed","conclusion":"failure","updated_at":"2026-03-01T11:00:00Z"}}"#.to_string());
    lines.join("\n")
}

async fn open_store(config: &Config) -> Store {
    let engine = Arc::new(Engine::new(config.rule_set().unwrap(), config.limits));
    let pool = store::connect(&config.database).await.unwrap();
    Store::new(pool, engine, StoreOptions::from_config(config))
}

async fn count(store: &Store, table: &str) -> i64 {
    sqlx::query(&(format!("SELECT count(*) AS n FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get("n")
}

fn ids(triggers: &[serde_json::Value]) -> BTreeSet<String> {
    triggers
        .iter()
        .map(|t| t["trigger_id"].as_str().unwrap().to_string())
        .collect()
}

fn opts(from: EventsFrom) -> ReplayOptions {
    ReplayOptions {
        from,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_idempotent_reproduces_trigger_ids_and_dry_run_writes_nothing() {
    let env = TestEnv::new().await;
    // A fresh, migrated database for the "empty database" replays, on the same streams.
    let fresh = TestEnv::new().await;
    let mut fresh_config = env.config.clone();
    fresh_config.database.url = fresh.config.database.url.clone();
    let mut config = env.config.clone();
    config.consumer.batch_size = 4; // several batches, so state must carry across them
    fresh_config.consumer.batch_size = 4;

    let bus = crate::helpers::app::bus(&config).await;
    let published = publish_in_order(&bus, &events()).await;
    bus.publish_event(
        runwatch::event::Provider::Github,
        "junk",
        bytes::Bytes::from_static(b"not json"),
    )
    .await
    .unwrap();
    let worker = start_worker(&env.config);
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    worker.shutdown().await;
    let original = all_triggers(&bus).await;
    assert_eq!(original.len(), 2, "PRs 1 and 3 fired: {original:?}");
    let original_ids = ids(&original);
    let stream_before = bus
        .stream_state(StreamKind::Triggers)
        .await
        .unwrap()
        .messages;

    // 1. Into the same database: nothing new is decided or published.
    let same = open_store(&config).await;
    let outbox_before = count(&same, "outbox").await;
    let r = replay(&config, &same, &bus, opts(EventsFrom::Sequence(1)))
        .await
        .unwrap();
    assert_eq!(r.read, published as u64 + 1);
    assert_eq!(r.invalid, 1);
    assert_eq!(r.applied, published as u64);
    assert!(r.triggers.is_empty(), "{:?}", r.triggers);
    assert_eq!(r.published, 0);
    assert_eq!(count(&same, "outbox").await, outbox_before);
    assert_eq!(
        bus.stream_state(StreamKind::Triggers)
            .await
            .unwrap()
            .messages,
        stream_before
    );

    // 2. Dry run: from an empty state, prints the same trigger ids, writes nothing.
    let empty = open_store(&fresh_config).await;
    let mut out = Vec::new();
    let engine = Engine::new(config.rule_set().unwrap(), config.limits);
    let r = dry_run(
        &fresh_config,
        engine,
        &bus,
        opts(EventsFrom::Sequence(1)),
        &mut out,
    )
    .await
    .unwrap();
    let printed: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        ids(&printed),
        original_ids,
        "the dry run prints what would fire"
    );
    assert_eq!(r.published, 0);
    assert_eq!(
        count(&empty, "outbox").await,
        0,
        "a dry run writes no outbox row"
    );
    assert_eq!(
        count(&empty, "groups").await,
        0,
        "a dry run writes no group"
    );
    assert_eq!(
        bus.stream_state(StreamKind::Triggers)
            .await
            .unwrap()
            .messages,
        stream_before
    );

    // 3. Into the empty database for real: the same trigger ids are decided and published
    //    (JetStream's dedupe keeps the stream as it was), and marked sent.
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let r = replay(&fresh_config, &empty, &bus, opts(EventsFrom::Time(since)))
        .await
        .unwrap();
    let replayed: BTreeSet<String> = r
        .triggers
        .iter()
        .map(|t| t.trigger_id.to_string())
        .collect();
    assert_eq!(replayed, original_ids);
    assert_eq!(r.published, 2);
    assert_eq!(count(&empty, "outbox").await, 2);
    assert_eq!(empty.unsent_count().await.unwrap(), 0);
    assert_eq!(
        bus.stream_state(StreamKind::Triggers)
            .await
            .unwrap()
            .messages,
        stream_before
    );

    // 4. A start past the end reads nothing.
    let last = bus
        .stream_state(StreamKind::Events)
        .await
        .unwrap()
        .last_sequence;
    let r = replay(&config, &same, &bus, opts(EventsFrom::Sequence(last + 1)))
        .await
        .unwrap();
    assert_eq!(r.read, 0);

    same.pool().close().await;
    empty.pool().close().await;
    fresh.cleanup().await;
    env.cleanup().await;
}

/// Runs `runwatch replay ARGS` with a 30 s `nats.request_timeout`; returns (exit status,
/// stdout, stderr, how long it took).
fn replay_cli(env: &TestEnv, args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .arg("replay")
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

/// Issue 17 item 4: `--since 9999-01-01T00:00:00Z` overflowed the server's int64
/// nanoseconds and replayed the whole stream; a start time NATS cannot hold is refused
/// (exit 2, naming the flag) before anything is read. And a replay never waits for deleted
/// events (the newest, or one in the middle): it ends promptly at what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_times_nats_cannot_hold_and_skips_deleted_events() {
    let env = TestEnv::new().await;
    let bus = crate::helpers::app::bus(&env.config).await;
    let published = publish_in_order(&bus, &events()).await as u64;
    let last = bus
        .stream_state(StreamKind::Events)
        .await
        .unwrap()
        .last_sequence;
    assert_eq!(last, published);

    for (since, says) in [
        (
            "9999-01-01T00:00:00Z",
            "the latest time NATS JetStream holds",
        ),
        (
            "2262-04-11T23:47:16.854775808Z",
            "the latest time NATS JetStream holds",
        ),
        (
            "1677-09-21T00:12:43Z",
            "the earliest time NATS JetStream holds",
        ),
        (
            "0001-01-01T00:00:00Z",
            "the earliest time NATS JetStream holds",
        ),
        ("1000years", "the earliest time NATS JetStream holds"),
        ("99999999years", "too far back"),
        ("9999999999999years", "neither an RFC 3339 time"),
    ] {
        for dry in [true, false] {
            let mut args = vec!["--since", since];
            if dry {
                args.push("--dry-run");
            }
            let (code, out, err, _) = replay_cli(&env, &args);
            assert_eq!(code, Some(2), "--since {since} dry={dry}: {out} {err}");
            assert!(
                err.contains("--since") && err.contains(says),
                "--since {since}: {err}"
            );
            assert!(
                out.is_empty() && !err.contains("replayed"),
                "nothing replayed: {out} {err}"
            );
        }
    }
    // The edges of the range are what the server holds: the latest time replays nothing,
    // the earliest everything.
    let (code, out, err, _) = replay_cli(&env, &["--since", "2262-04-11T23:47:16Z", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.is_empty() && err.contains("replayed sequences -: read=0 "),
        "{out} {err}"
    );
    let (code, _, err, _) = replay_cli(&env, &["--since", "1677-09-21T00:12:44Z", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("replayed sequences 1..={last}: read={published} ")),
        "{err}"
    );

    // Delete the newest event and one in the middle: the replay reads the rest and ends.
    let stream = bus
        .jetstream()
        .get_stream(&env.config.streams.events)
        .await
        .unwrap();
    stream.delete_message(last).await.unwrap();
    stream.delete_message(3).await.unwrap();
    let prompt = Duration::from_secs(10);
    for args in [
        &["--from-seq", "1", "--dry-run"][..],
        &["--from-seq", "1"],
        &["--since", "1h", "--dry-run"],
    ] {
        let (code, _, err, took) = replay_cli(&env, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "replayed sequences 1..={}: read={} ",
                last - 1,
                published - 2
            )),
            "{args:?}: {err}"
        );
        assert!(took < prompt, "{args:?} took {took:?}");
    }
    env.cleanup().await;
}
