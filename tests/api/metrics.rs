//! `/metrics`, `/healthz` and `/readyz` of a live worker, after a small trace with poison.
//!
//! The metrics recorder is global and can be installed once per process: the test below
//! runs in a process of its own (`own_process!`) and holds every metric assertion.

use crate::helpers::own_process::own_process;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::helpers::app::eventually;
use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_lines, wait_quiet};
use runwatch::event::Provider;
use runwatch::telemetry::{METRICS, MetricKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A port nobody listens on right now (bound, read, released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `GET path` over plain HTTP/1.1; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // axum answers small bodies with Content-Length; a chunked body is de-chunked here.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    match s.get(series) {
        Some(v) => *v,
        None => panic!(
            "no sample {series} in /metrics; have: {:#?}",
            s.keys().collect::<Vec<_>>()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_of_a_live_worker() {
    own_process!(metrics_health_and_readiness_of_a_live_worker);
    let handle = runwatch::telemetry::init_metrics().expect("install the metrics recorder");
    let mut env = TestEnv::new().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    env.config.http.listen = addr;
    // The default rule with a budget it never reaches: its over-budget counter is
    // registered at zero and stays there.
    env.config.rules = Some(vec![
        serde_json::from_value(serde_json::json!({
            "kind": "all_completed_with_failure",
            "max_triggers_per_repository": 1000
        }))
        .expect("rule"),
    ]);

    let bus = crate::helpers::app::bus(&env.config).await;
    // 12 groups × 2 runs (queued + completed each), 10% duplicates, half the groups fail.
    let trace = crate::helpers::trace::shuffled(7, 12, 2, 0.5, 0.1);
    let (lines, failing) = (trace.lines(), trace.must_fire());
    assert!(!failing.is_empty(), "the seed gives failing groups");
    publish_lines(&bus, &lines).await;
    let wrong_schema = lines[0].replace("runwatch.workflow_run.v1", "runwatch.workflow_run.v0");
    assert_ne!(wrong_schema, lines[0]);
    let poison: [(&str, Vec<u8>); 2] = [
        ("poison-1", b"this is not json".to_vec()),
        ("poison-2", wrong_schema.into_bytes()),
    ];
    for (id, body) in &poison {
        bus.publish_event(Provider::Github, id, bytes::Bytes::from(body.clone()))
            .await
            .expect("publish poison");
    }
    let stored = bus
        .jetstream()
        .get_stream(&env.config.streams.events)
        .await
        .expect("events stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages as f64;
    let valid = stored - poison.len() as f64;
    assert!(
        valid > 0.0 && valid < lines.len() as f64,
        "duplicates were dropped by Nats-Msg-Id"
    );

    let batch_size = env.config.consumer.batch_size as f64;
    let lanes = env.config.consumer.lanes as f64;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(runwatch::worker::run(
        env.config.clone(),
        runwatch::worker::RunOptions::default(),
        Some(handle),
        stop.clone(),
    ));

    // Ready once the streams, the consumer and the listener are up.
    let body = eventually(Duration::from_secs(30), "/readyz answering 200", || async {
        match get(addr, "/readyz").await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    assert_eq!(body, "ready\n");
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    // The gauges are sampled every relay interval (200 ms here): wait for a sample after
    // quiet (asserted below, with the rest).
    eventually(
        Duration::from_secs(30),
        "gauges sampled after quiet",
        || async {
            let (_, text) = get(addr, "/metrics").await.ok()?;
            let s = samples(&text);
            (s.get("runwatch_outbox_backlog") == Some(&0.0)
                && s.get("runwatch_consumer_pending") == Some(&0.0))
            .then_some(())
        },
    )
    .await;

    let (status, body) = get(addr, "/healthz").await.expect("GET /healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = get(addr, "/readyz").await.expect("GET /readyz");
    assert_eq!(status, 200, "/readyz while running");
    let (status, text) = get(addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    let (status, _) = get(addr, "/nope").await.expect("GET /nope");
    assert_eq!(status, 404);
    let triggers = all_triggers(&bus).await;

    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), worker).await;
    env.cleanup().await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "worker stopped cleanly: {stopped:?}"
    );

    // Every metric is described (HELP) and typed (TYPE) on /metrics.
    for (name, kind, _, help) in METRICS {
        if *name == "runwatch_webhooks_total"
            || name.starts_with("runwatch_ingest_")
            || name.starts_with("runwatch_deliver_")
        {
            continue; // recorded by `runwatch ingest` and `runwatch deliver`, not by the worker
        }
        let ty = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {name} {ty}\n")),
            "no TYPE line for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} {help}\n")),
            "no HELP line for {name}:\n{text}"
        );
    }
    let s = samples(&text);
    let poison_n = poison.len() as f64;

    // Events by outcome: each valid event applied once, each poison message dead-lettered.
    assert_eq!(
        value(&s, r#"runwatch_events_total{outcome="applied"}"#),
        valid
    );
    assert_eq!(
        value(&s, r#"runwatch_events_total{outcome="dead_lettered"}"#),
        poison_n
    );
    assert_eq!(
        value(&s, r#"runwatch_events_total{outcome="retried"}"#),
        0.0
    );
    assert_eq!(
        value(&s, r#"runwatch_dead_letters_total{reason="not_json"}"#),
        1.0
    );
    assert_eq!(
        value(&s, r#"runwatch_dead_letters_total{reason="schema"}"#),
        1.0
    );

    // Triggers by rule: one per failing group, as in the outbound stream.
    assert_eq!(triggers.len(), failing.len());
    assert_eq!(
        value(
            &s,
            r#"runwatch_triggers_total{rule="all_completed_with_failure"}"#
        ),
        failing.len() as f64
    );
    assert_eq!(
        value(
            &s,
            r#"runwatch_triggers_over_budget_total{rule="all_completed_with_failure"}"#
        ),
        0.0
    );
    for t in &triggers {
        assert_eq!(t["budget"]["repository"]["limit"], 1000, "{t}");
    }

    // No faults: nothing redelivered, relayed, purged or in conflict.
    assert_eq!(value(&s, "runwatch_redeliveries_total"), 0.0);
    assert_eq!(value(&s, "runwatch_relay_triggers_total"), 0.0);
    assert_eq!(value(&s, "runwatch_purged_groups_total"), 0.0);
    assert_eq!(value(&s, "runwatch_clock_skew_events_total"), 0.0);
    for op in ["record", "timers"] {
        assert_eq!(
            value(&s, &format!(r#"runwatch_corrupt_rows_total{{op="{op}"}}"#)),
            0.0
        );
    }
    assert_eq!(
        value(&s, r#"runwatch_transaction_conflicts_total{op="record"}"#),
        0.0
    );

    // Batches: every stored message pulled exactly once, in at least one batch of ≤ 64.
    let batches = value(&s, "runwatch_batch_size_count");
    assert!(batches >= 1.0);
    assert_eq!(value(&s, "runwatch_batch_size_sum"), stored);
    assert!(
        stored / batches <= batch_size,
        "mean batch within consumer.batch_size"
    );
    assert_eq!(
        value(&s, r#"runwatch_batch_size_bucket{le="+Inf"}"#),
        batches
    );

    // Latency histograms: observed, positive, and below a generous bound.
    let tx = value(&s, r#"runwatch_transaction_seconds_count{op="record"}"#);
    // One record transaction per lane of a batch with valid events (TestEnv: two lanes).
    assert!(
        tx >= 1.0 && tx <= batches * lanes,
        "at most one record transaction per lane of a batch: {tx} for {batches} batches"
    );
    let tx_sum = value(&s, r#"runwatch_transaction_seconds_sum{op="record"}"#);
    assert!(tx_sum > 0.0 && tx_sum < 30.0, "transaction time {tx_sum}");
    assert!(value(&s, r#"runwatch_transaction_seconds_count{op="timers"}"#) >= 1.0);
    let publishes = value(&s, "runwatch_publish_seconds_count");
    assert!(publishes >= 1.0 && publishes <= failing.len() as f64);
    assert!(value(&s, "runwatch_publish_seconds_sum") > 0.0);
    assert_eq!(
        value(&s, "runwatch_decision_seconds_count"),
        valid,
        "one decision latency per applied event"
    );
    let decision_sum = value(&s, "runwatch_decision_seconds_sum");
    assert!(
        decision_sum > 0.0 && decision_sum / valid < 60.0,
        "mean decision latency {}",
        decision_sum / valid
    );

    // Gauges after quiet: nothing unsent, nothing pending.
    assert_eq!(value(&s, "runwatch_outbox_backlog"), 0.0);
    assert_eq!(value(&s, "runwatch_consumer_pending"), 0.0);

    // What is running: the crate version and the commit, as labels of a constant 1.
    let build_info = format!(
        r#"runwatch_build_info{{version="{}",git_sha="{}"}}"#,
        runwatch::telemetry::VERSION,
        runwatch::telemetry::GIT_SHA
    );
    assert_eq!(value(&s, &build_info), 1.0);
    assert_eq!(runwatch::telemetry::VERSION, env!("CARGO_PKG_VERSION"));
    assert!(!runwatch::telemetry::GIT_SHA.is_empty());

    // The process: every standard process metric, with plausible values.
    for name in runwatch::telemetry::PROCESS_METRICS {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP line for {name}"
        );
        value(&s, name);
    }
    let rss = value(&s, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 4e9, "resident memory {rss}");
    let fds = value(&s, "process_open_fds");
    assert!(
        fds >= 3.0 && fds <= value(&s, "process_max_fds"),
        "open fds {fds}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = value(&s, "process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start time {start} (now {now})"
    );
    // A counter of whole seconds (metrics counters are integers), often 0 for a short test:
    // whole, and at most the process's wall time on every CPU.
    let cpu = value(&s, "process_cpu_seconds_total");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(
        cpu >= 0.0 && cpu.fract() == 0.0 && cpu <= (now - start + 1.0) * cpus,
        "cpu seconds {cpu} after {} s on {cpus} CPUs",
        now - start
    );
    assert!(value(&s, "process_threads") >= 2.0);
}

/// With `log.format = "json"` every stderr line of `runwatch run` is a JSON object with a
/// level and a message, the fatal error included: here NATS is unreachable, the worker
/// retries its connection (WARN lines, short delays here), gives up and exits with status
/// 2 and an ERROR line.
#[tokio::test]
async fn json_logs_are_json_lines_to_the_last_error() {
    // A migrated database (`--no-migrate` checks the schema), NATS unreachable.
    let env = TestEnv::new().await;
    let free = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(["run", "--no-migrate"])
        .env("DATABASE_URL", &env.config.database.url)
        .env("RUNWATCH_LOG__FORMAT", "json")
        .env("RUNWATCH_LOG__LEVEL", "info")
        .env_remove("RUST_LOG")
        .env("NATS_URL", format!("nats://127.0.0.1:{free}"))
        .env("RUNWATCH_NATS__CONNECT_TIMEOUT", "1s")
        .env("RUNWATCH_RETRY__MIN_DELAY", "10ms")
        .env("RUNWATCH_RETRY__MAX_DELAY", "50ms")
        .env("RUNWATCH_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start runwatch");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runwatch did not give up on an unreachable NATS within 60s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unreachable NATS is an error (exit status 2)"
    );
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 logs");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines.len() >= 2,
        "a retry warning and the fatal error:\n{stderr}"
    );
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("NATS"))),
        "a NATS retry warning:\n{stderr}"
    );
    let last = lines.last().expect("a line");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["fields"]["message"], "runwatch failed");
    assert!(
        last["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("NATS")),
        "{last}"
    );
    env.cleanup().await;
}
