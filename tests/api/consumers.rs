//! The trigger consumers of `examples/consumers/` (Python with nats-py, Rust with
//! async-nats) against the real NATS server: each handles every trigger exactly once,
//! through a copy published past JetStream's deduplication (another `Nats-Msg-Id`, the same
//! `trigger_id`) and a redelivery after the consumer died between its commit and its ack.
//!
//! The Python consumer's nats-py is installed into `.local/pip-consumer` by
//! `scripts/python-consumer-deps.sh`. The Rust consumer is the `consumer` example, built by
//! `make test` (`cargo build --all-targets`); run alone, this test builds it first.

use crate::helpers::nats as nats_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use async_nats::HeaderMap;
use runwatch::config::Config;
use runwatch::trigger::Trigger;

use nats_common::{StreamsGuard, init_tracing, test_config};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn trigger(n: u32) -> Trigger {
    nats_common::sample_trigger("consumers-test", n)
}

/// A triggers stream holding 3 triggers and, past deduplication, a second copy of the
/// second one: 4 messages, 3 trigger ids.
async fn triggers_stream() -> (Config, StreamsGuard, Vec<String>) {
    init_tracing();
    let config = test_config();
    let guard = StreamsGuard::new(&config);
    let bus = crate::helpers::app::bus(&config).await;
    let triggers = [trigger(1), trigger(2), trigger(3)];
    for r in bus.publish_triggers(&triggers).await {
        r.expect("acked");
    }
    // Within the duplicate window, the same id is swallowed by JetStream...
    for r in bus.publish_triggers(&triggers[..1]).await {
        r.expect("acked");
    }
    // ...but a copy published under another Nats-Msg-Id (as after the window) is stored.
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "a-later-copy");
    let body = serde_json::to_vec(&triggers[1]).expect("json");
    bus.jetstream()
        .publish_with_headers(
            format!("{}.github", config.streams.triggers_subject_prefix),
            headers,
            body.into(),
        )
        .await
        .expect("publish")
        .await
        .expect("acked");
    let mut stream = bus
        .jetstream()
        .get_stream(&config.streams.triggers)
        .await
        .expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 4);
    let ids = triggers.iter().map(|t| t.trigger_id.to_string()).collect();
    (config, guard, ids)
}

enum Consumer {
    Python,
    Rust,
}

impl Consumer {
    fn command(&self) -> Command {
        match self {
            Consumer::Python => {
                let out = Command::new(repo_root().join("scripts/python-consumer-deps.sh"))
                    .output()
                    .expect("run scripts/python-consumer-deps.sh");
                assert!(
                    out.status.success(),
                    "python-consumer-deps.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let pythonpath = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let mut c = Command::new("python3");
                c.arg(repo_root().join("examples/consumers/python/consumer.py"))
                    .env("PYTHONPATH", pythonpath);
                c
            }
            Consumer::Rust => Command::new(rust_consumer()),
        }
    }
}

/// `target/<profile>/examples/consumer`, next to this test's own binary (in `deps/`); built
/// when missing.
fn rust_consumer() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join("examples").join("consumer");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "consumer"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build --example consumer");
        assert!(status.success(), "cargo build --example consumer failed");
    }
    bin
}

fn run(consumer: &Consumer, config: &Config, durable: &str, db: &Path, extra: &[&str]) -> Output {
    let mut c = consumer.command();
    c.args([
        "--url",
        &config.nats.url,
        "--stream",
        &config.streams.triggers,
    ])
    .args(["--durable", durable])
    .arg("--db")
    .arg(db)
    .args(extra);
    c.output().expect("start the consumer")
}

/// The trigger ids of the lines starting with `word` (`handled` or `skipped`).
fn ids(stdout: &[u8], word: &str) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(word)).then(|| parts.next().unwrap_or("").to_string())
        })
        .collect()
}

async fn handles_each_trigger_once(consumer: Consumer) {
    let (config, _guard, expected) = triggers_stream().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("handled.sqlite");
    let durable = format!("{}-app", config.consumer.durable);

    // 1. Creates the durable (2 s ack wait), handles the first trigger, commits it and
    //    dies before acking it.
    let first = run(
        &consumer,
        &config,
        &durable,
        &db,
        &["--ack-wait", "2", "--crash-after", "1"],
    );
    assert_eq!(
        first.status.code(),
        Some(3),
        "first run: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let handled_first = ids(&first.stdout, "handled");
    assert_eq!(
        handled_first,
        vec![expected[0].clone()],
        "first run handles one trigger"
    );

    // 2. Restarted: gets the rest, the later copy of trigger 2, and (after the ack wait) the
    //    redelivery of trigger 1; runs until idle for 6 s.
    let second = run(
        &consumer,
        &config,
        &durable,
        &db,
        &["--exit-when-idle", "6"],
    );
    assert!(
        second.status.success(),
        "second run: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Each handled line names the failed job and its failed step.
    for out in [&first.stdout, &second.stdout] {
        for l in String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.starts_with("handled "))
        {
            assert!(l.ends_with(" jobs=unit: Run tests"), "{l}");
        }
    }
    let mut handled = handled_first;
    handled.extend(ids(&second.stdout, "handled"));
    handled.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(handled, want, "each trigger handled exactly once");
    let skipped: BTreeSet<String> = ids(&second.stdout, "skipped").into_iter().collect();
    assert!(
        skipped.contains(&expected[0]),
        "the redelivered trigger 1 is skipped: {skipped:?}"
    );
    assert!(
        skipped.contains(&expected[1]),
        "the later copy of trigger 2 is skipped: {skipped:?}"
    );

    // Everything was acked, and the store holds each trigger and its task once.
    let client = async_nats::connect(&config.nats.url)
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(&config.streams.triggers)
        .await
        .expect("stream")
        .get_consumer(&durable)
        .await
        .expect("consumer");
    let info = c.info().await.expect("consumer info");
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "all acked"
    );
    let store = rusqlite::Connection::open(&db).expect("open store");
    for table in ["handled", "tasks"] {
        let n: i64 = store
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 3, "rows in {table}");
    }

    // 3. A third run finds nothing new.
    let third = run(
        &consumer,
        &config,
        &durable,
        &db,
        &["--exit-when-idle", "1"],
    );
    assert!(third.status.success());
    assert!(ids(&third.stdout, "handled").is_empty() && ids(&third.stdout, "skipped").is_empty());
}

#[tokio::test]
async fn python_consumer_handles_each_trigger_once() {
    handles_each_trigger_once(Consumer::Python).await;
}

#[tokio::test]
async fn rust_consumer_handles_each_trigger_once() {
    handles_each_trigger_once(Consumer::Rust).await;
}
