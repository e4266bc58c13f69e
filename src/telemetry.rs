//! Tracing (text or JSON logs on stderr) and the Prometheus metrics recorder.
//!
//! The recorder keeps histogram observations in a buffer until they are drained into the
//! buckets, which happens on a render (a scrape) or on the recorder's upkeep. `init_metrics`
//! starts the upkeep itself, so a process that nobody scrapes keeps a flat heap
//! (`tests/api/metrics_memory.rs`, `make soak`).

use std::io::IsTerminal;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{FmtSpan, Writer, debug_fn};

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configuration key `log.level`: {0}")]
    Filter(String),
    #[error("metrics recorder: {0}")]
    Metrics(String),
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, wins over `log.level`.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init_tracing(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: redirected to a file or a collector, plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    let installed = match config.format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.fmt_fields(escaping_fields()).try_init(),
    };
    if installed.is_ok() && config.format == LogFormat::Json {
        let _ = JSON_LOGS.set(());
    }
    Ok(())
}

/// The text format's fields, as tracing-subscriber's default writes them (`name=value`,
/// `?value` as Debug, `%value` as Display, the message bare) but with every control
/// character escaped ([`crate::printable`]): a value that holds CR, LF or ESC (a stored
/// repository name, a parser error quoting its input) cannot start a forged log line or
/// drive a terminal. The JSON format escapes them already.
fn escaping_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(
        |w: &mut Writer<'_>, field: &Field, value: &dyn std::fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() != "message" {
                write!(w, "{}=", field.name().trim_start_matches("r#"))?;
            }
            crate::printable::write_escaped(w, &text)
        },
    )
    .delimited(" ")
}

/// Set once JSON logs are installed, so a fatal error is a JSON line too.
static JSON_LOGS: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Reports the error that ends the process: an `ERROR` JSON log line when JSON logs are
/// installed (so log collectors parse every line), else `runwatch: <error>` on stderr.
pub fn report_fatal(error: &str) {
    if JSON_LOGS.get().is_some() {
        tracing::error!(error, "runwatch failed");
    } else {
        eprintln!("runwatch: {error}");
    }
}

/// How often histogram observations are drained into their buckets and the process
/// metrics are sampled, whether or not anything scrapes. Between two upkeeps the buffer
/// holds at most this long's observations (about 16 bytes each).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The crate version and the git commit it was built from (`build.rs`; `unknown` when
/// built outside a git checkout without `RUNWATCH_GIT_SHA`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`VERSION`].
pub const GIT_SHA: &str = match option_env!("RUNWATCH_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

/// The metric carrying [`VERSION`] and [`GIT_SHA`] as labels, always 1.
pub const BUILD_INFO: &str = "runwatch_build_info";

/// Latency buckets in seconds, for the transaction, publish and end-to-end histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Request buckets of `runwatch deliver`, in seconds: up to a target's longest timeout.
const DELIVER_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 600.0,
];

/// End-to-end buckets in seconds: a backlog after an outage can delay decisions by minutes.
const DECISION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Every metric runwatch records: name, kind, unit, help text. `/metrics` shows the help
/// as `# HELP` lines; README.md's Observability table and the Grafana dashboard use these
/// names (`tests/api/deploy_files.rs` checks the dashboard against this list).
#[rustfmt::skip]
pub const METRICS: &[(&str, MetricKind, Unit, &str)] = &[
    ("runwatch_events_total", MetricKind::Counter, Unit::Count,
        "Inbound events by outcome: applied (decided and acked), retried (naked for redelivery), dead_lettered."),
    ("runwatch_triggers_total", MetricKind::Counter, Unit::Count,
        "Triggers published to the outbound stream (PubAck received), by rule kind."),
    ("runwatch_triggers_over_budget_total", MetricKind::Counter, Unit::Count,
        "Decisions over a rule's trigger budget (max_triggers_per_pull_request / max_triggers_per_repository): recorded in the group, not published, by rule name."),
    ("runwatch_dead_letters_total", MetricKind::Counter, Unit::Count,
        "Inputs published to the dead-letter stream, by reason."),
    ("runwatch_redeliveries_total", MetricKind::Counter, Unit::Count,
        "Pulled messages whose delivery count was above 1."),
    ("runwatch_relay_triggers_total", MetricKind::Counter, Unit::Count,
        "Unsent triggers the outbox relay claimed and republished (crash recovery, failed publishes)."),
    ("runwatch_transaction_conflicts_total", MetricKind::Counter, Unit::Count,
        "Transactions retried after a serialization failure or deadlock, by operation."),
    ("runwatch_purged_groups_total", MetricKind::Counter, Unit::Count,
        "Groups deleted by the purge."),
    ("runwatch_clock_skew_events_total", MetricKind::Counter, Unit::Count,
        "Events dated more than limits.max_clock_skew ahead of the wall clock: merged, but the event clock stopped at the bound."),
    ("runwatch_corrupt_rows_total", MetricKind::Counter, Unit::Count,
        "Group or streak rows whose stored state could not be decoded, set aside (op=record: its events dead-lettered as corrupt_state; op=timers: its timers dropped)."),
    ("runwatch_database_errors_total", MetricKind::Counter, Unit::Count,
        "Failed database attempts of the worker by op (record, timers, relay) and kind: connection, conflict, lock_timeout, statement_timeout, permission, read_only, resources, shutdown, pool_timeout, io, schema, other (held and retried without spending deliveries); input (the event's own values: split, retried with its deliveries, then dead-lettered)."),
    ("runwatch_outbox_set_aside_total", MetricKind::Counter, Unit::Count,
        "Outbox rows set aside by the relay because their payload is not a trigger (never claimed again)."),
    ("runwatch_batch_size", MetricKind::Histogram, Unit::Count,
        "Messages per pulled batch."),
    ("runwatch_transaction_seconds", MetricKind::Histogram, Unit::Seconds,
        "Duration of a decision (op=record) or timer (op=timers) transaction, retries included."),
    ("runwatch_publish_seconds", MetricKind::Histogram, Unit::Seconds,
        "Time to publish a set of triggers and receive every PubAck."),
    ("runwatch_decision_seconds", MetricKind::Histogram, Unit::Seconds,
        "End to end: from the event's arrival in JetStream to its ack after the decision."),
    ("runwatch_database_unavailable", MetricKind::Gauge, Unit::Count,
        "1 while the database refuses this worker (an operation failing for the database's sake, until it succeeds again; /readyz answers 503 meanwhile), else 0."),
    ("runwatch_outbox_backlog", MetricKind::Gauge, Unit::Count,
        "Outbox rows not yet published (sampled every outbox.relay_interval)."),
    ("runwatch_consumer_pending", MetricKind::Gauge, Unit::Count,
        "Messages of the inbound stream not yet delivered to the durable consumer (sampled every outbox.relay_interval)."),
    ("runwatch_webhooks_total", MetricKind::Counter, Unit::Count,
        "Webhook deliveries received by `runwatch ingest`, by provider, event and outcome."),
    ("runwatch_ingest_refused_total", MetricKind::Counter, Unit::Count,
        "runwatch ingest: connections and requests refused at a bound, by reason (connections, in_flight, buffered_bytes: 503; body_timeout: 408; header_timeout: connection closed)."),
    ("runwatch_deliver_delivered_total", MetricKind::Counter, Unit::Count,
        "runwatch deliver: triggers a target answered 2xx, by target."),
    ("runwatch_deliver_failed_total", MetricKind::Counter, Unit::Count,
        "runwatch deliver: failed attempts by target and reason (http_5xx, http_429, http_408, timeout, connect, transport: retried; http_4xx, http_3xx, template, request: dead-lettered)."),
    ("runwatch_deliver_attempts_total", MetricKind::Counter, Unit::Count,
        "runwatch deliver: requests sent, by target."),
    ("runwatch_deliver_filtered_total", MetricKind::Counter, Unit::Count,
        "runwatch deliver: triggers a target's filter excludes, acked without a request, by target."),
    ("runwatch_deliver_seconds", MetricKind::Histogram, Unit::Seconds,
        "runwatch deliver: duration of one request, response excerpt included, by target."),
    ("runwatch_trace_spans_exported_total", MetricKind::Counter, Unit::Count,
        "Spans the OTLP collector accepted (tracing on only)."),
    ("runwatch_trace_spans_dropped_total", MetricKind::Counter, Unit::Count,
        "Spans not exported, by reason: queue_full (the export buffer was full: never waits), export_failed (the collector refused the batch or was not reached, retries spent)."),
    (BUILD_INFO, MetricKind::Gauge, Unit::Count,
        "Always 1; labels: version (the crate version) and git_sha (the commit built)."),
];

/// The process metrics every command with a metrics endpoint exports, under the names of
/// the Prometheus client libraries (`metrics-process`): sampled at each upkeep and at
/// each render.
pub const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// The kind of a metric in [`METRICS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A sampled value.
    Gauge,
    /// Bucketed observations.
    Histogram,
}

/// Installs the global metrics recorder and returns the handle that renders `/metrics`
/// (render it with [`render`]). Describes every metric, so `/metrics` has `# HELP` lines,
/// sets [`BUILD_INFO`], and starts the upkeep thread (every [`UPKEEP_INTERVAL`]: drain the
/// histogram buffers, sample the process metrics) for the life of the process.
pub fn init_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let handle = builder()?
        .install_recorder()
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
    for &(name, kind, unit, help) in METRICS {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, unit, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, unit, help),
            MetricKind::Histogram => metrics::describe_histogram!(name, unit, help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => VERSION, "git_sha" => GIT_SHA).set(1.0);
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    let upkept = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                process.collect();
                upkept.run_upkeep();
            }
        })
        .map_err(|e| TelemetryError::Metrics(format!("cannot start the upkeep thread: {e}")))?;
    Ok(handle)
}

/// The `/metrics` body: the process metrics sampled now, then every series.
pub fn render(handle: &PrometheusHandle) -> String {
    metrics_process::Collector::default().collect();
    handle.render()
}

/// The recorder's configuration: every histogram has fixed buckets (rendered as a
/// Prometheus histogram, aggregatable across replicas), none is a summary; a histogram
/// without buckets of its own gets the latency buckets.
fn builder() -> Result<PrometheusBuilder, TelemetryError> {
    let err = |e: metrics_exporter_prometheus::BuildError| TelemetryError::Metrics(e.to_string());
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full("runwatch_decision_seconds".into()),
            DECISION_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full("runwatch_deliver_seconds".into()),
            DELIVER_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Full("runwatch_batch_size".into()), SIZE_BUCKETS)
        .map_err(err)
}

/// Registers the worker's unlabeled counters and its event outcomes at zero, so a
/// dashboard sees 0 rather than no series before the first event. A no-op without a
/// recorder.
pub fn register_worker_metrics() {
    for outcome in ["applied", "retried", "dead_lettered"] {
        metrics::counter!("runwatch_events_total", "outcome" => outcome).increment(0);
    }
    for op in ["record", "timers"] {
        metrics::counter!("runwatch_transaction_conflicts_total", "op" => op).increment(0);
    }
    for op in ["record", "timers"] {
        metrics::counter!("runwatch_corrupt_rows_total", "op" => op).increment(0);
    }
    for name in [
        "runwatch_redeliveries_total",
        "runwatch_relay_triggers_total",
        "runwatch_purged_groups_total",
        "runwatch_clock_skew_events_total",
        "runwatch_outbox_set_aside_total",
        "runwatch_trace_spans_exported_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!("runwatch_trace_spans_dropped_total", "reason" => reason).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_text_log_line_stays_one_line_whatever_its_fields_hold() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(escaping_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("event", group = %"acme/x\r\n2026-01-01T00:00:00Z  INFO forged");
            let _g = span.enter();
            let detail = "bad\n\u{1b}[2Jvalue";
            tracing::warn!(%detail, quoted = detail, seq = 7, "refused {}", "a\u{1b}]0;title\u{7}");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.ends_with('\n'), "{text:?}");
        assert!(!text.trim_end().chars().any(char::is_control), "{text:?}");
        assert!(text.contains(r"group=acme/x\r\n2026"), "{text:?}");
        assert!(text.contains(r"detail=bad\n\u{1b}[2Jvalue"), "{text:?}");
        assert!(text.contains(r#"quoted="bad\n\u{1b}[2Jvalue""#), "{text:?}");
        assert!(text.contains(r"refused a\u{1b}]0;title\u{7}"), "{text:?}");
        assert!(text.contains("seq=7"), "{text:?}");
    }
}
