//! OpenTelemetry export of runwatch's spans (OTLP over HTTP/protobuf), on when
//! `telemetry.otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set, off and free when
//! not: [`enabled`] is one atomic load and nothing is built or queued.
//!
//! runwatch records a span when its work is done, with the ids it already propagated
//! ([`crate::trace_context`]), so the ids on NATS and HTTP and the exported ones are the
//! same by construction. [`export`] encodes the span at once into OTLP protobuf (an
//! `opentelemetry.proto.trace.v1.Span`, written field by field: `prost::encoding`'s wire
//! types and lengths, a varint loop of its own; no intermediate message, the attribute keys
//! are the callers' `&'static str` and string values may be borrowed) and appends
//! the bytes to a bounded buffer: at [`MAX_QUEUE_SPANS`] spans (`OTEL_BSP_MAX_QUEUE_SIZE`)
//! or [`MAX_QUEUE_BYTES`] a span is dropped and counted
//! (`runwatch_trace_spans_dropped_total{reason="queue_full"}`), the caller never waits.
//!
//! A task on the process's Tokio runtime takes the buffer every [`FLUSH_INTERVAL`]
//! (`OTEL_BSP_SCHEDULE_DELAY`), or as soon as [`BATCH_SPANS`] spans are waiting
//! (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), and posts it to `<endpoint>/v1/traces` as one
//! `ExportTraceServiceRequest`: one `ResourceSpans` (`service.name`, `service.version`),
//! one `ScopeSpans` (scope `runwatch` and its version) whose `spans` are the buffer's
//! entries as they are. The headers of `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, or when it is
//! unset `OTEL_EXPORTER_OTLP_HEADERS`, go with every request; a request may take
//! `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` milliseconds
//! ([`EXPORT_TIMEOUT`] when unset; at most [`MAX_EXPORT_TIMEOUT`]).
//! A 429, 502, 503 or 504 answer, or a failed connection, is retried a few times with a
//! jittered backoff, or after the answer's `Retry-After` seconds (at most
//! 30 s); then, or at any other answer, the batch is dropped, counted
//! (`reason="export_failed"`) and logged (at most one warning a minute). At shutdown the
//! buffer is sent within a bounded wait.
//!
//! | span | kind | parent | attributes |
//! |---|---|---|---|
//! | `runwatch.ingest` | server | the request's `traceparent`, if valid | `runwatch.provider`, `http.route`, `http.response.status_code`, `runwatch.event_ids`, `runwatch.stream_sequences` |
//! | `runwatch.decide` | consumer | the events message's `traceparent` | `runwatch.stream_sequence`, `runwatch.event_id`, `runwatch.group`, `runwatch.outcome`, `runwatch.trigger_ids` |
//! | `runwatch.timer` | internal | none (a new trace) | `runwatch.trigger_id`, `runwatch.group`, `runwatch.rule` |
//! | `runwatch.deliver` | client | the trigger message's `traceparent` | `runwatch.target`, `runwatch.trigger_id`, `runwatch.stream_sequence`, `runwatch.attempt`, `runwatch.outcome`, `http.response.status_code` |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::trace_context::TraceContext;

mod encode;
mod send;
mod span;
#[cfg(test)]
mod tests;

pub use send::{OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS};
use send::{Sender, headers};
pub use span::{Attr, Kind, Span, Value};

/// The path OTLP/HTTP takes traces on, appended to the configured base endpoint.
pub const TRACES_PATH: &str = "v1/traces";

/// How long one export request may take, unless `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
/// `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise (the specification's default).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request timeout taken from the environment: shutdown waits for the last
/// export, and a longer wait would hold a stopping worker.
pub const MAX_EXPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Spans waiting to be sent, at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const MAX_QUEUE_SPANS: usize = 2048;

/// Encoded bytes waiting to be sent, at most (a span is a few hundred bytes).
pub const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Spans waiting that wake the flush task before its interval (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const BATCH_SPANS: usize = 512;

/// How often the buffer is sent (`OTEL_BSP_SCHEDULE_DELAY`, in milliseconds).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// At most one warning about lost spans in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP exporter: {0}")]
    Build(String),
}

/// The spans encoded and not yet sent: each one a `ScopeSpans.spans` entry (field key,
/// length, `Span` message).
struct Queue {
    bytes: Vec<u8>,
    spans: usize,
}

struct Exporter {
    queue: Mutex<Queue>,
    max_spans: usize,
    max_bytes: usize,
    batch: usize,
    /// Wakes the flush task (a batch is ready, or shutdown).
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    /// Spans dropped at a full queue since the flush task last looked (for its warning).
    dropped_full: AtomicU64,
    /// How long one request may take (and shutdown waits, with a second more).
    timeout: Duration,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Cancelled when the flush task ends, however it ends (a drop guard: a panic too), so
    /// a supervisor can watch it ([`watch`]).
    ended: tokio_util::sync::CancellationToken,
}

impl Exporter {
    fn new(max_spans: usize, batch: usize, timeout: Duration) -> Exporter {
        Exporter {
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                spans: 0,
            }),
            max_spans,
            max_bytes: MAX_QUEUE_BYTES,
            batch: batch.min(max_spans),
            wake: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            dropped_full: AtomicU64::new(0),
            timeout,
            task: Mutex::new(None),
            ended: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Resolves when `stop` is cancelled (`Ok`) or, before that, when the flush task ends
    /// although shutdown did not ask it to (`Err`, with the reason): spans would no longer
    /// be exported, and that must not go unnoticed.
    async fn watch(&self, stop: &tokio_util::sync::CancellationToken) -> Result<(), String> {
        tokio::select! {
            () = stop.cancelled() => Ok(()),
            () = self.ended.cancelled() => {
                if self.stopping.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err("the trace export's flush task ended: spans would no longer be exported".into())
                }
            }
        }
    }

    /// Appends `span` to the queue; `false` when the queue is full and the span was dropped
    /// (and counted).
    fn push(&self, span: &Span<'_>) -> bool {
        let len = encode::span_len(span);
        let entry = encode::field_len(encode::SCOPE_SPANS_SPANS, len);
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.spans >= self.max_spans || q.bytes.len().saturating_add(entry) > self.max_bytes {
            drop(q);
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("runwatch_trace_spans_dropped_total", "reason" => "queue_full")
                .increment(1);
            return false;
        }
        q.bytes.reserve(entry);
        encode::put_len(&mut q.bytes, encode::SCOPE_SPANS_SPANS, len);
        encode::span(span, &mut q.bytes);
        q.spans += 1;
        let wake = q.spans == self.batch;
        drop(q);
        if wake {
            self.wake.notify_one();
        }
        true
    }
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported (an endpoint is configured and the exporter started).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Exports the span `make` builds, if the exporter is on and the trace is sampled; `make`
/// is not called otherwise (no attribute is built when tracing is off). Never waits: a
/// full queue drops the span.
pub fn export<'a>(context: &TraceContext, make: impl FnOnce() -> Span<'a>) {
    let Some(e) = EXPORTER.get() else {
        return;
    };
    if !context.sampled() {
        return;
    }
    e.push(&make());
}

/// Starts the exporter to `endpoint` (the base URL; spans are posted to
/// `<endpoint>/v1/traces`), its flush task on the current Tokio runtime. A second call is
/// ignored.
pub fn init(endpoint: &url::Url, service: &str) -> Result<(), ExportError> {
    if enabled() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| ExportError::Build(format!("no Tokio runtime: {e}")))?;
    let timeout = env_timeout();
    // The system's root certificates are read (~19 million instructions at start) only
    // when the collector is reached over https.
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_native_certs(endpoint.scheme() == "https")
        .build()
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let mut url = endpoint.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let url = url
        .join(TRACES_PATH)
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let mut headers = [
        OTEL_EXPORTER_OTLP_TRACES_HEADERS,
        OTEL_EXPORTER_OTLP_HEADERS,
    ]
    .into_iter()
    .find_map(|name| Some((name, std::env::var(name).ok()?)))
    .map(|(name, spec)| headers(name, &spec))
    .unwrap_or_default();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    let max_spans = env_number("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(MAX_QUEUE_SPANS);
    let batch = env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").unwrap_or(BATCH_SPANS);
    let interval = env_number("OTEL_BSP_SCHEDULE_DELAY")
        .map(|ms| Duration::from_millis(ms as u64))
        .unwrap_or(FLUSH_INTERVAL);
    let exporter = Exporter::new(max_spans, batch, timeout);
    if EXPORTER.set(exporter).is_err() {
        return Ok(());
    }
    let Some(e) = EXPORTER.get() else {
        return Ok(());
    };
    let sender = Sender {
        http,
        url: url.clone(),
        headers,
        envelope: encode::Envelope::new(service, crate::telemetry::VERSION),
    };
    let task = runtime.spawn(flush_task(e, sender, interval));
    *e.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
    Ok(())
}

/// For a service's supervisor (task `trace-export`): resolves when `stop` is cancelled, or
/// with an error when the flush task ended before shutdown asked it to (a panic in it, say),
/// so the process stops and reports it instead of running on without its traces. Without
/// an exporter (export off), waits for `stop`.
pub async fn watch(stop: tokio_util::sync::CancellationToken) -> Result<(), String> {
    match EXPORTER.get() {
        Some(e) => e.watch(&stop).await,
        None => {
            stop.cancelled().await;
            Ok(())
        }
    }
}

/// Sends the spans still queued and stops the flush task (at shutdown), waiting at most
/// the request timeout and a second.
pub async fn shutdown() {
    let Some(e) = EXPORTER.get() else {
        return;
    };
    e.stopping.store(true, Ordering::Release);
    e.wake.notify_one();
    let task = e.task.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(task) = task {
        let _ = tokio::time::timeout(e.timeout + Duration::from_secs(1), task).await;
    }
}

/// The request timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), else [`EXPORT_TIMEOUT`]; above [`MAX_EXPORT_TIMEOUT`], that, with a
/// warning.
fn env_timeout() -> Duration {
    let Some((name, ms)) = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find(|name| std::env::var_os(name).is_some())
    .and_then(|name| Some((name, env_number(name)?))) else {
        return EXPORT_TIMEOUT;
    };
    let asked = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    if asked > MAX_EXPORT_TIMEOUT {
        tracing::warn!(
            variable = name,
            max_ms = MAX_EXPORT_TIMEOUT.as_millis() as u64,
            "longer than the longest export timeout: the longest is used"
        );
        return MAX_EXPORT_TIMEOUT;
    }
    asked
}

/// A positive whole number from an `OTEL_*` variable; unset or invalid: `None` (the
/// default is used, as the OpenTelemetry SDKs do).
fn env_number(name: &str) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            tracing::warn!(
                variable = name,
                "not a positive whole number: the default is used"
            );
            None
        }
    }
}

/// Takes the queue every `interval` (or when woken) and posts it; at shutdown, posts what
/// is left and ends.
async fn flush_task(e: &'static Exporter, sender: Sender, interval: Duration) {
    let _ended = e.ended.clone().drop_guard();
    let mut warned: Option<Instant> = None;
    let mut lost: u64 = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = e.wake.notified() => {}
        }
        let stopping = e.stopping.load(Ordering::Acquire);
        let (bytes, spans) = {
            let mut q = e.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let capacity = q.bytes.len();
            let spans = std::mem::take(&mut q.spans);
            (
                std::mem::replace(&mut q.bytes, Vec::with_capacity(capacity)),
                spans,
            )
        };
        lost = lost.saturating_add(e.dropped_full.swap(0, Ordering::Relaxed));
        if spans > 0 {
            let body = sender.envelope.wrap(&bytes);
            match sender.send(body.into()).await {
                Ok(()) => {
                    metrics::counter!("runwatch_trace_spans_exported_total")
                        .increment(spans as u64);
                }
                Err(err) => {
                    metrics::counter!("runwatch_trace_spans_dropped_total", "reason" => "export_failed")
                        .increment(spans as u64);
                    lost = lost.saturating_add(spans as u64);
                    if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(
                            error = %err,
                            spans_lost = lost,
                            "trace export failed: spans dropped (runwatch_trace_spans_dropped_total)"
                        );
                        warned = Some(Instant::now());
                        lost = 0;
                    }
                }
            }
        }
        if lost > 0 && warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                spans_lost = lost,
                "trace export queue full: spans dropped (runwatch_trace_spans_dropped_total)"
            );
            warned = Some(Instant::now());
            lost = 0;
        }
        if stopping {
            return;
        }
    }
}
