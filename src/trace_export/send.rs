//! Posting batches to the collector: `OTEL_EXPORTER_OTLP_HEADERS`, the request and its
//! retries.

use std::time::Duration;

use backon::Retryable;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::encode;

/// The largest collector answer read (an `ExportTraceServiceResponse` is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// Retries of one batch after a 429/502/503/504 answer or a failed connection.
const RETRIES: usize = 3;

/// The standard variable of the headers sent to the collector (`key=value,key2=value2`).
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";

/// The headers of `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, values
/// percent-decoded, as the OpenTelemetry specification says). A malformed entry is
/// skipped with a warning giving its position, never its text (it may hold an API key).
pub(super) fn headers(spec: Option<&str>) -> HeaderMap {
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
pub(super) struct Sender {
    pub(super) http: reqwest::Client,
    pub(super) url: url::Url,
    pub(super) headers: HeaderMap,
    pub(super) envelope: encode::Envelope,
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
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
            .await
    }
}
