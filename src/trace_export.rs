//! OpenTelemetry export of runwatch's spans (OTLP over HTTP/protobuf), on when
//! `telemetry.otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set, off and free when
//! not: [`enabled`] is one atomic load and nothing is built or queued.
//!
//! runwatch records a span when its work is done, with the ids it already propagated
//! ([`crate::trace_context`]), so the ids on NATS and HTTP and the exported ones are the
//! same by construction. Spans go to the SDK's batch processor (its own thread, a bounded
//! queue: a full queue drops spans, never blocks the pipeline) and from there to the
//! collector through runwatch's reqwest client on the process's Tokio runtime.
//!
//! | span | kind | parent | attributes |
//! |---|---|---|---|
//! | `runwatch.ingest` | server | the request's `traceparent`, if valid | `runwatch.provider`, `http.route`, `http.response.status_code`, `runwatch.event_ids`, `runwatch.stream_sequences` |
//! | `runwatch.decide` | consumer | the events message's `traceparent` | `runwatch.stream_sequence`, `runwatch.event_id`, `runwatch.group`, `runwatch.outcome`, `runwatch.trigger_ids` |
//! | `runwatch.timer` | internal | none (a new trace) | `runwatch.trigger_id`, `runwatch.group`, `runwatch.rule` |
//! | `runwatch.deliver` | client | the trigger message's `traceparent` | `runwatch.target`, `runwatch.trigger_id`, `runwatch.stream_sequence`, `runwatch.attempt`, `runwatch.outcome`, `http.response.status_code` |

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use crate::trace_context::TraceContext;

pub use opentelemetry::Value;

/// The path OTLP/HTTP takes traces on, appended to the configured base endpoint.
pub const TRACES_PATH: &str = "v1/traces";

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest collector answer read (an `ExportTraceServiceResponse` is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP exporter: {0}")]
    Build(String),
}

struct Exporter {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported (an endpoint is configured and the exporter started).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Starts the exporter to `endpoint` (the base URL; spans are posted to
/// `<endpoint>/v1/traces`), on the current Tokio runtime. A second call is ignored.
pub fn init(endpoint: &url::Url, service: &str) -> Result<(), ExportError> {
    if enabled() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| ExportError::Build(format!("no Tokio runtime: {e}")))?;
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let mut url = endpoint.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let url = url
        .join(TRACES_PATH)
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(Client { http, runtime })
        .build()
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let mut processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().build())
        .build();
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attribute(KeyValue::new("service.version", crate::telemetry::VERSION))
        .build();
    processor.set_resource(&resource);
    let scope = InstrumentationScope::builder("runwatch")
        .with_version(crate::telemetry::VERSION)
        .build();
    let _ = EXPORTER.set(Exporter { processor, scope });
    tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
    Ok(())
}

/// Exports the spans still queued and stops the exporter (at shutdown). Blocks: runs on a
/// blocking thread.
pub async fn shutdown() {
    if let Some(e) = EXPORTER.get() {
        let done = tokio::task::spawn_blocking(move || {
            let _ = e.processor.force_flush();
            let _ = e.processor.shutdown();
        });
        let _ = tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), done).await;
    }
}

/// A finished span, as runwatch records it.
pub struct Span {
    pub name: &'static str,
    pub kind: SpanKind,
    /// The span's own context (its span id is the one propagated to its children).
    pub context: TraceContext,
    /// The parent's span id, `None` for the root of a trace.
    pub parent: Option<u64>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set when the work failed: the span's status is Error with this description.
    pub error: Option<String>,
}

/// Exports the span `make` builds, if the exporter is on and the trace is sampled; `make`
/// is not called otherwise (no attribute is built when tracing is off).
pub fn export(context: &TraceContext, make: impl FnOnce() -> Span) {
    let Some(e) = EXPORTER.get() else {
        return;
    };
    if !context.sampled() {
        return;
    }
    let s = make();
    let state = s
        .context
        .state
        .as_deref()
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    let span_context = SpanContext::new(
        TraceId::from_bytes(s.context.trace_id.to_be_bytes()),
        SpanId::from_bytes(s.context.span_id.to_be_bytes()),
        TraceFlags::new(s.context.flags),
        false,
        state,
    );
    let status = match s.error {
        Some(description) => Status::Error {
            description: Cow::Owned(description),
        },
        None => Status::Unset,
    };
    e.processor.on_end(SpanData {
        span_context,
        parent_span_id: SpanId::from_bytes(s.parent.unwrap_or(0).to_be_bytes()),
        parent_span_is_remote: s.parent.is_some(),
        span_kind: s.kind,
        name: Cow::Borrowed(s.name),
        start_time: s.start,
        end_time: s.end,
        attributes: s.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: e.scope.clone(),
    });
}

/// An `i64` attribute from an unsigned value (saturated: sequences never reach 2^63).
pub fn int(key: &'static str, v: u64) -> KeyValue {
    KeyValue::new(key, i64::try_from(v).unwrap_or(i64::MAX))
}

/// The exporter's HTTP client: runwatch's reqwest (rustls on ring), its requests run on
/// the process's Tokio runtime (the batch processor's thread has none).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut answer = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let mut read = Vec::new();
            while let Some(chunk) = answer.chunk().await? {
                if read.len().saturating_add(chunk.len()) > MAX_ANSWER {
                    break;
                }
                read.extend_from_slice(&chunk);
            }
            let mut response = Response::new(Bytes::from(read));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok::<_, HttpError>(response)
        });
        task.await?
    }
}
