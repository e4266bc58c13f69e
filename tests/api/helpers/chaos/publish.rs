//! Publishing the trace while the faults happen: each message retried (with its message id,
//! so JetStream deduplicates a retry) until acknowledged, for up to 180 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use runwatch::bus::Bus;
use runwatch::event::Provider;

use super::Error;
use super::faults::Progress;
use super::trace::Msg;

/// Publishes `messages`, 64 in flight; how many poison messages JetStream stored.
pub async fn publish_all(bus: &Bus, messages: &[Msg], progress: &Progress) -> Result<usize, Error> {
    let subject = bus.event_subject(Provider::Github);
    let stored_poison = Arc::new(AtomicU64::new(0));
    let results: Vec<Result<(), Error>> = futures::stream::iter(messages.iter())
        .map(|m| {
            let (subject, stored_poison) = (subject.clone(), stored_poison.clone());
            async move {
                let duplicate = publish_one(bus, subject, m).await?;
                if m.poison && !duplicate {
                    stored_poison.fetch_add(1, Ordering::Relaxed);
                }
                progress.acked.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffered(64)
        .collect()
        .await;
    progress.publish_done.store(true, Ordering::Relaxed);
    for r in results {
        r?;
    }
    Ok(stored_poison.load(Ordering::Relaxed) as usize)
}

/// Publishes one message until JetStream acknowledges it; whether it was a duplicate.
async fn publish_one(bus: &Bus, subject: String, m: &Msg) -> Result<bool, Error> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut delay = Duration::from_millis(50);
    loop {
        let msg = PublishMessage::build()
            .payload(m.body.clone())
            .message_id(m.id.as_str());
        let sent = bus.jetstream().send_publish(subject.clone(), msg).await;
        let acked = match sent {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(ack) => return Ok(ack.duplicate),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("publish {} failed for 180 s: {e}", m.id).into());
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}
