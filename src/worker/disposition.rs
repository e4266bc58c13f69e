//! What becomes of an input message: acked once its decision is committed, naked with an
//! exponential, jittered delay when it may succeed later, or published to the dead-letter
//! stream with its reason and then terminated. The only code of the worker that
//! acknowledges messages (through `bus::disposition`, which deliver uses too).

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use tracing::{debug, warn};

use crate::bus::backoff::{backoff, nth_delay};
use crate::bus::disposition::{Letter, ack, dead_letter_else_nak};
use crate::bus::{Bus, DeadLetter};
use crate::config::Config;

pub use crate::bus::disposition::msg_info;

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
    let letter = Letter::Input(DeadLetter {
        reason,
        detail,
        original_subject: msg.subject.as_str(),
        stream_seq: seq,
        deliveries: delivered,
        payload: &msg.payload,
    });
    match dead_letter_else_nak(bus, msg, &letter, nak_delay(config, delivered)).await {
        Ok(()) => {
            warn!(reason, detail, seq, "input dead-lettered");
            metrics::counter!("runwatch_events_total", "outcome" => "dead_lettered").increment(1);
        }
        Err(e) => {
            warn!(error = %e, seq, "dead-lettering failed; the input will be redelivered");
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

/// The nak delay before delivery `delivered + 1`: exponential with jitter (`retry.*`).
pub fn nak_delay(config: &Config, delivered: u64) -> Duration {
    nth_delay(backoff(&config.retry), delivered, config.retry.max_delay)
}
