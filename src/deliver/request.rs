//! One delivery attempt: the signed `POST`, and what its answer means.
//!
//! Headers: `Content-Type: application/json`, `Runwatch-Trigger-Id` (the idempotency
//! key), `Runwatch-Delivery-Attempt` (JetStream's delivery count), with a secret either
//! the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`;
//! see [`super::signing`]) or `Runwatch-Signature-256: sha256=<hex HMAC-SHA256 of the raw
//! body>` (GitHub's `X-Hub-Signature-256` scheme), with `cloudevents = "binary"` the
//! `ce-*` headers, with `"structured"` an `application/cloudevents+json` envelope around
//! the body (the signature covers the bytes sent), and the target's own headers. Redirects are not
//! followed: a 3xx is refused like a 4xx, since re-sending a signed body elsewhere is a
//! decision for whoever configures the URL.
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | delivered |
//! | 408, 429, 5xx, timeout, connection error | retried (429/503 `Retry-After` honoured) |
//! | other 3xx/4xx | refused: dead-lettered at once |

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use sha2::Sha256;

use super::config::CloudEventsMode;
use super::signing::{Signing, standard_webhooks_signature};
use super::target::Target;
use crate::secret::Secret;
use crate::trace_context::TraceContext;
use crate::trigger::{CloudEventAttributes, Trigger};

/// Header names runwatch sends.
pub mod headers {
    pub const TRIGGER_ID: &str = "Runwatch-Trigger-Id";
    pub const ATTEMPT: &str = "Runwatch-Delivery-Attempt";
    pub const SIGNATURE: &str = "Runwatch-Signature-256";
    pub const WEBHOOK_ID: &str = "webhook-id";
    pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
    pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
}

/// The longest response excerpt kept (bytes, cut on a character boundary).
pub const MAX_EXCERPT_BYTES: usize = 1024;

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Delivered { status: u16 },
    /// May succeed later. `after` is the receiver's `Retry-After`, if any (not capped here).
    Retry {
        reason: &'static str,
        status: Option<u16>,
        detail: String,
        excerpt: String,
        after: Option<Duration>,
    },
    /// Will not succeed by repeating it.
    Refused {
        reason: &'static str,
        status: Option<u16>,
        detail: String,
        excerpt: String,
    },
}

impl Outcome {
    /// The metrics label of a failed attempt.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { reason, .. } | Outcome::Refused { reason, .. } => reason,
        }
    }
}

/// The headers and body of one attempt at `trigger` with `body` (the trigger's JSON or the
/// template's output): the CloudEvents mode's headers or envelope, then the signature over
/// the bytes actually sent, signed at `now` (Standard Webhooks' timestamp).
pub fn prepare(
    target: &Target,
    body: Bytes,
    trigger: &Trigger,
    attempt: u64,
    now: SystemTime,
) -> (HeaderMap, Bytes) {
    let trigger_id = trigger.trigger_id.to_string();
    let mut h: HeaderMap = target.headers.clone();
    let body = match target.cloudevents {
        CloudEventsMode::Off => {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            body
        }
        CloudEventsMode::Binary => {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            for (name, value) in CloudEventAttributes::of(trigger).headers() {
                // Percent-encoded: always a valid header value.
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            body
        }
        CloudEventsMode::Structured => {
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/cloudevents+json"),
            );
            Bytes::from(CloudEventAttributes::of(trigger).structured(&body))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&trigger_id) {
        h.insert(headers::TRIGGER_ID, v);
    }
    h.insert(headers::ATTEMPT, HeaderValue::from(attempt));
    // W3C trace context: the deliver span's (`runwatch deliver` sets it on the trigger).
    for (name, value) in trigger.trace.iter().flat_map(TraceContext::headers) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    match &target.signing {
        Signing::None => {}
        Signing::Runwatch(secret) => {
            if let Ok(v) = HeaderValue::from_str(&signature(secret, &body)) {
                h.insert(headers::SIGNATURE, v);
            }
        }
        Signing::StandardWebhooks(keys) => {
            let timestamp = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sig = standard_webhooks_signature(keys, &trigger_id, timestamp, &body);
            if let (Ok(id), Ok(sig)) = (
                HeaderValue::from_str(&trigger_id),
                HeaderValue::from_str(&sig),
            ) {
                h.insert(headers::WEBHOOK_ID, id);
                h.insert(headers::WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
                h.insert(headers::WEBHOOK_SIGNATURE, sig);
            }
        }
    }
    (h, body)
}

/// Sends `body` for `trigger` as attempt `attempt`.
pub async fn send(
    target: &Target,
    client: &reqwest::Client,
    body: Bytes,
    trigger: &Trigger,
    attempt: u64,
) -> Outcome {
    let (h, body) = prepare(target, body, trigger, attempt, SystemTime::now());
    let sent = client
        .post(target.url.clone())
        .headers(h)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        // Without the URL: it may hold a credential, and the detail goes to logs and dead letters.
        Err(e) => return transport_failure(&e.without_url()),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let excerpt = read_excerpt(&mut response).await;
    classify(status, retry_after, excerpt)
}

/// What a transport error means: all are worth retrying (timeouts, refused or reset
/// connections, a body cut off), except a request runwatch could not build.
fn transport_failure(e: &reqwest::Error) -> Outcome {
    let detail = error_chain(e);
    if e.is_builder() {
        return Outcome::Refused {
            reason: "request",
            status: None,
            detail,
            excerpt: String::new(),
        };
    }
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    Outcome::Retry {
        reason,
        status: None,
        detail,
        excerpt: String::new(),
        after: None,
    }
}

/// The error and its sources, on one line (reqwest's own text says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// The first [`MAX_EXCERPT_BYTES`] of the body, as valid UTF-8 (lossy), without reading
/// the rest. A body that fails half-way gives what came.
async fn read_excerpt(response: &mut reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf[..buf.len().min(MAX_EXCERPT_BYTES)]).into_owned();
    // A character cut at the byte limit becomes U+FFFD; the result is valid UTF-8.
    text
}

/// The outcome of an HTTP answer.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, excerpt: String) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered { status: code };
    }
    let detail = format!("HTTP {status}");
    let retry = |reason: &'static str, after: Option<Duration>| Outcome::Retry {
        reason,
        status: Some(code),
        detail: detail.clone(),
        excerpt: excerpt.clone(),
        after,
    };
    match code {
        408 => retry("http_408", None),
        429 => retry("http_429", retry_after),
        503 => retry("http_5xx", retry_after),
        500..=599 => retry("http_5xx", None),
        300..=399 => Outcome::Refused {
            reason: "http_3xx",
            status: Some(code),
            detail,
            excerpt,
        },
        _ => Outcome::Refused {
            reason: "http_4xx",
            status: Some(code),
            detail,
            excerpt,
        },
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (a date in the past is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_githubs_scheme() {
        // The example of GitHub's "Validating webhook deliveries".
        let s = signature(&Secret::new("It's a Secret to Everybody"), b"Hello, World!");
        assert_eq!(
            s,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn answers_are_classified() {
        let c = |code: u16| classify(StatusCode::from_u16(code).unwrap(), None, String::new());
        assert_eq!(c(200), Outcome::Delivered { status: 200 });
        assert_eq!(c(204), Outcome::Delivered { status: 204 });
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(c(code), Outcome::Retry { .. }), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 410, 422] {
            assert!(matches!(c(code), Outcome::Refused { .. }), "{code}");
        }
        let r = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "slow".into(),
        );
        assert!(matches!(r, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
