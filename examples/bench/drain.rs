//! The catch-up figures: a trace published in full before anything consumes it (a replay,
//! or the backlog after an outage), then drained twice from the same stream: first by a
//! raw JetStream reference (a durable pull consumer of its own that only acks), then by a
//! runwatch worker.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;

use crate::names::Names;
use crate::phase::{Bench, Phase};
use crate::trace::Trace;
use crate::workers::{Workers, command, migrate};

/// What the drain phase measured.
#[derive(Debug, Default)]
pub struct DrainResult {
    pub raw_per_s: f64,
    pub drain_per_s: f64,
    pub triggers: usize,
    pub expected: usize,
}

impl Bench {
    /// Publishes `trace` into a fresh events stream, measures the raw reference on it, then
    /// a worker started on it; removes everything afterwards.
    pub async fn run_drain(&self, trace: &Trace) -> Result<DrainResult> {
        let names = Names::new();
        let out = self.run_drain_in(trace, &names).await;
        names.remove(&self.js).await;
        out
    }

    async fn run_drain_in(&self, trace: &Trace, names: &Names) -> Result<DrainResult> {
        let phase = Phase::new("drain", self.opts.batch_size);
        let env = self.worker_env(names, &phase);
        migrate(&self.bin, &env).await?;
        // Creates the phase's streams without starting a worker.
        command(&self.bin, &["publish", "/dev/null"], &env).await?;
        let last_of_firing = trace.last_of_firing();
        self.publish(&phase, trace, names, &last_of_firing).await?;
        let n = trace.messages.len();

        let defaults = runwatch::config::Config::load_without_nats_secrets(None)
            .context("runwatch's default configuration")?;
        let batch = self.opts.batch_size.unwrap_or(defaults.consumer.batch_size);
        let raw_per_s = n as f64
            / self
                .raw_reference(names, n, batch, defaults.consumer.max_ack_pending)
                .await?;

        let (received, collector) = self.collect_triggers(names).await?;
        let t0 = Instant::now();
        let workers = Workers::start(&self.bin, &env, 1, &names.db, None)?;
        // The worker creates its durable consumer at start-up; counted in the time.
        self.wait_consumer(names, &workers).await?;
        let consumer = (names.events.as_str(), names.durable.as_str());
        let seconds = self
            .wait_done("drain", consumer, n, t0, workers.log())
            .await;
        collector.abort();
        workers.stop().await;
        let seconds = seconds?;
        let triggers = received.lock().map(|m| m.len()).unwrap_or(0);
        Ok(DrainResult {
            raw_per_s,
            drain_per_s: n as f64 / seconds,
            triggers,
            expected: last_of_firing.len(),
        })
    }

    /// A durable pull consumer with runwatch's settings (explicit acks, the same batch and
    /// `max_ack_pending`) that acks every message and does nothing else; the seconds from
    /// its creation until the server has every ack.
    async fn raw_reference(
        &self,
        names: &Names,
        n: usize,
        batch: usize,
        max_ack_pending: i64,
    ) -> Result<f64> {
        let durable = format!("{}_raw", names.durable);
        let stream = self.js.get_stream(&names.events).await?;
        let t0 = Instant::now();
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                max_ack_pending,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await?;
        let mut seen = 0usize;
        while seen < n {
            match messages.next().await {
                Some(Ok(m)) => {
                    seen += 1;
                    if let Err(e) = m.ack().await {
                        bail!("raw reference: ack failed: {e}");
                    }
                }
                Some(Err(e)) => bail!("raw reference: pull failed: {e}"),
                None => bail!("raw reference: the pull ended after {seen} of {n} messages"),
            }
        }
        let seconds = self
            .wait_done("raw reference", (&names.events, &durable), n, t0, None)
            .await?;
        drop(messages);
        let _ = stream.delete_consumer(&durable).await;
        Ok(seconds)
    }
}
