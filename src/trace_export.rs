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
//! entries as they are. The headers of `OTEL_EXPORTER_OTLP_HEADERS` go with every request.
//! A 429, 502, 503 or 504 answer, or a failed connection, is retried a few times with a
//! jittered backoff; then, or at any other answer, the batch is dropped, counted
//! (`reason="export_failed"`) and logged (at most one warning a minute). At shutdown the
//! buffer is sent within a bounded wait.
//!
//! | span | kind | parent | attributes |
//! |---|---|---|---|
//! | `runwatch.ingest` | server | the request's `traceparent`, if valid | `runwatch.provider`, `http.route`, `http.response.status_code`, `runwatch.event_ids`, `runwatch.stream_sequences` |
//! | `runwatch.decide` | consumer | the events message's `traceparent` | `runwatch.stream_sequence`, `runwatch.event_id`, `runwatch.group`, `runwatch.outcome`, `runwatch.trigger_ids` |
//! | `runwatch.timer` | internal | none (a new trace) | `runwatch.trigger_id`, `runwatch.group`, `runwatch.rule` |
//! | `runwatch.deliver` | client | the trigger message's `traceparent` | `runwatch.target`, `runwatch.trigger_id`, `runwatch.stream_sequence`, `runwatch.attempt`, `runwatch.outcome`, `http.response.status_code` |

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::Retryable;
use prost::encoding::{WireType, encoded_len_varint, key_len};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::trace_context::TraceContext;

/// The path OTLP/HTTP takes traces on, appended to the configured base endpoint.
pub const TRACES_PATH: &str = "v1/traces";

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest collector answer read (an `ExportTraceServiceResponse` is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// Spans waiting to be sent, at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const MAX_QUEUE_SPANS: usize = 2048;

/// Encoded bytes waiting to be sent, at most (a span is a few hundred bytes).
pub const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Spans waiting that wake the flush task before its interval (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const BATCH_SPANS: usize = 512;

/// How often the buffer is sent (`OTEL_BSP_SCHEDULE_DELAY`, in milliseconds).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Retries of one batch after a 429/502/503/504 answer or a failed connection.
const RETRIES: usize = 3;

/// At most one warning about lost spans in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The standard variable of the headers sent to the collector (`key=value,key2=value2`).
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";

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
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported (an endpoint is configured and the exporter started).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// A span's kind (`opentelemetry.proto.trace.v1.Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Consumer = 5,
}

/// An attribute value (a string may be borrowed from the work the span describes).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Strs(Vec<String>),
    Ints(Vec<i64>),
}

/// A span attribute: a fixed key and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr<'a> {
    pub key: &'static str,
    pub value: Value<'a>,
}

impl<'a> Attr<'a> {
    /// A string attribute (a borrowed string is not copied).
    pub fn str(key: &'static str, v: impl Into<Cow<'a, str>>) -> Attr<'a> {
        Attr {
            key,
            value: Value::Str(v.into()),
        }
    }

    /// An integer attribute.
    pub fn int(key: &'static str, v: i64) -> Attr<'a> {
        Attr {
            key,
            value: Value::Int(v),
        }
    }

    /// An integer attribute from an unsigned value (saturated: sequences never reach 2^63).
    pub fn uint(key: &'static str, v: u64) -> Attr<'a> {
        Attr::int(key, i64::try_from(v).unwrap_or(i64::MAX))
    }

    /// An array of strings.
    pub fn strs(key: &'static str, v: Vec<String>) -> Attr<'a> {
        Attr {
            key,
            value: Value::Strs(v),
        }
    }

    /// An array of integers from unsigned values (saturated).
    pub fn uints(key: &'static str, v: impl IntoIterator<Item = u64>) -> Attr<'a> {
        Attr {
            key,
            value: Value::Ints(
                v.into_iter()
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
                    .collect(),
            ),
        }
    }
}

/// A finished span, as runwatch records it.
pub struct Span<'a> {
    pub name: &'static str,
    pub kind: Kind,
    /// The span's own context (its span id is the one propagated to its children).
    pub context: &'a TraceContext,
    /// The parent's span id, `None` for the root of a trace.
    pub parent: Option<u64>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<Attr<'a>>,
    /// Set when the work failed: the span's status is Error with this description.
    pub error: Option<String>,
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
    let span = make();
    let len = encode::span_len(&span);
    let entry = encode::field_len(encode::SCOPE_SPANS_SPANS, len);
    let mut q = e.queue.lock().unwrap_or_else(PoisonError::into_inner);
    if q.spans >= e.max_spans || q.bytes.len().saturating_add(entry) > e.max_bytes {
        drop(q);
        e.dropped_full.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("runwatch_trace_spans_dropped_total", "reason" => "queue_full")
            .increment(1);
        return;
    }
    q.bytes.reserve(entry);
    encode::put_len(&mut q.bytes, encode::SCOPE_SPANS_SPANS, len);
    encode::span(&span, &mut q.bytes);
    q.spans += 1;
    let wake = q.spans == e.batch;
    drop(q);
    if wake {
        e.wake.notify_one();
    }
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
    // The system's root certificates are read (~19 million instructions at start) only
    // when the collector is reached over https.
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
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
    let mut headers = headers(std::env::var(OTEL_EXPORTER_OTLP_HEADERS).ok().as_deref());
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    let max_spans = env_number("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(MAX_QUEUE_SPANS);
    let batch = env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        .unwrap_or(BATCH_SPANS)
        .min(max_spans);
    let interval = env_number("OTEL_BSP_SCHEDULE_DELAY")
        .map(|ms| Duration::from_millis(ms as u64))
        .unwrap_or(FLUSH_INTERVAL);
    let exporter = Exporter {
        queue: Mutex::new(Queue {
            bytes: Vec::new(),
            spans: 0,
        }),
        max_spans,
        max_bytes: MAX_QUEUE_BYTES,
        batch,
        wake: tokio::sync::Notify::new(),
        stopping: AtomicBool::new(false),
        dropped_full: AtomicU64::new(0),
        task: Mutex::new(None),
    };
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

/// Sends the spans still queued and stops the flush task (at shutdown), waiting at most
/// the export timeout and a second.
pub async fn shutdown() {
    let Some(e) = EXPORTER.get() else {
        return;
    };
    e.stopping.store(true, Ordering::Release);
    e.wake.notify_one();
    let task = e.task.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(task) = task {
        let _ = tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), task).await;
    }
}

/// A positive whole number from an `OTEL_BSP_*` variable; unset or invalid: `None` (the
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

/// The headers of `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, values
/// percent-decoded, as the OpenTelemetry specification says). A malformed entry is
/// skipped with a warning giving its position, never its text (it may hold an API key).
fn headers(spec: Option<&str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (i, entry) in spec.unwrap_or_default().split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        let key = key.trim();
        let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
        let parsed = entry.contains('=').then(|| {
            Some((
                HeaderName::from_bytes(key.as_bytes()).ok()?,
                HeaderValue::from_str(&value).ok()?,
            ))
        });
        match parsed.flatten() {
            Some((name, mut value)) => {
                value.set_sensitive(true);
                map.append(name, value);
            }
            None => tracing::warn!(
                variable = OTEL_EXPORTER_OTLP_HEADERS,
                entry = i + 1,
                "a malformed header entry (not name=value) is skipped"
            ),
        }
    }
    map
}

/// What posts batches: the client, the URL, the headers and the envelope's fixed part.
struct Sender {
    http: reqwest::Client,
    url: url::Url,
    headers: HeaderMap,
    envelope: encode::Envelope,
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("the collector answered {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
}

impl SendError {
    /// Worth another attempt: the collector is busy or restarting, or not reached.
    fn retryable(&self) -> bool {
        match self {
            SendError::Status(s) => matches!(s.as_u16(), 429 | 502 | 503 | 504),
            SendError::Transport(e) => e.is_connect(),
        }
    }
}

impl Sender {
    /// One request; the answer read to its end, at most [`MAX_ANSWER`] bytes.
    async fn post(&self, body: bytes::Bytes) -> Result<(), SendError> {
        let mut answer = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await?;
        let status = answer.status();
        let mut read = 0usize;
        while let Some(chunk) = answer.chunk().await? {
            read = read.saturating_add(chunk.len());
            if read > MAX_ANSWER {
                break;
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::Status(status))
        }
    }

    /// Posts a batch, retrying what [`SendError::retryable`] says.
    async fn send(&self, body: bytes::Bytes) -> Result<(), SendError> {
        let backoff = crate::bus::backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(2),
            2.0,
        )
        .with_max_times(RETRIES);
        (|| self.post(body.clone()))
            .retry(backoff)
            .when(SendError::retryable)
            .await
    }
}

/// Takes the queue every `interval` (or when woken) and posts it; at shutdown, posts what
/// is left and ends.
async fn flush_task(e: &'static Exporter, sender: Sender, interval: Duration) {
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

/// OTLP protobuf, written with `prost::encoding`'s primitives: the field numbers of
/// `opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto`.
mod encode {
    use super::*;

    /// `ExportTraceServiceRequest.resource_spans`.
    const REQUEST_RESOURCE_SPANS: u32 = 1;
    /// `ResourceSpans.resource`, `ResourceSpans.scope_spans`.
    const RESOURCE_SPANS_RESOURCE: u32 = 1;
    const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    /// `Resource.attributes`.
    const RESOURCE_ATTRIBUTES: u32 = 1;
    /// `ScopeSpans.scope`, `ScopeSpans.spans`.
    const SCOPE_SPANS_SCOPE: u32 = 1;
    pub(super) const SCOPE_SPANS_SPANS: u32 = 2;
    /// `InstrumentationScope.name`, `.version`.
    const SCOPE_NAME: u32 = 1;
    const SCOPE_VERSION: u32 = 2;
    /// `Span`'s fields.
    const TRACE_ID: u32 = 1;
    const SPAN_ID: u32 = 2;
    const TRACE_STATE: u32 = 3;
    const PARENT_SPAN_ID: u32 = 4;
    const NAME: u32 = 5;
    const KIND: u32 = 6;
    const START: u32 = 7;
    const END: u32 = 8;
    const ATTRIBUTES: u32 = 9;
    const STATUS: u32 = 15;
    const FLAGS: u32 = 16;
    /// `Status.message`, `Status.code` (`STATUS_CODE_ERROR` = 2).
    const STATUS_MESSAGE: u32 = 2;
    const STATUS_CODE: u32 = 3;
    const STATUS_CODE_ERROR: u64 = 2;
    /// `SpanFlags`: the context's remote-ness is known, and the parent is remote.
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    /// `KeyValue.key`, `.value`.
    const KV_KEY: u32 = 1;
    const KV_VALUE: u32 = 2;
    /// `AnyValue.string_value`, `.int_value`, `.array_value`; `ArrayValue.values`.
    const ANY_STRING: u32 = 1;
    const ANY_INT: u32 = 3;
    const ANY_ARRAY: u32 = 5;
    const ARRAY_VALUES: u32 = 1;

    /// The length of a length-delimited field whose content is `len` bytes.
    pub(super) fn field_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    /// A varint, byte by byte into `buf` (prost's `encode_varint` goes through `BufMut`,
    /// a call and a slice copy per byte: ~800 instructions a span more, measured).
    #[inline]
    fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    #[inline]
    fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
        encode_varint(u64::from((tag << 3) | wire_type as u32), buf);
    }

    /// A length-delimited field's key and length (its content follows).
    pub(super) fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    }

    fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        put_len(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }

    fn put_fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }

    fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }

    fn nanos(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn any_str_len(s: &str) -> usize {
        field_len(ANY_STRING, s.len())
    }

    fn any_int_len(v: i64) -> usize {
        key_len(ANY_INT) + encoded_len_varint(v as u64)
    }

    /// The content length of an `AnyValue`.
    fn value_len(v: &Value<'_>) -> usize {
        match v {
            Value::Str(s) => any_str_len(s),
            Value::Int(i) => any_int_len(*i),
            Value::Strs(v) => field_len(ANY_ARRAY, strs_len(v)),
            Value::Ints(v) => field_len(ANY_ARRAY, ints_len(v)),
        }
    }

    /// The content length of an `ArrayValue` of strings.
    fn strs_len(v: &[String]) -> usize {
        v.iter()
            .map(|s| field_len(ARRAY_VALUES, any_str_len(s)))
            .sum()
    }

    fn ints_len(v: &[i64]) -> usize {
        v.iter()
            .map(|i| field_len(ARRAY_VALUES, any_int_len(*i)))
            .sum()
    }

    fn value(buf: &mut Vec<u8>, v: &Value<'_>) {
        match v {
            Value::Str(s) => put_bytes(buf, ANY_STRING, s.as_bytes()),
            Value::Int(i) => put_varint(buf, ANY_INT, *i as u64),
            Value::Strs(v) => {
                put_len(buf, ANY_ARRAY, strs_len(v));
                for s in v {
                    put_len(buf, ARRAY_VALUES, any_str_len(s));
                    put_bytes(buf, ANY_STRING, s.as_bytes());
                }
            }
            Value::Ints(v) => {
                put_len(buf, ANY_ARRAY, ints_len(v));
                for i in v {
                    put_len(buf, ARRAY_VALUES, any_int_len(*i));
                    put_varint(buf, ANY_INT, *i as u64);
                }
            }
        }
    }

    /// The content length of a `KeyValue`.
    fn attr_len(a: &Attr<'_>) -> usize {
        field_len(KV_KEY, a.key.len()) + field_len(KV_VALUE, value_len(&a.value))
    }

    /// A repeated `KeyValue` field entry.
    fn attr(buf: &mut Vec<u8>, tag: u32, a: &Attr<'_>) {
        put_len(buf, tag, attr_len(a));
        put_bytes(buf, KV_KEY, a.key.as_bytes());
        put_len(buf, KV_VALUE, value_len(&a.value));
        value(buf, &a.value);
    }

    fn status_len(message: &str) -> usize {
        field_len(STATUS_MESSAGE, message.len())
            + key_len(STATUS_CODE)
            + encoded_len_varint(STATUS_CODE_ERROR)
    }

    fn state<'a>(s: &Span<'a>) -> &'a str {
        s.context.state.as_deref().unwrap_or_default()
    }

    /// The content length of a `Span` message.
    pub(super) fn span_len(s: &Span<'_>) -> usize {
        let mut n = field_len(TRACE_ID, 16) + field_len(SPAN_ID, 8);
        let state = state(s);
        if !state.is_empty() {
            n += field_len(TRACE_STATE, state.len());
        }
        if s.parent.is_some() {
            n += field_len(PARENT_SPAN_ID, 8);
        }
        n += field_len(NAME, s.name.len());
        n += key_len(KIND) + 1;
        n += 2 * (key_len(START) + 8);
        n += s
            .attributes
            .iter()
            .map(|a| field_len(ATTRIBUTES, attr_len(a)))
            .sum::<usize>();
        if let Some(e) = &s.error {
            n += field_len(STATUS, status_len(e));
        }
        n + key_len(FLAGS) + 4
    }

    /// A `Span` message's content (its key and length are the caller's).
    pub(super) fn span(s: &Span<'_>, buf: &mut Vec<u8>) {
        put_bytes(buf, TRACE_ID, &s.context.trace_id.to_be_bytes());
        put_bytes(buf, SPAN_ID, &s.context.span_id.to_be_bytes());
        let state = state(s);
        if !state.is_empty() {
            put_bytes(buf, TRACE_STATE, state.as_bytes());
        }
        if let Some(p) = s.parent {
            put_bytes(buf, PARENT_SPAN_ID, &p.to_be_bytes());
        }
        put_bytes(buf, NAME, s.name.as_bytes());
        put_varint(buf, KIND, s.kind as u64);
        put_fixed64(buf, START, nanos(s.start));
        put_fixed64(buf, END, nanos(s.end));
        for a in &s.attributes {
            attr(buf, ATTRIBUTES, a);
        }
        if let Some(e) = &s.error {
            put_len(buf, STATUS, status_len(e));
            put_bytes(buf, STATUS_MESSAGE, e.as_bytes());
            put_varint(buf, STATUS_CODE, STATUS_CODE_ERROR);
        }
        let mut flags = u32::from(s.context.flags) | HAS_IS_REMOTE;
        if s.parent.is_some() {
            flags |= IS_REMOTE;
        }
        encode_key(FLAGS, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&flags.to_le_bytes());
    }

    /// The fixed part of every request: the `Resource` field and the `InstrumentationScope`
    /// field, encoded once.
    pub(super) struct Envelope {
        resource: Vec<u8>,
        scope: Vec<u8>,
    }

    impl Envelope {
        pub(super) fn new(service: &str, version: &'static str) -> Envelope {
            let attrs = [
                Attr::str("service.name", service.to_string()),
                Attr::str("service.version", version),
            ];
            let mut content = Vec::new();
            for a in &attrs {
                attr(&mut content, RESOURCE_ATTRIBUTES, a);
            }
            let mut resource = Vec::new();
            put_bytes(&mut resource, RESOURCE_SPANS_RESOURCE, &content);
            let mut content = Vec::new();
            put_bytes(&mut content, SCOPE_NAME, b"runwatch");
            put_bytes(&mut content, SCOPE_VERSION, version.as_bytes());
            let mut scope = Vec::new();
            put_bytes(&mut scope, SCOPE_SPANS_SCOPE, &content);
            Envelope { resource, scope }
        }

        /// An `ExportTraceServiceRequest` of `spans` (`ScopeSpans.spans` entries).
        pub(super) fn wrap(&self, spans: &[u8]) -> Vec<u8> {
            let scope_spans = self.scope.len() + spans.len();
            let resource_spans =
                self.resource.len() + field_len(RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
            let mut out = Vec::with_capacity(field_len(REQUEST_RESOURCE_SPANS, resource_spans));
            put_len(&mut out, REQUEST_RESOURCE_SPANS, resource_spans);
            out.extend_from_slice(&self.resource);
            put_len(&mut out, RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
            out.extend_from_slice(&self.scope);
            out.extend_from_slice(spans);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

    fn decode(spans: &[Span<'_>]) -> ExportTraceServiceRequest {
        let mut buf = Vec::new();
        for s in spans {
            let len = encode::span_len(s);
            let before = buf.len();
            encode::put_len(&mut buf, encode::SCOPE_SPANS_SPANS, len);
            encode::span(s, &mut buf);
            assert_eq!(
                buf.len() - before,
                encode::field_len(encode::SCOPE_SPANS_SPANS, len)
            );
        }
        let body = encode::Envelope::new("runwatch", "1.2.3").wrap(&buf);
        ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes")
    }

    #[test]
    fn spans_decode_with_the_official_types() {
        let ctx = TraceContext {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0x00f0_67aa_0ba9_02b7,
            flags: 1,
            state: Some("congo=t61rcWkgMzE".into()),
        };
        let root = TraceContext {
            state: None,
            ..ctx.clone()
        };
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let long = "x".repeat(300);
        let spans = [
            Span {
                name: "runwatch.decide",
                kind: Kind::Consumer,
                context: &ctx,
                parent: Some(7),
                start,
                end: start + Duration::from_millis(3),
                attributes: vec![
                    Attr::uint("runwatch.stream_sequence", 42),
                    Attr::str("runwatch.event_id", long.clone()),
                    Attr::str("runwatch.outcome", "applied"),
                    Attr::strs("runwatch.trigger_ids", vec!["a".into(), long.clone()]),
                    Attr::strs("runwatch.empty", Vec::new()),
                    Attr::uints("runwatch.stream_sequences", [1, u64::MAX]),
                    Attr::int("negative", -5),
                ],
                error: Some("rejected: bad".into()),
            },
            Span {
                name: "runwatch.timer",
                kind: Kind::Internal,
                context: &root,
                parent: None,
                start,
                end: start,
                attributes: Vec::new(),
                error: None,
            },
        ];
        let request = decode(&spans);
        assert_eq!(request.resource_spans.len(), 1);
        let rs = &request.resource_spans[0];
        let resource = rs.resource.as_ref().expect("resource");
        let kv = |k: &str| {
            resource
                .attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            kv("service.name"),
            Some(any_value::Value::StringValue("runwatch".into()))
        );
        assert_eq!(
            kv("service.version"),
            Some(any_value::Value::StringValue("1.2.3".into()))
        );
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("runwatch", "1.2.3")
        );
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, ctx.trace_id.to_be_bytes());
        assert_eq!(s.span_id, ctx.span_id.to_be_bytes());
        assert_eq!(s.parent_span_id, 7u64.to_be_bytes());
        assert_eq!(s.trace_state, "congo=t61rcWkgMzE");
        assert_eq!(s.name, "runwatch.decide");
        assert_eq!(s.kind, 5);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_126_456_789);
        assert_eq!(s.flags, 0x301);
        let status = s.status.as_ref().expect("status");
        assert_eq!((status.code, status.message.as_str()), (2, "rejected: bad"));
        let attrs: Vec<(String, Option<any_value::Value>)> = s
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone().and_then(|v| v.value)))
            .collect();
        let strs = |v: &[&str]| {
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: v
                    .iter()
                    .map(|s| opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(any_value::Value::StringValue(s.to_string())),
                    })
                    .collect(),
            })
        };
        let ints = |v: &[i64]| {
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: v
                    .iter()
                    .map(|i| opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(any_value::Value::IntValue(*i)),
                    })
                    .collect(),
            })
        };
        assert_eq!(
            attrs,
            vec![
                (
                    "runwatch.stream_sequence".into(),
                    Some(any_value::Value::IntValue(42))
                ),
                (
                    "runwatch.event_id".into(),
                    Some(any_value::Value::StringValue(long.clone()))
                ),
                (
                    "runwatch.outcome".into(),
                    Some(any_value::Value::StringValue("applied".into()))
                ),
                ("runwatch.trigger_ids".into(), Some(strs(&["a", &long]))),
                ("runwatch.empty".into(), Some(strs(&[]))),
                (
                    "runwatch.stream_sequences".into(),
                    Some(ints(&[1, i64::MAX]))
                ),
                ("negative".into(), Some(any_value::Value::IntValue(-5))),
            ]
        );
        let t = &ss.spans[1];
        assert!(t.parent_span_id.is_empty());
        assert!(t.trace_state.is_empty());
        assert!(t.status.is_none());
        assert_eq!((t.kind, t.flags), (1, 0x101));
    }

    #[test]
    fn otlp_headers_are_parsed_and_percent_decoded() {
        let map = headers(Some(
            "x-otlp-key=k1, authorization=Basic%20YWJj ,bad header=v,,x",
        ));
        assert_eq!(
            map.get("x-otlp-key").and_then(|v| v.to_str().ok()),
            Some("k1")
        );
        assert_eq!(
            map.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Basic YWJj")
        );
        assert_eq!(map.len(), 2);
        assert!(headers(None).is_empty());
    }
}
