//! The worker: consumer → store → publisher, the outbox relay, the timer sweep, the periodic
//! purge, and an explicit shutdown.
//!
//! For each pulled batch: decode (poison goes to the dead-letter stream, then is
//! terminated), record the valid events in one transaction, publish the triggers it decided
//! (pipelined PubAcks), mark them sent, then ack the inputs. A transient failure naks with an
//! exponential, jittered delay; after `consumer.max_deliver` deliveries the input is
//! dead-lettered with the last error. A batch that fails for a non-transient reason is split
//! in halves so one bad event cannot stall the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::bus::{Bus, BusError, DeadLetter};
use crate::config::{Config, ConfigError};
use crate::engine::{Clock, Engine};
use crate::event::{Event, decode};
use crate::http::{self, Readiness};
use crate::store::{self, EventOutcome, Store, StoreError, StoreOptions};
use crate::trigger::Trigger;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("http listener on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Options of `runwatch run` that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Skip migrations (the database role then needs no DDL rights).
    pub no_migrate: bool,
    /// Fault injection for tests: exit the process right after the decision's transaction
    /// committed, before publishing (env `RUNWATCH_CRASH_AFTER_COMMIT=1`).
    pub crash_after_commit: bool,
}

/// The event clock: the largest `run.updated_at` this process has applied (microseconds).
#[derive(Debug)]
struct EventClock(AtomicI64);

impl EventClock {
    fn get(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0.load(Ordering::Relaxed)).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn advance(&self, t: DateTime<Utc>) {
        self.0.fetch_max(t.timestamp_micros(), Ordering::Relaxed);
    }
}

/// A running worker's shared parts.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    bus: Bus,
    clock: EventClock,
    options: RunOptions,
    /// The batch whose triggers are being published and inputs acked.
    finishing: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Sets up the database (migrations unless `no_migrate`), the streams and the consumer.
pub async fn prepare(config: &Config, no_migrate: bool) -> Result<(Store, Bus), WorkerError> {
    let engine = Arc::new(Engine::new(config.rule_set()?, config.limits));
    if !no_migrate {
        if config.database.create_if_missing {
            store::create_database_if_missing(&config.database.url).await?;
        }
        let pool = store::connect(&config.database).await?;
        store::migrate(&pool).await?;
        pool.close().await;
    }
    let pool = store::connect(&config.database).await?;
    let store = Store::new(pool, engine, StoreOptions::from_config(config));
    let bus = Bus::connect(config).await?;
    bus.ensure_streams().await?;
    bus.ensure_consumer().await?;
    Ok((store, bus))
}

/// Runs the worker until `shutdown` is cancelled, then shuts down within
/// `shutdown.timeout`. `metrics` is served on `/metrics` when given.
pub async fn run(
    config: Config,
    options: RunOptions,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // A signal while still connecting (a service down at start-up) stops at once.
    let (store, bus) = tokio::select! {
        prepared = prepare(&config, options.no_migrate) => prepared?,
        _ = shutdown.cancelled() => {
            info!("shutdown requested before the worker was ready");
            return Ok(());
        }
    };
    crate::telemetry::register_worker_metrics();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let http_stop = CancellationToken::new();
    let ready = Readiness {
        store: store.clone(),
        nats: bus.client().clone(),
        shutting_down: shutting_down.clone(),
    };
    let addr = config.http.listen;
    let (bound, http_task) = http::serve(addr, ready, metrics, http_stop.clone())
        .await
        .map_err(|source| WorkerError::Http { addr, source })?;
    info!(http = %bound, events = %config.streams.events, consumer = %config.consumer.durable, "runwatch worker started");

    let worker = Worker {
        inner: Arc::new(Inner {
            config,
            store,
            bus,
            clock: EventClock(AtomicI64::new(DateTime::<Utc>::MIN_UTC.timestamp_micros())),
            options,
            finishing: tokio::sync::Mutex::new(None),
        }),
    };
    let consume = tokio::spawn(worker.clone().consume_loop(shutdown.clone()));
    let relay = tokio::spawn(worker.clone().relay_loop(shutdown.clone()));
    let timers = tokio::spawn(worker.clone().timer_loop(shutdown.clone()));
    let purge = tokio::spawn(worker.clone().purge_loop(shutdown.clone()));

    shutdown.cancelled().await;
    shutting_down.store(true, Ordering::Relaxed);
    info!("shutting down: no more pulls; finishing in-flight messages");
    let inner = worker.inner.clone();
    let timeout = inner.config.shutdown.timeout;
    let graceful = async move {
        let _ = consume.await;
        let _ = relay.await;
        let _ = timers.await;
        purge.abort();
        // Flush: publish what the outbox holds unclaimed.
        if let Err(e) = worker.relay_once().await {
            warn!(error = %e, "outbox flush at shutdown failed; another replica's relay will publish");
        }
        if let Err(e) = inner.bus.drain().await {
            warn!(error = %e, "draining the NATS connection failed");
        }
        inner.store.pool().close().await;
    };
    if tokio::time::timeout(timeout, graceful).await.is_err() {
        warn!(?timeout, "shutdown timed out; unacked messages will be redelivered");
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    info!("runwatch worker stopped");
    Ok(())
}

impl Worker {
    fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Pulls batches until shutdown; the batch in hand is always finished.
    async fn consume_loop(self, shutdown: CancellationToken) {
        let mut puller = loop {
            match self.inner.bus.puller().await {
                Ok(p) => break p,
                Err(e) => {
                    warn!(error = %e, "cannot create the pull consumer; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        };
        let c = &self.config().consumer;
        let (max, linger) = (c.batch_size, c.linger);
        loop {
            let batch = tokio::select! {
                b = puller.next_batch(max, linger, Duration::from_secs(1)) => b,
                _ = shutdown.cancelled() => break,
            };
            if batch.is_empty() {
                continue;
            }
            metrics::histogram!("runwatch_batch_size").record(batch.len() as f64);
            self.process(batch).await;
            if shutdown.is_cancelled() {
                break;
            }
        }
        self.finish_pending().await;
        // Messages the pull prefetched but nobody decided: hand them back at once rather
        // than after ack_wait, so another replica takes them now.
        let left = puller.take_received();
        if !left.is_empty() {
            info!(count = left.len(), "shutdown: naking prefetched messages");
        }
        for msg in left {
            ack(&msg, AckKind::Nak(None)).await;
        }
    }

    /// Decodes a pulled batch, dead-letters the poison, decides the rest.
    async fn process(&self, batch: Vec<Message>) {
        let limits = self.config().limits;
        let mut valid = Vec::with_capacity(batch.len());
        for msg in batch {
            let (seq, delivered) = msg_info(&msg);
            if delivered > 1 {
                metrics::counter!("runwatch_redeliveries_total").increment(1);
            }
            match decode(&msg.payload, &limits) {
                Ok(event) => valid.push((msg, event)),
                Err(rejection) => {
                    let span = info_span!("poison", seq);
                    self.dead_letter(&msg, rejection.code.as_str(), &rejection.detail)
                        .instrument(span)
                        .await;
                }
            }
        }
        if !valid.is_empty() {
            self.decide(valid).await;
        }
    }

    /// Records a batch of valid events; splits it on a non-transient failure.
    fn decide(&self, batch: Vec<(Message, Event)>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let events: Vec<Event> = batch.iter().map(|(_, e)| e.clone()).collect();
            let clock = Clock {
                event: self.inner.clock.get(),
                wall: Utc::now(),
            };
            let started = Instant::now();
            match self.inner.store.record(&events, clock).await {
                Ok(outcome) => {
                    let recorded = started.elapsed();
                    self.inner.clock.advance(outcome.clock.event);
                    if self.inner.options.crash_after_commit && !outcome.triggers.is_empty() {
                        error!("fault injection: exiting after commit, before publish");
                        std::process::exit(86);
                    }
                    // Publishing, marking sent and acking run while the next batch's
                    // transaction does: transactions stay strictly in stream order, and at
                    // most one batch is being finished at a time.
                    let worker = self.clone();
                    let finish = tokio::spawn(async move {
                        worker.finish(batch, outcome.outcomes, outcome.triggers).await;
                    });
                    let previous = self.inner.finishing.lock().await.replace(finish);
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    debug!(
                        size = events.len(),
                        record_ms = recorded.as_secs_f64() * 1e3,
                        previous_finish_ms = (started.elapsed() - recorded).as_secs_f64() * 1e3,
                        "batch decided"
                    );
                }
                Err(e) if !e.is_transient() && batch.len() > 1 => {
                    warn!(error = %e, size = batch.len(), "batch failed; splitting it");
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    self.decide(first).await;
                    self.decide(second).await;
                }
                Err(e) => {
                    warn!(error = %e, size = batch.len(), "recording failed; will retry");
                    let reason = e.to_string();
                    for (msg, event) in &batch {
                        let (seq, _) = msg_info(msg);
                        let span = info_span!("event", seq, group = %group_label(event));
                        self.retry_later(msg, &reason).instrument(span).await;
                    }
                }
            }
        })
    }

    /// After a batch's commit: publish its triggers (pipelined PubAcks), then ack the inputs
    /// (or nak them when a trigger could not be published: it stays in the outbox), then
    /// dead-letter what the engine rejected.
    async fn finish(&self, batch: Vec<(Message, Event)>, outcomes: Vec<EventOutcome>, triggers: Vec<Trigger>) {
        let published = self.publish(&triggers).await;
        for ((msg, event), result) in batch.into_iter().zip(outcomes) {
            let (seq, _) = msg_info(&msg);
            let span = info_span!("event", seq, group = %group_label(&event));
            match result {
                EventOutcome::Applied if published => {
                    metrics::counter!("runwatch_events_total", "outcome" => "applied").increment(1);
                    record_decision_latency(&msg);
                    ack(&msg, AckKind::Ack).instrument(span).await;
                }
                EventOutcome::Applied => {
                    // A trigger of this batch could not be published: it stays in the
                    // outbox for the relay; redeliver the input meanwhile.
                    self.retry_later(&msg, "trigger publish failed").instrument(span).await;
                }
                EventOutcome::Rejected(r) => {
                    self.dead_letter(&msg, r.code.as_str(), &r.detail).instrument(span).await;
                }
            }
        }
    }

    /// Waits for the batch being finished, if any.
    async fn finish_pending(&self) {
        let pending = self.inner.finishing.lock().await.take();
        if let Some(pending) = pending {
            let _ = pending.await;
        }
    }

    /// Publishes decided triggers and marks them sent. True when all were acked.
    async fn publish(&self, triggers: &[Trigger]) -> bool {
        if triggers.is_empty() {
            return true;
        }
        let started = Instant::now();
        let results = self.inner.bus.publish_triggers(triggers).await;
        metrics::histogram!("runwatch_publish_seconds").record(started.elapsed().as_secs_f64());
        let mut sent = Vec::new();
        let mut all = true;
        for (t, r) in triggers.iter().zip(results) {
            let span = info_span!("trigger", trigger_id = %t.trigger_id, rule = %t.rule_name,
                group = %format!("{}/{}#{}@{}", t.repository.owner, t.repository.name,
                    t.pr_number.map_or_else(|| "-".into(), |p| p.to_string()), t.commit_sha));
            let _g = span.enter();
            match r {
                Ok(()) => {
                    info!(failed = ?t.failed_workflows, "trigger published");
                    metrics::counter!("runwatch_triggers_total", "rule" => t.rule.clone()).increment(1);
                    sent.push(t.trigger_id);
                }
                Err(e) => {
                    all = false;
                    warn!(error = %e, "trigger publish failed; the outbox relay will retry");
                    let _ = self.inner.store.record_publish_error(t.trigger_id, &e.to_string()).await;
                }
            }
        }
        if let Err(e) = self.inner.store.mark_sent(&sent).await {
            // Published but not marked: the relay republishes after the lease, and
            // JetStream's duplicate window drops the copy.
            warn!(error = %e, "marking triggers sent failed");
        }
        all
    }

    /// Naks with backoff, or dead-letters once `max_deliver` deliveries are used up.
    async fn retry_later(&self, msg: &Message, reason: &str) {
        let (_, delivered) = msg_info(msg);
        let c = self.config();
        if delivered >= u64::from(c.consumer.max_deliver) {
            self.dead_letter(msg, "max_deliver", reason).await;
            return;
        }
        let delay = nak_delay(c, delivered);
        metrics::counter!("runwatch_events_total", "outcome" => "retried").increment(1);
        debug!(?delay, delivered, "nak");
        ack(msg, AckKind::Nak(Some(delay))).await;
    }

    /// Publishes the input to the dead-letter stream with its reason, then terminates it.
    /// If the dead letter cannot be published the input is naked, never dropped.
    async fn dead_letter(&self, msg: &Message, reason: &str, detail: &str) {
        let (seq, delivered) = msg_info(msg);
        let letter = DeadLetter {
            reason,
            detail,
            original_subject: msg.subject.as_str(),
            stream_seq: seq,
            deliveries: delivered,
            payload: &msg.payload,
        };
        match self.inner.bus.dead_letter(&letter).await {
            Ok(()) => {
                warn!(reason, detail, seq, "input dead-lettered");
                metrics::counter!("runwatch_dead_letters_total", "reason" => reason.to_string()).increment(1);
                metrics::counter!("runwatch_events_total", "outcome" => "dead_lettered").increment(1);
                ack(msg, AckKind::Term).await;
            }
            Err(e) => {
                warn!(error = %e, seq, "dead-lettering failed; the input will be redelivered");
                ack(msg, AckKind::Nak(Some(nak_delay(self.config(), delivered)))).await;
            }
        }
    }

    /// Publishes unsent triggers whose claim expired (crash recovery, failed publishes).
    async fn relay_once(&self) -> Result<usize, StoreError> {
        let pending = self.inner.store.claim_unsent(self.config().outbox.relay_batch).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let mut triggers = Vec::with_capacity(pending.len());
        for p in &pending {
            match serde_json::from_slice::<Trigger>(&p.payload) {
                Ok(t) => triggers.push(t),
                Err(e) => error!(trigger_id = %p.trigger_id, error = %e, "outbox row is not a trigger"),
            }
        }
        info!(count = triggers.len(), "outbox relay publishing unsent triggers");
        metrics::counter!("runwatch_relay_triggers_total").increment(triggers.len() as u64);
        self.publish(&triggers).await;
        Ok(pending.len())
    }

    async fn relay_loop(self, shutdown: CancellationToken) {
        let every = self.config().outbox.relay_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.relay_once().await {
                Ok(_) => {}
                Err(e) => warn!(error = %e, "outbox relay failed; will retry"),
            }
            if let Ok(n) = self.inner.store.unsent_count().await {
                metrics::gauge!("runwatch_outbox_backlog").set(n as f64);
            }
            if let Ok(n) = self.inner.bus.consumer_pending().await {
                metrics::gauge!("runwatch_consumer_pending").set(n as f64);
            }
        }
    }

    async fn timer_loop(self, shutdown: CancellationToken) {
        let t = &self.config().timers;
        let (every, batch) = (t.interval, t.batch);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            loop {
                let started = Instant::now();
                let fired = self.inner.store.fire_due_timers(self.inner.clock.get(), batch).await;
                metrics::histogram!("runwatch_transaction_seconds", "op" => "timers")
                    .record(started.elapsed().as_secs_f64());
                match fired {
                    Ok(triggers) => {
                        self.publish(&triggers).await;
                        // A full page means more may be due.
                        if (triggers.len() as i64) < batch {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "timer sweep failed; will retry");
                        break;
                    }
                }
            }
        }
    }

    async fn purge_loop(self, shutdown: CancellationToken) {
        let p = &self.config().purge;
        if p.interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(p.interval) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.inner.store.purge(p.older_than, p.batch).await {
                Ok(n) => info!(groups = n, "purge"),
                Err(e) => warn!(error = %e, "purge failed; will retry"),
            }
        }
    }
}

fn msg_info(msg: &Message) -> (u64, u64) {
    msg.info()
        .map(|i| (i.stream_sequence, i.delivered.max(1) as u64))
        .unwrap_or((0, 1))
}

/// Records `runwatch_decision_seconds`: from the message's arrival in JetStream (the
/// server's clock) to now, when it is acked after its decision. Clock skew below zero counts
/// as zero.
fn record_decision_latency(msg: &Message) {
    if let Ok(info) = msg.info() {
        let arrived = std::time::SystemTime::from(info.published);
        let waited = std::time::SystemTime::now().duration_since(arrived).unwrap_or_default();
        metrics::histogram!("runwatch_decision_seconds").record(waited.as_secs_f64());
    }
}

fn group_label(e: &Event) -> String {
    format!(
        "{}/{}#{}@{}",
        e.repository.owner,
        e.repository.name,
        e.pr_number.map_or_else(|| "-".into(), |p| p.to_string()),
        e.commit_sha
    )
}

/// The nak delay before delivery `delivered + 1`: exponential with jitter (backon).
fn nak_delay(config: &Config, delivered: u64) -> Duration {
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
