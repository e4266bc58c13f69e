//! The ingest span: every webhook request runs in a W3C trace context, the request's own
//! `traceparent` continued when it is valid, a new trace otherwise (a malformed header is
//! ignored: hostile input never fails a delivery). The events it publishes carry that
//! context in their NATS headers ([`crate::bus::Bus::publish_event_traced`]); its log lines
//! carry `trace_id`; the `runwatch.ingest` span is exported when tracing is on.

use std::time::SystemTime;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::trace_context::TraceContext;
use crate::trace_export::{self, Attr, Kind, Span};

tokio::task_local! {
    static CONTEXT: TraceContext;
}

/// What a webhook published, set on its response for the span: (event id, stream
/// sequence) per event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published(pub Vec<(String, u64)>);

/// The trace context of the webhook being handled (`None` outside one).
pub(crate) fn current() -> Option<TraceContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// The middleware around the webhook routes.
pub(crate) async fn traced(request: Request, next: Next) -> Response {
    let parent = TraceContext::from_http(request.headers());
    let context = TraceContext::child_of(parent.as_ref());
    let start = SystemTime::now();
    let route = request.uri().path().to_string();
    let span = tracing::info_span!("webhook", trace_id = %context.trace_id_field());
    let response = CONTEXT
        .scope(context.clone(), next.run(request))
        .instrument(span)
        .await;
    trace_export::export(&context, || {
        let provider = route.rsplit('/').next().unwrap_or_default().to_string();
        let status = response.status().as_u16();
        let published = response
            .extensions()
            .get::<Published>()
            .cloned()
            .unwrap_or_default();
        let mut attributes = vec![
            Attr::str("runwatch.provider", provider),
            Attr::str("http.route", route),
            Attr::int("http.response.status_code", i64::from(status)),
        ];
        if !published.0.is_empty() {
            let (ids, seqs): (Vec<_>, Vec<_>) = published.0.into_iter().unzip();
            attributes.push(Attr::strs("runwatch.event_ids", ids));
            attributes.push(Attr::uints("runwatch.stream_sequences", seqs));
        }
        Span {
            name: "runwatch.ingest",
            kind: Kind::Server,
            parent: parent.as_ref().map(|p| p.span_id),
            context: &context,
            start,
            end: SystemTime::now(),
            attributes,
            error: (status >= 500).then(|| format!("answered {status}")),
        }
    });
    response
}
