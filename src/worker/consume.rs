//! The consume task: pull a batch, decode it (poison is dead-lettered), decide the valid
//! events in one transaction per lane (by repository, `consumer.lanes` side by side:
//! [`super::lanes`]), then publish the triggers decided and acknowledge the inputs while the
//! next batch's transactions run.
//!
//! A batch whose transaction fails for a reason of the database's (down, blocked, refusing:
//! every [`crate::store::ErrorKind`] but `Input`) is held and its transaction run again
//! with backoff, spending none of its deliveries ([`super::hold`]). A batch that fails for
//! its inputs' own sake is split in halves, so one bad event cannot hold back the others;
//! an event that fails alone is nak'd with backoff and dead-lettered after
//! `consumer.max_deliver` deliveries. Once a decision is committed its inputs are acked,
//! whether or not its triggers could be published: an unsent trigger is the relay's.
//!
//! The triggers a finished batch published are marked sent by the next batch's record
//! transaction (no commit of their own); when no batch follows within [`MARK_WITHIN`], or at
//! shutdown, they are marked in a statement of their own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::Message;
use chrono::Utc;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::context::Ctx;
#[cfg(feature = "fault-injection")]
use super::context::Fault;
use super::disposition::{self, msg_info};
use super::finish::{DecisionSpan, finish, group_label};
use super::hold::Hold;
use super::lanes;
use crate::bus::Puller;
use crate::engine::Clock;
use crate::pull_request::{Input, decode_input};
use crate::service::TaskResult;
use crate::store::Op;
use crate::store::{EventOutcome, Store};
use crate::trace_context::TraceContext;
use crate::trigger::Trigger;
use uuid::Uuid;

/// How long published triggers wait for the next record transaction to mark them sent
/// before they are marked on their own (their outbox claim lasts `outbox.lease`).
const MARK_WITHIN: Duration = Duration::from_millis(20);

/// Pulls batches until `stop`; the batch in hand is always finished.
pub async fn run(ctx: Ctx, stop: CancellationToken) -> TaskResult {
    let mut puller = loop {
        match ctx.bus.puller().await {
            Ok(p) => break p,
            Err(e) => {
                warn!(error = %e, "cannot create the pull consumer; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
    };
    let c = &ctx.config.consumer;
    let (max, linger) = (c.batch_size, c.linger);
    let mut pipeline = Pipeline::default();
    loop {
        let idle = if pipeline.marks_due() {
            MARK_WITHIN
        } else {
            Duration::from_secs(1)
        };
        let batch = tokio::select! {
            b = puller.next_batch(max, linger, idle) => b,
            _ = stop.cancelled() => break,
        };
        if batch.is_empty() {
            pipeline.mark_now(&ctx.store).await;
            continue;
        }
        metrics::histogram!("runwatch_batch_size").record(batch.len() as f64);
        process(&ctx, &mut pipeline, &puller, &stop, batch).await;
        #[cfg(feature = "fault-injection")]
        {
            match ctx.options.fault {
                Some(Fault::ConsumeExit) => {
                    return Err("fault injection: the consume task gave up".into());
                }
                Some(Fault::ConsumePanic) => panic!("fault injection: the consume task panicked"),
                _ => {}
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    pipeline.wait().await;
    pipeline.mark_now(&ctx.store).await;
    // Messages the pull prefetched but nobody decided: hand them back at once rather than
    // after ack_wait, so another replica takes them now.
    let left = puller.take_received();
    if !left.is_empty() {
        info!(
            count = left.len(),
            "shutdown: handing back prefetched messages"
        );
    }
    for msg in left {
        disposition::hand_back(&msg).await;
    }
    Ok(())
}

/// The batch being finished (published and acked) while the next one is decided: decisions
/// stay strictly in stream order, and at most one batch is being finished at a time.
#[derive(Default)]
struct Pipeline {
    finishing: Option<tokio::task::JoinHandle<()>>,
    /// Triggers whose PubAck arrived, not yet marked sent.
    sent: Arc<Mutex<Vec<Uuid>>>,
}

impl Pipeline {
    fn take_sent(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks that could not be written: the next transaction tries again.
    fn give_back(&self, ids: Vec<Uuid>) {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
    }

    /// Whether triggers are waiting to be marked, or a batch being finished may add some.
    fn marks_due(&self) -> bool {
        self.finishing.as_ref().is_some_and(|h| !h.is_finished())
            || !self
                .sent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Marks the waiting triggers sent in a statement of their own.
    async fn mark_now(&self, store: &Store) {
        let ids = self.take_sent();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = store.mark_sent(&ids).await {
            warn!(error = %e, "marking triggers sent failed; will try again");
            self.give_back(ids);
        }
    }

    async fn hand_over(&mut self, next: tokio::task::JoinHandle<()>) {
        let previous = self.finishing.replace(next);
        Self::join(previous).await;
    }

    async fn wait(&mut self) {
        let previous = self.finishing.take();
        Self::join(previous).await;
    }

    async fn join(previous: Option<tokio::task::JoinHandle<()>>) {
        if let Some(Err(e)) = match previous {
            Some(p) => Some(p.await),
            None => None,
        } {
            error!(error = %e, "finishing a batch failed");
        }
    }
}

/// Decodes a pulled batch, dead-letters the poison, decides the rest.
async fn process(
    ctx: &Ctx,
    pipeline: &mut Pipeline,
    puller: &Puller,
    stop: &CancellationToken,
    batch: Vec<Message>,
) {
    let limits = ctx.config.limits;
    let mut valid = Vec::with_capacity(batch.len());
    for msg in batch {
        let (seq, delivered) = msg_info(&msg);
        if delivered > 1 {
            metrics::counter!("runwatch_redeliveries_total").increment(1);
        }
        match decode_input(&msg.payload, &limits) {
            Ok(input) => valid.push((msg, input)),
            Err(rejection) => {
                disposition::dead_letter(
                    &ctx.bus,
                    &ctx.config,
                    &msg,
                    rejection.code.as_str(),
                    &rejection.detail,
                )
                .instrument(info_span!("poison", seq))
                .await;
            }
        }
    }
    if !valid.is_empty() {
        decide(ctx, pipeline, puller, stop, valid).await;
    }
}

/// A part of a batch whose decision is committed.
struct Decided {
    batch: Vec<(Message, Input)>,
    outcomes: Vec<EventOutcome>,
    triggers: Vec<Trigger>,
    /// Per input, its decision span (`runwatch.decide`).
    spans: Vec<DecisionSpan>,
}

/// Records a batch of valid events in its lanes ([`lanes`]: by repository, side by side),
/// then hands what they committed to be finished (published and acked) while the next
/// batch is decided.
async fn decide(
    ctx: &Ctx,
    pipeline: &mut Pipeline,
    puller: &Puller,
    stop: &CancellationToken,
    batch: Vec<(Message, Input)>,
) {
    let started = Instant::now();
    let size = batch.len();
    let parts = lanes::split(batch, ctx.config.consumer.lanes, |(_, input)| input);
    let lanes_used = parts.len();
    let shared: &Pipeline = pipeline;
    let decided: Vec<Decided> = futures::future::join_all(
        parts
            .into_iter()
            .map(|lane| record(ctx, shared, puller, stop, lane)),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    if decided.is_empty() {
        return;
    }
    let recorded = started.elapsed();
    let (mut batch, mut outcomes, mut triggers, mut spans) = (
        Vec::with_capacity(size),
        Vec::with_capacity(size),
        Vec::new(),
        Vec::with_capacity(size),
    );
    for d in decided {
        batch.extend(d.batch);
        outcomes.extend(d.outcomes);
        triggers.extend(d.triggers);
        spans.extend(d.spans);
    }
    #[cfg(feature = "fault-injection")]
    if ctx.options.fault == Some(Fault::CrashAfterCommit) && !triggers.is_empty() {
        error!("fault injection: exiting after commit, before publish");
        std::process::exit(86);
    }
    let finisher = ctx.clone();
    let marks = pipeline.sent.clone();
    let finish = tokio::spawn(async move {
        finish(&finisher, batch, outcomes, triggers, spans, &marks).await;
    });
    pipeline.hand_over(finish).await;
    debug!(
        size,
        lanes = lanes_used,
        record_ms = recorded.as_secs_f64() * 1e3,
        previous_finish_ms = (started.elapsed() - recorded).as_secs_f64() * 1e3,
        "batch decided"
    );
}

/// Records one lane of a batch: holds it while the database refuses it, splits it when it
/// fails for its inputs' own sake. Returns what was committed, in the lane's order.
fn record<'a>(
    ctx: &'a Ctx,
    pipeline: &'a Pipeline,
    puller: &'a Puller,
    stop: &'a CancellationToken,
    batch: Vec<(Message, Input)>,
) -> BoxFuture<'a, Vec<Decided>> {
    Box::pin(async move {
        let events: Vec<Input> = batch.iter().map(|(_, e)| e.clone()).collect();
        let start = SystemTime::now();
        let spans: Vec<DecisionSpan> = batch
            .iter()
            .map(|(m, _)| DecisionSpan::of(m, start))
            .collect();
        let traces: Vec<Option<TraceContext>> =
            spans.iter().map(|s| Some(s.context.clone())).collect();
        let mut hold = Hold::new(&ctx.config);
        let mut in_hand: Option<Vec<Message>> = None;
        let result = loop {
            let clock = Clock {
                event: ctx.clock.get(),
                wall: Utc::now(),
            };
            let sent = pipeline.take_sent();
            let recorded = ctx
                .store
                .record_and_mark(&events, clock, &sent, &traces)
                .await;
            match recorded {
                Err(e) if e.is_transient() => {
                    pipeline.give_back(sent);
                    ctx.store.health().failed(Op::Record, &e);
                    debug!(error = %e, size = batch.len(), "recording failed; holding the batch");
                    let msgs = in_hand.get_or_insert_with(|| Hold::in_hand(&batch, puller));
                    let waited = hold.wait(msgs, stop).await;
                    if !waited {
                        info!(
                            size = batch.len(),
                            "shutdown while the database refuses: handing the held batch back"
                        );
                        for (msg, _) in &batch {
                            disposition::hand_back(msg).await;
                        }
                        return Vec::new();
                    }
                }
                result => {
                    // Committed, or refused for the inputs' own sake: the database answers.
                    ctx.store.health().succeeded(Op::Record);
                    if let Err(e) = &result {
                        pipeline.give_back(sent);
                        crate::store::count_database_error(Op::Record, e.kind()).increment(1);
                    }
                    break result;
                }
            }
        };
        match result {
            Ok(outcome) => {
                ctx.clock.advance(outcome.clock.event);
                vec![Decided {
                    batch,
                    outcomes: outcome.outcomes,
                    triggers: outcome.triggers,
                    spans,
                }]
            }
            Err(e) if batch.len() > 1 => {
                warn!(error = %e, size = batch.len(), "batch refused for its inputs' sake; splitting it");
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                let mut decided = record(ctx, pipeline, puller, stop, first).await;
                decided.extend(record(ctx, pipeline, puller, stop, second).await);
                decided
            }
            Err(e) => {
                let sqlstate = e.sqlstate().unwrap_or_default();
                warn!(error = %e, sqlstate, "event refused for its own sake; will retry");
                let reason = if sqlstate.is_empty() {
                    e.to_string()
                } else {
                    format!("SQLSTATE {sqlstate}: {e}")
                };
                for (msg, event) in &batch {
                    let (seq, _) = msg_info(msg);
                    let span = info_span!("event", seq, group = %group_label(event));
                    disposition::retry_later(&ctx.bus, &ctx.config, msg, &reason)
                        .instrument(span)
                        .await;
                }
                Vec::new()
            }
        }
    })
}
