//! Holding a batch while the database refuses it.
//!
//! A batch whose transaction fails for a reason that is not the inputs' own (the database
//! is down, blocked by a lock, out of time, refusing a privilege, read-only...) is not
//! nak'd: JetStream would count every redelivery toward `consumer.max_deliver` and good
//! events would end as dead letters. The consume task keeps the batch instead and runs its
//! transaction again after an exponential, jittered delay (`retry.*`, backon), pulling
//! nothing new meanwhile. Its messages, and those the puller already buffered, are kept in
//! progress (`AckKind::Progress` every third of `consumer.ack_wait`) so JetStream does not
//! redeliver them. The store's [`crate::store::Health`] reports the episode (log, metric,
//! `/readyz`). At shutdown a held batch is handed back (nak without delay).

use std::time::Duration;

use async_nats::jetstream::Message;
use backon::BackoffBuilder;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::disposition;
use crate::bus::Puller;
use crate::config::Config;
use crate::pull_request::Input;

/// The waits of one held batch.
pub(super) struct Hold {
    delays: backon::ExponentialBackoff,
    max_delay: Duration,
    progress_every: Duration,
    last_progress: Instant,
}

impl Hold {
    pub(super) fn new(config: &Config) -> Hold {
        let r = &config.retry;
        let delays = crate::bus::backoff::backoff(r).build();
        Hold {
            delays,
            max_delay: r.max_delay,
            progress_every: (config.consumer.ack_wait / 3).max(Duration::from_millis(100)),
            last_progress: Instant::now(),
        }
    }

    /// The messages to keep in progress: the held batch and what the puller buffered
    /// (nothing is pulled while a batch is held, so that stays the same).
    pub(super) fn in_hand(held: &[(Message, Input)], puller: &Puller) -> Vec<Message> {
        held.iter()
            .map(|(m, _)| m.clone())
            .chain(puller.buffered().iter().cloned())
            .collect()
    }

    /// Waits for the next attempt, keeping `msgs` (see [`Hold::in_hand`]) in progress.
    /// False when `stop` was cancelled meanwhile (the caller hands the batch back).
    pub(super) async fn wait(&mut self, msgs: &[Message], stop: &CancellationToken) -> bool {
        let delay = self.delays.next().unwrap_or(self.max_delay);
        let until = Instant::now() + delay;
        loop {
            if self.last_progress.elapsed() >= self.progress_every {
                self.last_progress = Instant::now();
                for msg in msgs {
                    disposition::in_progress(msg).await;
                }
            }
            if Instant::now() >= until {
                return !stop.is_cancelled();
            }
            let next = until.min(self.last_progress + self.progress_every);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.cancelled() => return false,
            }
        }
    }
}
