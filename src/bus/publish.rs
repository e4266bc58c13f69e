//! Publishing events and triggers with `Nats-Msg-Id` and awaited PubAcks.

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::{Bus, BusError};
use crate::event::Provider;
use crate::trace_context::TraceContext;
use crate::trigger::{self, CloudEventAttributes, Trigger};

/// Triggers sent before their PubAcks are awaited.
const PIPELINE_CHUNK: usize = 256;

/// What JetStream answered to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAckInfo {
    /// The message's stream sequence (for a duplicate: the sequence of the original).
    pub sequence: u64,
    /// The `Nats-Msg-Id` was seen within the duplicate window; nothing new was stored.
    pub duplicate: bool,
}

/// Checks that `value` can be a `Nats-Msg-Id` header value: not empty, no control
/// characters (async-nats panics on CR/LF in a header value), no surrounding blanks (the
/// server would trim them and dedupe on a different id).
pub(crate) fn check_msg_id(what: &'static str, value: &str) -> Result<(), BusError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if value.trim() != value {
        Some("must not start or end with blanks")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BusError::Invalid {
            what,
            value: value.chars().take(200).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Bus {
    /// The subject an event of `provider` is published to: `<events_subject_prefix>.<provider>`.
    pub fn event_subject(&self, provider: Provider) -> String {
        format!(
            "{}.{}",
            self.streams.events_subject_prefix,
            provider.as_str()
        )
    }

    /// Publishes raw event bytes to `<events_subject_prefix>.<provider>` with
    /// `Nats-Msg-Id: <event_id>` and awaits the PubAck. A second publish of the same id
    /// within the duplicate window stores nothing and answers `duplicate: true`.
    pub async fn publish_event(
        &self,
        provider: Provider,
        event_id: &str,
        payload: Bytes,
    ) -> Result<PubAckInfo, BusError> {
        self.publish_event_traced(provider, event_id, payload, None)
            .await
    }

    /// As [`Bus::publish_event`], with the W3C `traceparent` (and `tracestate`) of `trace`
    /// in the message's headers (the ingest span's context; docs/design.md "Trace
    /// context").
    pub async fn publish_event_traced(
        &self,
        provider: Provider,
        event_id: &str,
        payload: Bytes,
        trace: Option<&TraceContext>,
    ) -> Result<PubAckInfo, BusError> {
        check_msg_id("event_id", event_id)?;
        let subject = self.event_subject(provider);
        let mut message = PublishMessage::build()
            .payload(payload)
            .message_id(event_id);
        for (name, value) in trace.into_iter().flat_map(TraceContext::headers) {
            message = message.header(name, value.as_str());
        }
        self.publish_and_wait(subject, message).await
    }

    /// Publishes many triggers with pipelined PubAcks (all are sent, then all acks are
    /// awaited), each to `trigger::subject(triggers_subject_prefix, provider)` with
    /// `Nats-Msg-Id: <trigger_id>`, the CloudEvents binary-mode headers (`ce-specversion`,
    /// `ce-id`, `ce-type`, `ce-source`, `ce-subject`, `ce-time`, `content-type`; see
    /// [`CloudEventAttributes`]), the trigger's W3C `traceparent`/`tracestate` when it has
    /// a trace context, and the trigger as JSON. Returns one result per trigger,
    /// in order, so the caller marks sent exactly those that were acknowledged.
    pub async fn publish_triggers(&self, triggers: &[Trigger]) -> Vec<Result<(), BusError>> {
        let mut results = Vec::with_capacity(triggers.len());
        // Each unawaited PubAck holds one of the context's in-flight permits; bounded chunks
        // keep a huge slice from waiting on permits held by its own earlier messages.
        for chunk in triggers.chunks(PIPELINE_CHUNK) {
            let mut pending = Vec::with_capacity(chunk.len());
            for t in chunk {
                pending.push(self.send_trigger(t).await);
            }
            for item in pending {
                results.push(match item {
                    Ok((subject, ack)) => match ack.await {
                        Ok(ack) => {
                            if ack.duplicate {
                                tracing::debug!(%subject, seq = ack.sequence, "trigger was already published");
                            }
                            Ok(())
                        }
                        Err(e) => Err(self.publish_error(subject, e)),
                    },
                    Err(e) => Err(e),
                });
            }
        }
        results
    }

    async fn send_trigger(&self, t: &Trigger) -> Result<(String, PublishAckFuture), BusError> {
        let subject = trigger::subject(&self.streams.triggers_subject_prefix, t.provider);
        let body = serde_json::to_vec(t).map_err(|source| BusError::Encode {
            what: format!("trigger {}", t.trigger_id),
            source,
        })?;
        let mut message = with_trigger_headers(
            PublishMessage::build()
                .payload(Bytes::from(body))
                .message_id(t.trigger_id.to_string()),
            t,
        );
        // W3C trace context: the decision span's (checked printable ASCII when parsed).
        for (name, value) in t.trace.iter().flat_map(TraceContext::headers) {
            message = message.header(name, value.as_str());
        }
        match self.js.send_publish(subject.clone(), message).await {
            Ok(ack) => Ok((subject, ack)),
            Err(e) => Err(self.publish_error(subject, e)),
        }
    }

    /// Sends one message and awaits its PubAck.
    pub(crate) async fn publish_and_wait(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<PubAckInfo, BusError> {
        let ack = match self.js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack,
            Err(e) => return Err(self.publish_error(subject, e)),
        };
        match ack.await {
            Ok(ack) => Ok(PubAckInfo {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(e) => Err(self.publish_error(subject, e)),
        }
    }

    fn publish_error(&self, subject: String, source: PublishError) -> BusError {
        if source.kind() == PublishErrorKind::TimedOut {
            BusError::PubAckTimeout {
                subject,
                timeout: self.request_timeout(),
            }
        } else {
            BusError::Publish { subject, source }
        }
    }
}

/// `message` with the headers every trigger message carries besides its id and trace
/// context: `content-type: application/json` and the CloudEvents binary-mode attributes
/// (values percent-encoded: ASCII only). Used by the relay and by `dead redrive`.
pub(crate) fn with_trigger_headers(mut message: PublishMessage, t: &Trigger) -> PublishMessage {
    message = message.header("content-type", "application/json");
    for (name, value) in CloudEventAttributes::of(t).headers() {
        message = message.header(name, value.as_str());
    }
    message
}
