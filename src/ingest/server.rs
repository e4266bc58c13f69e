//! The HTTP server of `runwatch ingest`, bounded against hostile clients (docs/security.md
//! "Webhook receiver bounds"). No secret is needed to reach any of these bounds, so each
//! one holds before a signature is checked:
//!
//! | bound | key | past it |
//! |---|---|---|
//! | request line and headers in time | `ingest.header_read_timeout` | connection closed (hyper's `header_read_timeout`; also an idle kept-alive connection) |
//! | request line and headers in size | [`MAX_HEADER_BYTES`] | 431 (hyper's `max_header_size`; a connection buffers at most [`MAX_BUF_SIZE`] plus one read) |
//! | connections open at once | `ingest.max_connections` | 503, connection closed |
//! | webhook requests in flight | `ingest.max_requests_in_flight` | 503 (tower's global concurrency limit with load shedding: no queue) |
//! | bytes of bodies held at once | `ingest.max_buffered_bytes` | 503, before the body is read |
//! | one body in time | `ingest.body_read_timeout` | 408, connection closed |
//! | one body in size | `ingest.max_body_bytes` | 413 |
//!
//! Each refusal is counted in `runwatch_ingest_refused_total{reason}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::IngestConfig;

/// The largest request line and headers accepted (431 beyond). Webhook senders send a few
/// KiB of headers.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The most hyper buffers of one connection before handing bytes on (its read buffer).
pub const MAX_BUF_SIZE: usize = 64 * 1024;

/// The answer to a connection past `ingest.max_connections`, written without waiting.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 46\r\n\r\n{\"error\":\"too many connections; retry later\"}\n";

/// Counts a refusal in `runwatch_ingest_refused_total`.
fn refused(reason: &'static str) {
    metrics::counter!("runwatch_ingest_refused_total", "reason" => reason).increment(1);
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// An answer after which the connection is closed (the rest of the body is not read).
fn closing(status: StatusCode, message: &str) -> Response {
    let mut r = error(status, message);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What reading a body needs: the shared byte budget, the size and time limits.
#[derive(Clone)]
pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
    max_body_bytes: usize,
    timeout: Duration,
}

impl BodyBudget {
    pub(crate) fn new(config: &IngestConfig) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(
                config.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
            )),
            max_body_bytes: config.max_body_bytes,
            timeout: config.body_read_timeout,
        }
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Reads a whole body of at most `max` bytes, allocating at most `max` (`declared`, the
/// `Content-Length`, is at most `max`).
async fn read_body(body: Body, max: usize, declared: Option<usize>) -> Result<Bytes, BodyError> {
    let mut out: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    let mut frames = body.into_data_stream();
    while let Some(chunk) = frames.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        // out.len() <= max holds throughout.
        if chunk.len() > max - out.len() {
            return Err(BodyError::TooLarge);
        }
        if out.capacity() - out.len() < chunk.len() {
            // Grow by doubling, but never past `max` (Vec's own doubling could).
            let want = out
                .len()
                .saturating_mul(2)
                .max(out.len() + chunk.len())
                .min(max);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Middleware of the webhook routes: charges the body to the byte budget (503 when it
/// cannot), reads it whole within `body_read_timeout` (408) and `max_body_bytes` (413),
/// and holds the charge until the handler has answered.
pub(crate) async fn bounded_body(
    State(budget): State<BodyBudget>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is over ingest.max_body_bytes",
        )
    };
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => match usize::try_from(n) {
                Ok(n) if n <= budget.max_body_bytes => Some(n),
                _ => return too_large(),
            },
            None => return error(StatusCode::BAD_REQUEST, "invalid Content-Length"),
        },
    };
    let charge = declared.unwrap_or(budget.max_body_bytes);
    let _charge = if charge == 0 {
        None
    } else {
        let permits = u32::try_from(charge).unwrap_or(u32::MAX);
        match budget.bytes.clone().try_acquire_many_owned(permits) {
            Ok(p) => Some(p),
            Err(_) => {
                refused("buffered_bytes");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bodies in memory (ingest.max_buffered_bytes); retry later",
                );
            }
        }
    };
    let read = tokio::time::timeout(
        budget.timeout,
        read_body(body, budget.max_body_bytes, declared),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Read(e))) => {
            return closing(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
        Err(_) => {
            refused("body_timeout");
            return closing(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive within ingest.body_read_timeout",
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Answers 503 to a request shed by the concurrency limit.
pub(crate) async fn shed(_: axum::BoxError) -> Response {
    refused("in_flight");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in flight (ingest.max_requests_in_flight); retry later",
    )
}

/// Serves `app` on `listener` over HTTP/1.1 with the connection bounds until `shutdown`;
/// then stops accepting, lets in-flight requests finish (idle connections close at once)
/// and waits for the connections at most `shutdown_timeout`.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    config: &IngestConfig,
    shutdown_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUF_SIZE);
    let connections = Arc::new(Semaphore::new(
        config.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "ingest: accepting a connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refused("connections");
            // Best effort, never waiting: the socket buffer of a new connection is empty.
            let _ = stream.try_write(BUSY);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    refused("header_timeout");
                } else {
                    tracing::debug!(error = %e, "ingest: connection ended with an error");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?shutdown_timeout,
            "ingest: connections still open after shutdown.timeout; leaving them"
        );
    }
}
