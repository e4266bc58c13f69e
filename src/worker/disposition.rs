//! What becomes of an input message: acked once its decision is committed, naked with an
//! exponential, jittered delay when it may succeed later, or published to the dead-letter
//! stream with its reason and then terminated. The only code that acknowledges messages.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use backon::{BackoffBuilder, ExponentialBuilder};
use tracing::{debug, warn};

use crate::bus::{Bus, DeadLetter};
use crate::config::Config;

/// (stream sequence, delivery count) of a message.
pub fn msg_info(msg: &Message) -> (u64, u64) {
    msg.info()
        .map(|i| (i.stream_sequence, i.delivered.max(1) as u64))
        .unwrap_or((0, 1))
}

/// The decision is committed: acknowledge the input.
pub async fn applied(msg: &Message) {
    metrics::counter!("runwatch_events_total", "outcome" => "applied").increment(1);
    record_decision_latency(msg);
    ack(msg, AckKind::Ack).await;
}

/// Naks with backoff, or dead-letters once `consumer.max_deliver` deliveries are used up.
pub async fn retry_later(bus: &Bus, config: &Config, msg: &Message, reason: &str) {
    let (_, delivered) = msg_info(msg);
    if delivered >= u64::from(config.consumer.max_deliver) {
        dead_letter(bus, config, msg, "max_deliver", reason).await;
        return;
    }
    let delay = nak_delay(config, delivered);
    metrics::counter!("runwatch_events_total", "outcome" => "retried").increment(1);
    debug!(?delay, delivered, "nak");
    ack(msg, AckKind::Nak(Some(delay))).await;
}

/// Publishes the input to the dead-letter stream with its reason, then terminates it. If the
/// dead letter cannot be published the input is naked, never dropped.
pub async fn dead_letter(bus: &Bus, config: &Config, msg: &Message, reason: &str, detail: &str) {
    let (seq, delivered) = msg_info(msg);
    let letter = DeadLetter {
        reason,
        detail,
        original_subject: msg.subject.as_str(),
        stream_seq: seq,
        deliveries: delivered,
        payload: &msg.payload,
    };
    match bus.dead_letter(&letter).await {
        Ok(()) => {
            warn!(reason, detail, seq, "input dead-lettered");
            metrics::counter!("runwatch_dead_letters_total", "reason" => reason.to_string())
                .increment(1);
            metrics::counter!("runwatch_events_total", "outcome" => "dead_lettered").increment(1);
            ack(msg, AckKind::Term).await;
        }
        Err(e) => {
            warn!(error = %e, seq, "dead-lettering failed; the input will be redelivered");
            ack(msg, AckKind::Nak(Some(nak_delay(config, delivered)))).await;
        }
    }
}

/// Tells JetStream the message is still being worked on (its `ack_wait` starts again).
pub async fn in_progress(msg: &Message) {
    ack(msg, AckKind::Progress).await;
}

/// Hands a message back at once (prefetched, never decided: shutting down).
pub async fn hand_back(msg: &Message) {
    ack(msg, AckKind::Nak(None)).await;
}

/// Records `runwatch_decision_seconds`: from the message's arrival in JetStream (the
/// server's clock) to now, when it is acked after its decision. Clock skew below zero counts
/// as zero.
fn record_decision_latency(msg: &Message) {
    if let Ok(info) = msg.info() {
        let arrived = std::time::SystemTime::from(info.published);
        let waited = std::time::SystemTime::now()
            .duration_since(arrived)
            .unwrap_or_default();
        metrics::histogram!("runwatch_decision_seconds").record(waited.as_secs_f64());
    }
}

/// The nak delay before delivery `delivered + 1`: exponential with jitter (backon).
pub fn nak_delay(config: &Config, delivered: u64) -> Duration {
    let r = &config.retry;
    ExponentialBuilder::default()
        .with_min_delay(r.min_delay)
        .with_max_delay(r.max_delay)
        .with_factor(r.factor)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(delivered.saturating_sub(1).min(64) as usize)
        .unwrap_or(r.max_delay)
}

async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        // The server redelivers after ack_wait; merging is idempotent.
        debug!(error = %e, "ack failed");
    }
}
