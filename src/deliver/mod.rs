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

mod attempt;
pub mod config;
mod context;
pub mod request;
pub mod signing;
pub mod target;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use backon::BackoffBuilder;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{DeliverConfig, StartFrom, TargetConfig};
pub use context::Delays;

use attempt::deliver_one;
use context::TargetCtx;
pub use request::Outcome;
pub use target::Target;

use crate::bus::backoff::backoff;
use crate::bus::disposition::ack;
use crate::bus::{Bus, BusError};
use crate::config::{Config, ConfigError};
use crate::service::{Endpoints, ServiceError, Supervisor, TaskResult};
use crate::startup;

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
    tasks.spawn("trace-export", crate::trace_export::watch(stop.clone()));
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
