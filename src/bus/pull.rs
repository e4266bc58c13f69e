//! The pull loop over the durable consumer, which heals itself.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use backon::BackoffBuilder;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::{Bus, BusError, StreamKind};

/// Reads batches from the durable consumer (see [`Bus::puller`]).
///
/// Internally one long-lived pull subscription asks for `consumer.batch_size` messages at a
/// time (re-asking when half are used) with idle heartbeats every `consumer.heartbeat`, so
/// up to about 1.5 batches may be buffered in the client; a buffered message that is never
/// handed out (shutdown) is redelivered by JetStream after `consumer.ack_wait`.
///
/// A stalled pull (two missed heartbeats, a server restart, a lost connection, the consumer
/// or the stream deleted) is torn down and rebuilt without a process restart: a warning is
/// logged, the puller waits with exponential, jittered backoff (`retry.*`), re-ensures the
/// events stream and the durable consumer, and goes on. Such conditions are never errors
/// for the caller: [`Puller::next_batch`] just returns an empty batch when its idle time
/// passes.
pub struct Puller {
    bus: Bus,
    batch: usize,
    heartbeat: Duration,
    stream: Option<pull::Stream>,
    /// Received, not yet handed out.
    pending: Vec<jetstream::Message>,
    /// When the current pull subscription was opened.
    opened_at: Option<Instant>,
    /// Backoff delays while recovering; `None` when healthy.
    delays: Option<backon::ExponentialBackoff>,
    /// Not before this instant is the next recovery attempt made.
    retry_at: Option<Instant>,
    /// Consecutive failed recoveries (for logs).
    failures: u32,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("consumer", &self.bus.durable_name())
            .field("batch", &self.batch)
            .field("open", &self.stream.is_some())
            .field("failures", &self.failures)
            .finish()
    }
}

impl Bus {
    /// A puller for the durable consumer. The consumer must exist (see
    /// [`Bus::ensure_consumer`]); an error here (it does not, NATS is unreachable) is for
    /// start-up to report. After that, the puller recovers from trouble by itself.
    pub async fn puller(&self) -> Result<Puller, BusError> {
        let mut puller = Puller {
            bus: self.clone(),
            batch: self.consumer_config().batch_size.max(1),
            heartbeat: self.consumer_config().heartbeat,
            stream: None,
            pending: Vec::new(),
            opened_at: None,
            delays: None,
            retry_at: None,
            failures: 0,
        };
        let consumer = self.consumer_handle().await?;
        puller.stream = Some(puller.subscribe(&consumer).await?);
        puller.opened_at = Some(Instant::now());
        Ok(puller)
    }
}

impl Puller {
    /// Waits for up to `max` messages. Returns as soon as at least one message is there and
    /// either `max` are collected or `linger` has passed since the first one; returns an
    /// empty `Vec` once `idle` has passed without any (so the caller can check for
    /// shutdown). When messages were already waiting at the call (the caller is behind),
    /// it does not linger: it returns what is buffered, up to `max`, at once, since waiting
    /// would only add to their latency. Never fails: a stalled pull is rebuilt in the
    /// background of these calls.
    ///
    /// The caller acknowledges each message itself (`ack`, `ack_with(Nak(..))`,
    /// `ack_with(Term)`), and reads `info()` for the delivery count and stream sequence.
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        idle: Duration,
    ) -> Vec<jetstream::Message> {
        let max = max.max(1);
        let idle_deadline = Instant::now() + idle;
        // Messages are collected in `self.pending`, so a call cancelled by `select!` loses
        // none: the next call returns them.
        let behind = !self.pending.is_empty() || self.take_ready();
        let mut linger_deadline = behind.then(Instant::now);
        while self.pending.len() < max {
            let Some(stream) = self.stream.as_mut() else {
                if !self.pending.is_empty() {
                    break;
                }
                // A failed attempt schedules the next one; `recover` sleeps until then or
                // until the idle deadline, whichever is first.
                if !self.recover(idle_deadline).await && Instant::now() >= idle_deadline {
                    break;
                }
                continue;
            };
            let deadline = linger_deadline.unwrap_or(idle_deadline);
            // `timeout_at` polls the stream before the deadline, so messages already
            // buffered are taken even when the deadline has passed.
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_elapsed) => break,
                Ok(item) => {
                    if self.accept(item) {
                        linger_deadline.get_or_insert_with(|| Instant::now() + linger);
                    } else if !self.pending.is_empty() {
                        break;
                    }
                }
            }
        }
        let take = self.pending.len().min(max);
        self.pending.drain(..take).collect()
    }

    /// Moves a message that the pull subscription already holds into `pending` without
    /// waiting; true when there was one.
    fn take_ready(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        match stream.next().now_or_never() {
            Some(item) => self.accept(item),
            None => false,
        }
    }

    /// Takes one item of the pull subscription: a message goes to `pending` (true); an
    /// error or the end of the subscription tears the pull down for a rebuild (false).
    fn accept<E: std::fmt::Display>(
        &mut self,
        item: Option<Result<jetstream::Message, E>>,
    ) -> bool {
        match item {
            Some(Ok(message)) => {
                if self.delays.take().is_some() {
                    self.failures = 0;
                }
                self.pending.push(message);
                true
            }
            Some(Err(e)) => {
                self.stalled(&format!("pull failed: {e}"));
                false
            }
            None => {
                self.stalled("pull subscription ended");
                false
            }
        }
    }

    /// Messages already received but not yet handed out by [`Puller::next_batch`] (left by
    /// a cancelled call). At shutdown, nak them so they are redelivered at once instead of
    /// after `consumer.ack_wait`. Messages still buffered inside the pull subscription are
    /// not included.
    pub fn take_received(&mut self) -> Vec<jetstream::Message> {
        std::mem::take(&mut self.pending)
    }

    /// Messages already received but not yet handed out (see [`Puller::take_received`]),
    /// for the caller to keep in progress while it holds back (`AckKind::Progress`).
    pub fn buffered(&self) -> &[jetstream::Message] {
        &self.pending
    }

    /// Whether a pull subscription is currently open (false while recovering).
    pub fn is_pulling(&self) -> bool {
        self.stream.is_some()
    }

    /// Tears the pull subscription down and schedules its rebuild.
    fn stalled(&mut self, reason: &str) {
        self.stream = None;
        // A subscription that worked for a while starts a fresh backoff sequence.
        let healthy_for = self.opened_at.take().map(|t| t.elapsed());
        if healthy_for.is_some_and(|d| d > self.heartbeat.saturating_mul(4)) {
            self.delays = None;
            self.failures = 0;
        }
        let delay = self.next_delay();
        tracing::warn!(
            consumer = %self.bus.durable_name(),
            reason,
            retry_in = ?delay,
            "JetStream pull stalled; recreating it"
        );
    }

    fn next_delay(&mut self) -> Duration {
        let retry = self.bus.retry_config();
        let delays = self
            .delays
            .get_or_insert_with(|| super::backoff::backoff(retry).build());
        let delay = delays.next().unwrap_or(retry.max_delay);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// One recovery attempt, once its backoff time has come, waiting no longer than
    /// `deadline` for that time. Returns whether a pull subscription is open again.
    async fn recover(&mut self, deadline: Instant) -> bool {
        if let Some(at) = self.retry_at {
            if at > deadline {
                tokio::time::sleep_until(deadline).await;
                return false;
            }
            tokio::time::sleep_until(at).await;
        }
        let result = if self.bus.is_connected() {
            let bound = self.bus.request_timeout().saturating_mul(3);
            match tokio::time::timeout(bound, self.reopen()).await {
                Ok(result) => result,
                Err(_) => Err(format!("re-creating the pull took longer than {bound:?}")),
            }
        } else {
            Err("not connected to NATS".to_string())
        };
        match result {
            Ok(stream) => {
                tracing::info!(
                    consumer = %self.bus.durable_name(),
                    attempts = self.failures + 1,
                    "JetStream pull re-established"
                );
                self.stream = Some(stream);
                self.opened_at = Some(Instant::now());
                self.retry_at = None;
                true
            }
            Err(error) => {
                self.failures += 1;
                let delay = self.next_delay();
                tracing::warn!(
                    consumer = %self.bus.durable_name(),
                    failures = self.failures,
                    retry_in = ?delay,
                    %error,
                    "cannot re-establish the JetStream pull yet"
                );
                false
            }
        }
    }

    /// Re-ensures the events stream and the durable consumer, and subscribes again.
    async fn reopen(&self) -> Result<pull::Stream, String> {
        self.bus
            .ensure_stream(StreamKind::Events)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = self
            .bus
            .consumer_handle()
            .await
            .map_err(|e| e.to_string())?;
        if consumer.cached_info().delivered.consumer_sequence == 0
            && consumer.cached_info().num_pending > 0
        {
            tracing::warn!(
                consumer = %self.bus.durable_name(),
                pending = consumer.cached_info().num_pending,
                "durable consumer starts from the beginning of the stream (was it deleted?)"
            );
        }
        self.subscribe(&consumer).await.map_err(|e| e.to_string())
    }

    async fn subscribe(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
    ) -> Result<pull::Stream, BusError> {
        consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .heartbeat(self.heartbeat)
            .messages()
            .await
            .map_err(|e| BusError::Read {
                what: format!(
                    "consumer `{}` on stream `{}`",
                    self.bus.durable_name(),
                    self.bus.stream_name(StreamKind::Events)
                ),
                source: Box::new(e),
            })
    }
}
