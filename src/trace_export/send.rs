//! Posting batches to the collector: `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, the request and
//! its retries.

use std::time::Duration;

use backon::Retryable;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::encode;

/// The largest collector answer read (an `ExportTraceServiceResponse` is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// Retries of one batch after a 429/502/503/504 answer or a failed connection.
const RETRIES: usize = 3;

/// The longest `Retry-After` honoured: the flush task waits it out while spans queue (and
/// are dropped when the queue is full).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The standard variable of the headers sent to the collector (`key=value,key2=value2`).
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";

/// The same for traces only; when set, it is used instead of [`OTEL_EXPORTER_OTLP_HEADERS`].
pub const OTEL_EXPORTER_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";

/// The headers of `spec`, the value of the variable `variable` (`key=value,key2=value2`,
/// values percent-decoded, as the OpenTelemetry specification says). A malformed entry is
/// skipped with a warning naming the variable and the entry's position, never its text (it
/// may hold an API key).
pub(super) fn headers(variable: &str, spec: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (i, entry) in spec.split(',').enumerate() {
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
                variable,
                entry = i + 1,
                "a malformed header entry (not name=value) is skipped"
            ),
        }
    }
    map
}

/// What posts batches: the client, the URL, the headers and the envelope's fixed part.
pub(super) struct Sender {
    pub(super) http: reqwest::Client,
    pub(super) url: url::Url,
    pub(super) headers: HeaderMap,
    pub(super) envelope: encode::Envelope,
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("the collector answered {status}")]
    Status {
        status: reqwest::StatusCode,
        /// The answer's `Retry-After`, in seconds (the HTTP-date form is not read).
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
}

impl SendError {
    /// Worth another attempt: the collector is busy or restarting, or not reached.
    fn retryable(&self) -> bool {
        match self {
            SendError::Status { status, .. } => matches!(status.as_u16(), 429 | 502 | 503 | 504),
            SendError::Transport(e) => e.is_connect(),
        }
    }

    /// The wait before the next attempt: the answer's `Retry-After` (at most
    /// [`MAX_RETRY_AFTER`]) when it gave one, else the backoff's `planned`; `None` (no
    /// attempt left) stays `None`.
    pub(super) fn wait(&self, planned: Option<Duration>) -> Option<Duration> {
        let asked = match self {
            SendError::Status { retry_after, .. } => *retry_after,
            SendError::Transport(_) => None,
        };
        planned.map(|p| asked.map_or(p, |a| a.min(MAX_RETRY_AFTER)))
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
        let retry_after = answer
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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
            Err(SendError::Status {
                status,
                retry_after,
            })
        }
    }

    /// Posts a batch, retrying what [`SendError::retryable`] says.
    pub(super) async fn send(&self, body: bytes::Bytes) -> Result<(), SendError> {
        let backoff = crate::bus::backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(2),
            2.0,
        )
        .with_max_times(RETRIES);
        (|| self.post(body.clone()))
            .retry(backoff)
            .when(SendError::retryable)
            .adjust(|e, planned| e.wait(planned))
            .await
    }
}
