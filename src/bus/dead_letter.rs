//! Dead letters: poison input (or input that kept failing) kept with its reason.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::{Bus, BusError};

/// Header names of a dead letter.
pub mod headers {
    /// The reason code (`not_json`, `schema`, `invalid`, `oversize`, `max_deliver`, ...).
    pub const REASON: &str = "Runwatch-Reason";
    /// Human-readable detail, at most 1 KiB, without line breaks.
    pub const DETAIL: &str = "Runwatch-Detail";
    /// The subject the original message was published to.
    pub const ORIGINAL_SUBJECT: &str = "Runwatch-Original-Subject";
    /// The original message's sequence in the events stream.
    pub const ORIGINAL_SEQ: &str = "Runwatch-Original-Seq";
    /// How many times the original message had been delivered.
    pub const DELIVERIES: &str = "Runwatch-Deliveries";
    /// Present when the payload had to be cut to fit the server's `max_payload`: the
    /// original payload's length in bytes.
    pub const TRUNCATED: &str = "Runwatch-Truncated";
    /// A delivery dead letter (`runwatch deliver`): the target's name.
    pub const TARGET: &str = "Runwatch-Target";
    /// A delivery dead letter: the HTTP status of the last answer, when there was one.
    pub const HTTP_STATUS: &str = "Runwatch-Http-Status";
    /// A delivery dead letter: the start of the last answer's body (1 KiB at most, valid
    /// UTF-8, control characters as spaces).
    pub const RESPONSE: &str = "Runwatch-Response-Excerpt";
    /// A delivery dead letter: the trigger's id.
    pub const TRIGGER_ID: &str = "Runwatch-Trigger-Id";
}

/// The subject token after `<triggers_subject_prefix>.` under which a redriven delivery
/// dead letter is republished: `<triggers_subject_prefix>.redrive.<target>`, delivered by
/// that target only.
pub const REDRIVE_TOKEN: &str = "redrive";

/// The longest `Runwatch-Detail` value, in bytes.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Room left for the NATS protocol line and header framing when fitting a payload.
const FRAMING_SLACK: usize = 512;

/// A message to dead-letter.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The reason code; it becomes the last subject token (`<dead_subject_prefix>.<reason>`,
    /// characters other than letters, digits, `-` and `_` replaced by `_`).
    pub reason: &'a str,
    /// Human-readable detail (the rejection or the last error); truncated to 1 KiB and made
    /// header-safe.
    pub detail: &'a str,
    /// The subject the original message was published to.
    pub original_subject: &'a str,
    /// The original message's stream sequence in the events stream.
    pub stream_seq: u64,
    /// How many times the original message was delivered.
    pub deliveries: u64,
    /// The original payload, kept as is.
    pub payload: &'a [u8],
}

/// A trigger that `runwatch deliver` gave up on for one target: a dead letter (reason
/// `deliver_refused`, `deliver_exhausted`, `deliver_template` or `deliver_invalid`; the
/// original is the trigger in the triggers stream) and what the target answered.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryDeadLetter<'a> {
    pub letter: DeadLetter<'a>,
    /// The target's name.
    pub target: &'a str,
    /// The HTTP status of the last answer, if any.
    pub status: Option<u16>,
    /// The start of the last answer's body.
    pub response: &'a str,
    /// The trigger's id (empty when the payload is not a trigger).
    pub trigger_id: &'a str,
}

/// A dead letter as read back from the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadMessage {
    /// Sequence in the dead-letter stream.
    pub sequence: u64,
    /// Subject in the dead-letter stream (`<dead_subject_prefix>.<reason>`).
    pub subject: String,
    /// `Runwatch-Reason`.
    pub reason: String,
    /// `Runwatch-Detail`.
    pub detail: String,
    /// `Runwatch-Original-Subject`.
    pub original_subject: String,
    /// `Runwatch-Original-Seq` (None if absent or not a number).
    pub original_seq: Option<u64>,
    /// `Runwatch-Deliveries` (None if absent or not a number).
    pub deliveries: Option<u64>,
    /// `Runwatch-Truncated`: the original payload length when the payload was cut.
    pub truncated_from: Option<u64>,
    /// `Runwatch-Target`: set on delivery dead letters only.
    pub target: Option<String>,
    /// `Runwatch-Http-Status` (delivery dead letters).
    pub http_status: Option<u16>,
    /// `Runwatch-Response-Excerpt` (delivery dead letters).
    pub response: Option<String>,
    /// All headers, as stored.
    pub headers: HeaderMap,
    /// The original payload.
    pub payload: Bytes,
}

impl DeadMessage {
    pub(crate) fn from_parts(
        sequence: u64,
        subject: String,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> DeadMessage {
        let headers = headers.unwrap_or_default();
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let number = |name: &str| headers.get(name).and_then(|v| v.as_str().parse().ok());
        DeadMessage {
            sequence,
            subject,
            reason: text(headers::REASON),
            detail: text(headers::DETAIL),
            original_subject: text(headers::ORIGINAL_SUBJECT),
            original_seq: number(headers::ORIGINAL_SEQ),
            deliveries: number(headers::DELIVERIES),
            truncated_from: number(headers::TRUNCATED),
            target: headers.get(headers::TARGET).map(|v| v.as_str().to_string()),
            http_status: headers
                .get(headers::HTTP_STATUS)
                .and_then(|v| v.as_str().parse().ok()),
            response: headers
                .get(headers::RESPONSE)
                .map(|v| v.as_str().to_string()),
            headers,
            payload,
        }
    }
}

/// A subject token from a reason code.
pub(crate) fn reason_token(reason: &str) -> String {
    let token: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if token.is_empty() {
        "unknown".to_string()
    } else {
        token
    }
}

/// A header-safe value: control characters (CR, LF, ...) become spaces, surrounding
/// blanks are trimmed, and the result is cut to at most `max` bytes on a character boundary.
pub(crate) fn header_safe(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.len() <= max {
        return cleaned.to_string();
    }
    let mut end = max;
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    cleaned[..end].trim_end().to_string()
}

/// The headers every dead letter has: its `Nats-Msg-Id`, reason, detail, original subject
/// and sequence, deliveries.
fn dead_headers(letter: &DeadLetter<'_>, msg_id: String) -> Vec<(&'static str, String)> {
    vec![
        ("Nats-Msg-Id", msg_id),
        (headers::REASON, header_safe(letter.reason, 256)),
        (
            headers::DETAIL,
            header_safe(letter.detail, MAX_DETAIL_BYTES),
        ),
        (
            headers::ORIGINAL_SUBJECT,
            header_safe(letter.original_subject, 1024),
        ),
        (headers::ORIGINAL_SEQ, letter.stream_seq.to_string()),
        (headers::DELIVERIES, letter.deliveries.to_string()),
    ]
}

impl Bus {
    /// Publishes the original payload to `<dead_subject_prefix>.<reason>` with headers
    /// `Runwatch-Reason`, `Runwatch-Detail` (1 KiB at most, no CR/LF),
    /// `Runwatch-Original-Subject`, `Runwatch-Original-Seq`, `Runwatch-Deliveries` and
    /// `Nats-Msg-Id: dead-<events stream>-<seq>` (so dead-lettering the same message again
    /// stores nothing new), and awaits the PubAck. A payload too big to fit next to the
    /// headers under the server's `max_payload` is cut, and `Runwatch-Truncated` says so.
    pub async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), BusError> {
        let msg_id = format!("dead-{}-{}", self.streams.events, letter.stream_seq);
        self.publish_dead(letter, dead_headers(letter, msg_id))
            .await
    }

    /// Publishes a trigger that `runwatch deliver` gave up on for one target, like
    /// [`Bus::dead_letter`], with `Runwatch-Target`, `Runwatch-Trigger-Id`,
    /// `Runwatch-Http-Status` (when there was an answer) and `Runwatch-Response-Excerpt`,
    /// and `Nats-Msg-Id: dead-<triggers stream>-<seq>-<target>`.
    pub async fn dead_letter_delivery(&self, d: &DeliveryDeadLetter<'_>) -> Result<(), BusError> {
        let msg_id = format!(
            "dead-{}-{}-{}",
            self.streams.triggers, d.letter.stream_seq, d.target
        );
        let mut values = dead_headers(&d.letter, msg_id);
        values.push((headers::TARGET, header_safe(d.target, 256)));
        values.push((headers::TRIGGER_ID, header_safe(d.trigger_id, 256)));
        values.push((headers::RESPONSE, header_safe(d.response, MAX_DETAIL_BYTES)));
        if let Some(status) = d.status {
            values.push((headers::HTTP_STATUS, status.to_string()));
        }
        self.publish_dead(&d.letter, values).await
    }

    /// Publishes the letter's payload with the header `values` to
    /// `<dead_subject_prefix>.<reason>`, cutting the payload to fit `max_payload` (and
    /// saying so), and awaits the PubAck.
    async fn publish_dead(
        &self,
        letter: &DeadLetter<'_>,
        values: Vec<(&str, String)>,
    ) -> Result<(), BusError> {
        let (reason, seq, payload) = (letter.reason, letter.stream_seq, letter.payload);
        let subject = format!(
            "{}.{}",
            self.streams.dead_subject_prefix,
            reason_token(reason)
        );
        // "NATS/1.0\r\n", "Name: value\r\n" per header, a final "\r\n", and one more
        // header if the payload has to be cut.
        let header_bytes: usize = 12
            + values
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
            + headers::TRUNCATED.len()
            + 24;
        let mut headers = HeaderMap::new();
        for (name, value) in values {
            headers.insert(name, value);
        }
        let max_payload = self.client.max_payload();
        let room = max_payload.saturating_sub(header_bytes + subject.len() + FRAMING_SLACK);
        let payload = if payload.len() > room {
            tracing::warn!(
                seq,
                len = payload.len(),
                kept = room,
                "dead letter payload cut to fit max_payload"
            );
            headers.insert(headers::TRUNCATED, payload.len().to_string());
            Bytes::copy_from_slice(&payload[..room])
        } else {
            Bytes::copy_from_slice(payload)
        };
        let ack = self
            .publish_and_wait(
                subject.clone(),
                PublishMessage::build().payload(payload).headers(headers),
            )
            .await?;
        tracing::info!(%subject, original_seq = seq, dead_seq = ack.sequence, duplicate = ack.duplicate, "dead-lettered");
        Ok(())
    }
}

impl DeadMessage {
    /// The first `max` characters of the payload (lossy UTF-8, control characters as
    /// spaces), with `…` when cut.
    pub fn excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.payload);
        let mut out: String = text
            .chars()
            .take(max)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.chars().nth(max).is_some() {
            out.push('…');
        }
        out
    }
}

impl Bus {
    /// Redrives a dead letter: republishes its original payload to its original subject
    /// (a delivery dead letter: to `<triggers_subject_prefix>.redrive.<target>`, which only
    /// that target's `runwatch deliver` consumer delivers) with `Nats-Msg-Id: redrive-<dead stream>-<dead seq>` (a fresh id, so the original
    /// event id's dedupe entry does not swallow it, and a repeated redrive of the same
    /// letter is deduplicated), awaits the PubAck, then deletes the letter from the
    /// dead-letter stream. A redriven trigger gets the CloudEvents headers of
    /// [`Bus::publish_triggers`] again (a dead letter keeps only its payload). Refused (nothing published) when the payload was cut or the
    /// original subject is not under `<events_subject_prefix>.` (delivery dead letters:
    /// `<triggers_subject_prefix>.`).
    pub async fn redrive(&self, dead: &DeadMessage) -> Result<super::PubAckInfo, BusError> {
        if dead.truncated_from.is_some() {
            return Err(BusError::Invalid {
                what: "dead letter",
                value: dead.sequence.to_string(),
                reason: "its payload was cut to fit max_payload; the original is lost",
            });
        }
        let subject = match &dead.target {
            // A delivery dead letter goes back to the triggers stream, for its target only.
            Some(target) => {
                let prefix = format!("{}.", self.streams.triggers_subject_prefix);
                if !dead.original_subject.starts_with(&prefix) {
                    return Err(BusError::Invalid {
                        what: "original subject",
                        value: dead.original_subject.clone(),
                        reason: "a delivery dead letter whose subject is not of the triggers stream",
                    });
                }
                if target.is_empty()
                    || !target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(BusError::Invalid {
                        what: "delivery target",
                        value: target.clone(),
                        reason: "not a target name",
                    });
                }
                format!("{prefix}{REDRIVE_TOKEN}.{target}")
            }
            None => {
                let prefix = format!("{}.", self.streams.events_subject_prefix);
                if !dead.original_subject.starts_with(&prefix) {
                    return Err(BusError::Invalid {
                        what: "original subject",
                        value: dead.original_subject.clone(),
                        reason: "not a subject of the events stream",
                    });
                }
                dead.original_subject.clone()
            }
        };
        let msg_id = format!("redrive-{}-{}", self.streams.dead, dead.sequence);
        let mut message = PublishMessage::build()
            .payload(dead.payload.clone())
            .message_id(msg_id);
        // A redriven trigger carries the CloudEvents headers as the relay wrote them (a
        // letter that is not a trigger, `deliver_invalid`, goes back as it was).
        if dead.target.is_some()
            && let Ok(t) = serde_json::from_slice::<crate::trigger::Trigger>(&dead.payload)
        {
            message = super::publish::with_trigger_headers(message, &t);
        }
        let ack = self.publish_and_wait(subject.clone(), message).await?;
        let read_error = |source: super::BoxError| BusError::Read {
            what: format!("stream `{}`", self.streams.dead),
            source,
        };
        let stream = self
            .js
            .get_stream_no_info(&self.streams.dead)
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        stream
            .delete_message(dead.sequence)
            .await
            .map_err(|e| read_error(Box::new(e)))?;
        tracing::info!(
            dead_seq = dead.sequence,
            %subject,
            seq = ack.sequence,
            "dead letter redriven"
        );
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_tokens_are_subject_safe() {
        assert_eq!(reason_token("not_json"), "not_json");
        assert_eq!(reason_token("a.b c>*"), "a_b_c__");
        assert_eq!(reason_token(""), "unknown");
    }

    #[test]
    fn header_values_are_safe_and_short() {
        assert_eq!(header_safe("line1\r\nline2", 100), "line1  line2");
        let long = "é".repeat(1000);
        let cut = header_safe(&long, MAX_DETAIL_BYTES);
        assert!(cut.len() <= MAX_DETAIL_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
