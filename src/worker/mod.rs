//! The worker (`runwatch run`): a supervisor of named tasks over one store and one bus.
//!
//! - `consume`: pull, decode, decide in one transaction per batch, publish, acknowledge;
//! - `relay`: publish unsent triggers whose claim expired (any replica's);
//! - `timers`: fire due settle and cooldown timers;
//! - `purge`: delete old groups, periodically;
//! - `http`: `/healthz`, `/readyz`, `/metrics`.
//!
//! [`run`] builds it, then waits for a signal or for the first task to end. A task that ends
//! by itself is a failure: it is logged with its reason, `/readyz` turns 503, the other
//! tasks stop, and [`run`] returns [`WorkerError::TaskEnded`] so the process exits non-zero
//! and an orchestrator restarts it. Either way the shutdown is bounded by
//! `shutdown.timeout`: stop pulling, finish the batch in hand, flush the outbox, drain NATS.

mod consume;
mod context;
mod disposition;
mod finish;
mod hold;
pub mod lanes;
mod purge;
mod relay;
mod timers;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::service::{Endpoints, Supervisor};
use crate::startup;

pub use crate::service::{HttpServer, ServiceError as WorkerError, TaskEnded, TaskResult};
pub use context::{Fault, RunOptions};

use context::{Ctx, EventClock, Shared};

/// Runs the worker until `shutdown` is cancelled or a task ends by itself, then shuts down
/// within `shutdown.timeout`. `metrics` is served on `/metrics` when given.
pub async fn run(
    config: Config,
    options: RunOptions,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // A signal while still connecting (a service down at start-up) stops at once.
    let (store, bus) = tokio::select! {
        opened = startup::open_worker(&config, options.no_migrate) => opened?,
        _ = shutdown.cancelled() => {
            info!("shutdown requested before the worker was ready");
            return Ok(());
        }
    };
    crate::telemetry::register_worker_metrics();
    crate::store::Health::register_metrics();
    store.register_budget_metrics();
    let endpoints = Endpoints::serve(&config, Some(store.clone()), bus.client(), metrics).await?;
    let (bound, http_task, http_stop, not_ready) = (
        endpoints.bound,
        endpoints.server,
        endpoints.stop,
        endpoints.not_ready,
    );
    info!(http = %bound, events = %config.streams.events, consumer = %config.consumer.durable, "runwatch worker started");

    let timeout = config.shutdown.timeout;
    let ctx = Ctx(Arc::new(Shared {
        config,
        store,
        bus,
        clock: EventClock::new(),
        options,
    }));
    let stop = CancellationToken::new();
    let mut tasks = Supervisor::new(stop.clone(), not_ready);
    tasks.spawn("consume", consume::run(ctx.clone(), stop.clone()));
    tasks.spawn("relay", relay::run(ctx.clone(), stop.clone()));
    tasks.spawn("timers", timers::run(ctx.clone(), stop.clone()));
    tasks.spawn("purge", purge::run(ctx.clone(), stop.clone()));
    tasks.spawn("trace-export", crate::trace_export::watch(stop.clone()));
    let server = tasks.watch_http(http_task, http_stop);

    let ended = tasks.watch(&shutdown).await;
    let cleanup = async {
        // Flush: publish what the outbox holds unclaimed.
        if let Err(e) = relay::once(&ctx).await {
            warn!(error = %e, "outbox flush at shutdown failed; another replica's relay will publish");
        }
        if let Err(e) = ctx.bus.drain().await {
            warn!(error = %e, "draining the NATS connection failed");
        }
        ctx.store.pool().close().await;
    };
    Ok(tasks
        .shut_down(ended, timeout, Some(server), cleanup, "runwatch worker")
        .await?)
}
