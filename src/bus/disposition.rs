//! Acknowledging JetStream messages, for every consumer of runwatch (the worker's inputs,
//! deliver's triggers): the message's sequence and delivery count, ack / nak / term /
//! progress whose failure is logged (JetStream redelivers after `ack_wait`), and
//! dead-letter-else-nak: a message is terminated only once its dead letter is stored.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tracing::debug;

use super::dead_letter::{DeadLetter, DeliveryDeadLetter};
use super::{Bus, BusError};

/// (stream sequence, delivery count) of a message.
pub fn msg_info(msg: &Message) -> (u64, u64) {
    msg.info()
        .map(|i| (i.stream_sequence, i.delivered.max(1) as u64))
        .unwrap_or((0, 1))
}

/// Acknowledges `msg` as `kind`. A failure is logged only: the server redelivers after
/// `ack_wait`, and every consumer of runwatch is idempotent.
pub async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        debug!(error = %e, "ack failed");
    }
}

/// What a message is dead-lettered as.
pub enum Letter<'a> {
    /// An input of the events stream ([`Bus::dead_letter`]).
    Input(DeadLetter<'a>),
    /// A trigger deliver gave up on for one target ([`Bus::dead_letter_delivery`]).
    Delivery(DeliveryDeadLetter<'a>),
}

impl Letter<'_> {
    fn reason(&self) -> &str {
        match self {
            Letter::Input(l) => l.reason,
            Letter::Delivery(d) => d.letter.reason,
        }
    }
}

/// Publishes `letter`, then terminates `msg` (counted in `runwatch_dead_letters_total`);
/// when the letter cannot be published, naks `msg` with `retry_in` instead, so nothing is
/// dropped, and returns the error for the caller to log.
pub async fn dead_letter_else_nak(
    bus: &Bus,
    msg: &Message,
    letter: &Letter<'_>,
    retry_in: Duration,
) -> Result<(), BusError> {
    let published = match letter {
        Letter::Input(l) => bus.dead_letter(l).await,
        Letter::Delivery(d) => bus.dead_letter_delivery(d).await,
    };
    match published {
        Ok(()) => {
            metrics::counter!("runwatch_dead_letters_total", "reason" => letter.reason().to_string())
                .increment(1);
            ack(msg, AckKind::Term).await;
            Ok(())
        }
        Err(e) => {
            ack(msg, AckKind::Nak(Some(retry_in))).await;
            Err(e)
        }
    }
}
