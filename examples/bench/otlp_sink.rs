//! `--tracing`: the worker runs with `telemetry.otlp_endpoint` set, so every decision
//! builds and exports a `runwatch.decide` span. Without `--otlp-endpoint` the spans go to
//! this sink: an OTLP/HTTP endpoint on 127.0.0.1 that answers every `POST /v1/traces` with
//! an empty `ExportTraceServiceResponse` (zero bytes of protobuf) and counts requests and
//! bytes, so the figure is the worker's cost of tracing, not a collector's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

/// Starts the sink; returns its base URL and its counters.
pub async fn start() -> Result<(String, Arc<Counts>)> {
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), counts))
}

async fn traces(State(counts): State<Arc<Counts>>, body: Bytes) -> impl IntoResponse {
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Bytes::new(),
    )
}

impl Counts {
    pub fn line(&self) -> String {
        format!(
            "otlp_sink: requests={} bytes={}",
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed)
        )
    }
}
