//! `runwatch deliver`: triggers to HTTP endpoints.
//!
//! Each target has its own durable pull consumer on the triggers stream
//! (`runwatch-deliver-<name>`), so a slow or failing endpoint never holds back another,
//! and its own task, which keeps up to `concurrency` requests in flight. For each trigger:
//!
//! - a trigger the target's filter excludes is acked without a request (counted);
//! - 2xx → ack; 408, 429, 5xx, a timeout or a connection error → nak with a delay
//!   (`Retry-After` up to `deliver.retry_after_max`, else exponential with jitter from
//!   `deliver.min_delay` to `deliver.max_delay`), which JetStream keeps across restarts;
//! - another status, `max_attempts` used up, a template whose output is not JSON, or a
//!   payload that is not a trigger → a dead letter (target, status, response excerpt,
//!   trigger id), then term. If the dead letter cannot be published the trigger is naked,
//!   never dropped.
//!
//! The attempt number is JetStream's delivery count of the trigger to that consumer. The
//! consumer's `ack_wait` is the target's `timeout` plus [`ACK_MARGIN`], so a request in
//! flight is never redelivered meanwhile. Tasks are supervised as the worker's are: the
//! first to end by itself turns readiness off and the process exits 2. On SIGTERM the
//! tasks stop pulling, finish their requests (within `shutdown.timeout`) and hand back
//! what they had pulled but not started.

pub mod config;
pub mod request;
pub mod signing;
pub mod target;
pub mod template;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{AckKind, Message};
use backon::BackoffBuilder;
use bytes::Bytes;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

pub use config::{DeliverConfig, StartFrom, TargetConfig};
pub use request::Outcome;
pub use target::Target;

use crate::bus::backoff::{backoff, exponential, nth_delay};
use crate::bus::disposition::{Letter, ack, dead_letter_else_nak, msg_info};
use crate::bus::{Bus, BusError, DeadLetter, DeliveryDeadLetter, REDRIVE_TOKEN};
use crate::config::{Config, ConfigError};
use crate::service::{Endpoints, ServiceError, Supervisor, TaskResult};
use crate::startup;
use crate::trace_context::TraceContext;
use crate::trace_export;
use crate::trigger::Trigger;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// Added to a target's `timeout` to make its consumer's `ack_wait`.
pub const ACK_MARGIN: Duration = Duration::from_secs(5);

/// How long a pull request waits for triggers before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How long the pull in hand is read for messages to hand back at shutdown.
const HAND_BACK_WINDOW: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Start-up, the HTTP listener, a task that ended: as for the worker.
    #[error(transparent)]
    Process(#[from] ServiceError),
    #[error("no delivery target: configure [[deliver.targets]] or give --url")]
    NoTargets,
}

/// The retry delays of `[deliver]`.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub min: Duration,
    pub max: Duration,
    pub retry_after_max: Duration,
}

impl Delays {
    pub fn from_config(c: &DeliverConfig) -> Delays {
        Delays {
            min: c.min_delay,
            max: c.max_delay,
            retry_after_max: c.retry_after_max,
        }
    }

    /// The nak delay after failed attempt `attempt` (1-based): the receiver's
    /// `Retry-After` capped at `retry_after_max`, else exponential with jitter (backon).
    pub fn after(&self, attempt: u64, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.retry_after_max);
        }
        nth_delay(exponential(self.min, self.max, 2.0), attempt, self.max)
    }
}

/// What a target's task and its deliveries share.
struct TargetCtx {
    bus: Bus,
    target: Target,
    client: reqwest::Client,
    delays: Delays,
    triggers_prefix: String,
}

/// Runs every target until `shutdown` is cancelled or a task ends by itself.
pub async fn run(
    config: Config,
    targets: Vec<Target>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), DeliverError> {
    if targets.is_empty() {
        return Err(DeliverError::NoTargets);
    }
    let mut clients = Vec::with_capacity(targets.len());
    for t in &targets {
        clients.push(t.client()?);
    }
    let bus = tokio::select! {
        opened = startup::open_bus(&config) => opened.map_err(ServiceError::from)?,
        _ = shutdown.cancelled() => {
            info!("shutdown requested before runwatch deliver was ready");
            return Ok(());
        }
    };
    let mut ctxs = Vec::with_capacity(targets.len());
    for (target, client) in targets.into_iter().zip(clients) {
        ensure_consumer(&bus, &target).await?;
        register_metrics(&target.name);
        ctxs.push(Arc::new(TargetCtx {
            bus: bus.clone(),
            target,
            client,
            delays: Delays::from_config(&config.deliver),
            triggers_prefix: config.streams.triggers_subject_prefix.clone(),
        }));
    }
    let endpoints = Endpoints::serve(&config, None, bus.client(), metrics).await?;
    let (bound, http_task, http_stop, not_ready) = (
        endpoints.bound,
        endpoints.server,
        endpoints.stop,
        endpoints.not_ready,
    );
    let names: Vec<&str> = ctxs.iter().map(|c| c.target.name.as_str()).collect();
    info!(http = %bound, targets = ?names, "runwatch deliver started");

    let timeout = config.shutdown.timeout;
    let stop = CancellationToken::new();
    let mut tasks = Supervisor::new(stop.clone(), not_ready);
    for ctx in &ctxs {
        // One name per configured target, made once at start-up.
        let name: &'static str = Box::leak(format!("deliver:{}", ctx.target.name).into_boxed_str());
        tasks.spawn(name, run_target(ctx.clone(), stop.clone()));
    }
    let server = tasks.watch_http(http_task, http_stop);

    let ended = tasks.watch(&shutdown).await;
    let cleanup = async {
        if let Err(e) = bus.drain().await {
            warn!(error = %e, "draining the NATS connection failed");
        }
    };
    tasks
        .shut_down(ended, timeout, Some(server), cleanup, "runwatch deliver")
        .await
        .map_err(|e| ServiceError::from(e).into())
}

/// Creates or updates the target's durable consumer.
async fn ensure_consumer(
    bus: &Bus,
    target: &Target,
) -> Result<async_nats::jetstream::consumer::PullConsumer, BusError> {
    bus.delivery_consumer(
        &target.consumer,
        format!("runwatch deliver: target {}", target.name),
        target.timeout.saturating_add(ACK_MARGIN),
        target.from == StartFrom::All,
    )
    .await
}

/// Every per-target series at zero, so dashboards see 0 before the first trigger.
fn register_metrics(target: &str) {
    for name in [
        "runwatch_deliver_delivered_total",
        "runwatch_deliver_attempts_total",
        "runwatch_deliver_filtered_total",
    ] {
        metrics::counter!(name, "target" => target.to_string()).increment(0);
    }
}

/// One target's pull loop (see the module documentation).
async fn run_target(ctx: Arc<TargetCtx>, stop: CancellationToken) -> TaskResult {
    let name = ctx.target.name.clone();
    let permits = Arc::new(Semaphore::new(ctx.target.concurrency));
    let mut inflight: JoinSet<()> = JoinSet::new();
    let mut delays = backoff(ctx.bus.retry_config()).build();
    let mut consumer = None;
    'pull: loop {
        while let Some(joined) = inflight.try_join_next() {
            if let Err(e) = joined
                && e.is_panic()
            {
                return Err(format!("a delivery to target `{name}` panicked"));
            }
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = stop.cancelled() => break 'pull,
        };
        let Ok(permit) = permit else { break 'pull };
        let want = permits.available_permits().saturating_add(1);
        let pulled = match consumer.take() {
            Some(c) => Ok(c),
            None => ensure_consumer(&ctx.bus, &ctx.target)
                .await
                .map_err(|e| format!("cannot set up the target's consumer yet: {e}")),
        };
        let pulled = match pulled {
            Ok(c) => match c
                .batch()
                .max_messages(want)
                .expires(PULL_EXPIRES)
                .messages()
                .await
            {
                Ok(b) => Ok((c, b)),
                Err(e) => Err(format!("pull failed: {e}")),
            },
            Err(why) => Err(why),
        };
        let (c, mut batch) = match pulled {
            Ok(pulled) => pulled,
            Err(why) => {
                drop(permit);
                if pause(&mut delays, &stop, &name, &why).await {
                    continue 'pull;
                }
                break 'pull;
            }
        };
        consumer = Some(c);
        let mut permit = Some(permit);
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = stop.cancelled() => {
                    // Pulled, not started: hand them back for another replica now.
                    let deadline = tokio::time::Instant::now() + HAND_BACK_WINDOW;
                    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, batch.next()).await {
                        ack(&msg, AckKind::Nak(None)).await;
                    }
                    break 'pull;
                }
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    debug!(target = %name, error = %e, "pull ended");
                    consumer = None;
                    break;
                }
                Some(Ok(msg)) => {
                    delays = backoff(ctx.bus.retry_config()).build();
                    let p = match permit.take() {
                        Some(p) => p,
                        None => match permits.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break 'pull,
                        },
                    };
                    let ctx = ctx.clone();
                    inflight.spawn(async move {
                        deliver_one(&ctx, msg).await;
                        drop(p);
                    });
                }
            }
        }
    }
    // Finish the requests in flight (the supervisor bounds this by shutdown.timeout).
    while let Some(joined) = inflight.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            warn!(target = %name, "a delivery panicked while stopping");
        }
    }
    Ok(())
}

/// Logs `why` and waits for the next backoff delay; false when `stop` came first.
async fn pause(
    delays: &mut backon::ExponentialBackoff,
    stop: &CancellationToken,
    target: &str,
    why: &str,
) -> bool {
    let wait = delays.next().unwrap_or(Duration::from_secs(5));
    warn!(%target, retry_in = ?wait, "{why}; retrying");
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.cancelled() => false,
    }
}

/// The target a redriven delivery dead letter is for, from its subject
/// (`<triggers_subject_prefix>.redrive.<target>`).
fn redrive_target<'a>(prefix: &str, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .strip_prefix(REDRIVE_TOKEN)?
        .strip_prefix('.')
}

/// One trigger to one target: filter, body, request, then ack, nak or dead letter.
async fn deliver_one(ctx: &TargetCtx, msg: Message) {
    let (seq, attempt) = msg_info(&msg);
    let name = ctx.target.name.as_str();
    // The deliver span continues the trigger message's trace (a new one when it has none):
    // the endpoint receives its `traceparent`, the log lines its trace id.
    let parent = TraceContext::from_nats(msg.headers.as_ref());
    let trace = TraceContext::child_of(parent.as_ref());
    let span = info_span!("deliver", target = %name, seq, attempt,
        trigger_id = tracing::field::Empty, trace_id = %trace.trace_id_field());
    async {
        if let Some(for_target) = redrive_target(&ctx.triggers_prefix, msg.subject.as_str())
            && for_target != name
        {
            ack(&msg, AckKind::Ack).await;
            return;
        }
        let mut trigger: Trigger = match serde_json::from_slice(&msg.payload) {
            Ok(t) => t,
            Err(e) => {
                let detail = format!("not a trigger: {e}");
                let failure = Failure { reason: "deliver_invalid", detail: &detail, status: None, response: "" };
                dead_letter(ctx, &msg, "", &failure).await;
                return;
            }
        };
        let trigger_id = trigger.trigger_id.to_string();
        tracing::Span::current().record("trigger_id", trigger_id.as_str());
        trigger.trace = Some(trace.clone());
        if !ctx.target.filter.matches(&trigger) {
            metrics::counter!("runwatch_deliver_filtered_total", "target" => name.to_string()).increment(1);
            debug!("filtered out");
            ack(&msg, AckKind::Ack).await;
            return;
        }
        let body = match &ctx.target.template {
            None => msg.payload.clone(),
            Some(t) => {
                let rendered = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    .map_err(|e| template::TemplateError::Render(e.to_string()))
                    .and_then(|v| t.render(&v, name));
                match rendered {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        metrics::counter!("runwatch_deliver_failed_total", "target" => name.to_string(), "reason" => "template").increment(1);
                        let detail = e.to_string();
                        let failure = Failure { reason: "deliver_template", detail: &detail, status: None, response: "" };
                        dead_letter(ctx, &msg, &trigger_id, &failure).await;
                        return;
                    }
                }
            }
        };
        metrics::counter!("runwatch_deliver_attempts_total", "target" => name.to_string()).increment(1);
        let started = Instant::now();
        let start = SystemTime::now();
        let outcome = request::send(&ctx.target, &ctx.client, body, &trigger, attempt).await;
        metrics::histogram!("runwatch_deliver_seconds", "target" => name.to_string()).record(started.elapsed().as_secs_f64());
        export_span(&trace, parent.as_ref(), name, &trigger_id, seq, attempt, &outcome, start);
        match outcome {
            Outcome::Delivered { status } => {
                metrics::counter!("runwatch_deliver_delivered_total", "target" => name.to_string()).increment(1);
                info!(status, "delivered");
                ack(&msg, AckKind::Ack).await;
            }
            Outcome::Retry { reason, status, detail, excerpt, after } => {
                metrics::counter!("runwatch_deliver_failed_total", "target" => name.to_string(), "reason" => reason).increment(1);
                if attempt >= u64::from(ctx.target.max_attempts) {
                    let detail = format!("{} attempts failed; the last: {detail}", attempt);
                    let failure = Failure { reason: "deliver_exhausted", detail: &detail, status, response: &excerpt };
                    dead_letter(ctx, &msg, &trigger_id, &failure).await;
                    return;
                }
                let delay = ctx.delays.after(attempt, after);
                warn!(?status, %detail, retry_in = ?delay, "delivery failed; will retry");
                ack(&msg, AckKind::Nak(Some(delay))).await;
            }
            Outcome::Refused { reason, status, detail, excerpt } => {
                metrics::counter!("runwatch_deliver_failed_total", "target" => name.to_string(), "reason" => reason).increment(1);
                let failure = Failure { reason: "deliver_refused", detail: &detail, status, response: &excerpt };
                dead_letter(ctx, &msg, &trigger_id, &failure).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Exports the `runwatch.deliver` span of one attempt (when tracing is on).
#[allow(clippy::too_many_arguments)]
fn export_span(
    trace: &TraceContext,
    parent: Option<&TraceContext>,
    target: &str,
    trigger_id: &str,
    seq: u64,
    attempt: u64,
    outcome: &Outcome,
    start: SystemTime,
) {
    trace_export::export(trace, || {
        let (result, status, error) = match outcome {
            Outcome::Delivered { status } => ("delivered", Some(*status), None),
            Outcome::Retry {
                reason,
                status,
                detail,
                ..
            } => ("retry", *status, Some(format!("{reason}: {detail}"))),
            Outcome::Refused {
                reason,
                status,
                detail,
                ..
            } => ("refused", *status, Some(format!("{reason}: {detail}"))),
        };
        let mut attributes = vec![
            KeyValue::new("runwatch.target", target.to_string()),
            KeyValue::new("runwatch.trigger_id", trigger_id.to_string()),
            trace_export::int("runwatch.stream_sequence", seq),
            trace_export::int("runwatch.attempt", attempt),
            KeyValue::new("runwatch.outcome", result),
        ];
        if let Some(status) = status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        trace_export::Span {
            name: "runwatch.deliver",
            kind: SpanKind::Client,
            context: trace.clone(),
            parent: parent.map(|p| p.span_id),
            start,
            end: SystemTime::now(),
            attributes,
            error,
        }
    });
}

/// Why a trigger is dead-lettered for a target.
struct Failure<'a> {
    reason: &'a str,
    detail: &'a str,
    status: Option<u16>,
    response: &'a str,
}

/// Dead-letters the trigger for this target, then terminates it; naks it (with the
/// backoff delay) when the dead letter cannot be published, so nothing is dropped.
async fn dead_letter(ctx: &TargetCtx, msg: &Message, trigger_id: &str, f: &Failure<'_>) {
    let (seq, attempt) = msg_info(msg);
    let letter = Letter::Delivery(DeliveryDeadLetter {
        letter: DeadLetter {
            reason: f.reason,
            detail: f.detail,
            original_subject: msg.subject.as_str(),
            stream_seq: seq,
            deliveries: attempt,
            payload: &msg.payload,
        },
        target: &ctx.target.name,
        status: f.status,
        response: f.response,
        trigger_id,
    });
    let retry_in = ctx.delays.after(attempt, None);
    match dead_letter_else_nak(&ctx.bus, msg, &letter, retry_in).await {
        Ok(()) => {
            warn!(reason = f.reason, detail = f.detail, status = ?f.status, "trigger dead-lettered for this target");
        }
        Err(e) => {
            warn!(error = %e, "dead-lettering failed; the trigger will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_subjects_name_their_target() {
        assert_eq!(redrive_target("rw.t", "rw.t.redrive.chat"), Some("chat"));
        assert_eq!(redrive_target("rw.t", "rw.t.github"), None);
        assert_eq!(redrive_target("rw.t", "rw.tx.redrive.chat"), None);
    }

    #[test]
    fn retry_after_is_capped_and_backoff_grows() {
        let d = Delays {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(60),
        };
        assert_eq!(
            d.after(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            d.after(1, Some(Duration::from_secs(86_400))),
            Duration::from_secs(60)
        );
        for attempt in [1, 2, 5, 1000, u64::MAX] {
            let delay = d.after(attempt, None);
            assert!(delay <= Duration::from_secs(20), "{attempt}: {delay:?}");
        }
    }
}
