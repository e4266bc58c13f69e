//! The outbox relay: publishes unsent triggers whose claim expired (a crash between commit
//! and publish, a failed publish), in every replica, claiming rows with `SKIP LOCKED`. A row
//! whose payload is not a trigger is set aside with its reason (never claimed again), so one
//! bad row cannot keep the relay busy forever. Also samples the backlog gauges.

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::context::Ctx;
use crate::outbox_publisher;
use crate::service::TaskResult;
use crate::store::Op;
use crate::store::StoreError;
use crate::trigger::Trigger;

pub async fn run(ctx: Ctx, stop: CancellationToken) -> TaskResult {
    let every = ctx.config.outbox.relay_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        match once(&ctx).await {
            Ok(_) => ctx.store.health().succeeded(Op::Relay),
            // Logged once per episode, and reported on /readyz, by the store's health.
            Err(e) if e.is_transient() => ctx.store.health().failed(Op::Relay, &e),
            Err(e) => warn!(error = %e, "outbox relay failed; will retry"),
        }
        if let Ok(n) = ctx.store.unsent_count().await {
            metrics::gauge!("runwatch_outbox_backlog").set(n as f64);
        }
        if let Ok(n) = ctx.bus.consumer_pending().await {
            metrics::gauge!("runwatch_consumer_pending").set(n as f64);
        }
    }
}

/// One relay pass over at most `outbox.relay_batch` rows. Returns how many were claimed.
pub async fn once(ctx: &Ctx) -> Result<usize, StoreError> {
    let pending = ctx
        .store
        .claim_unsent(ctx.config.outbox.relay_batch)
        .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut triggers = Vec::with_capacity(pending.len());
    for p in &pending {
        match serde_json::from_slice::<Trigger>(&p.payload) {
            Ok(mut t) => {
                // The trace context stored with the decision (never in the payload).
                t.trace = p.trace.clone();
                triggers.push(t);
            }
            Err(e) => {
                let reason = format!("payload is not a runwatch.trigger.v1: {e}");
                error!(trigger_id = %p.trigger_id, %reason, "outbox row set aside");
                metrics::counter!("runwatch_outbox_set_aside_total").increment(1);
                ctx.store.set_aside(p.trigger_id, &reason).await?;
            }
        }
    }
    if !triggers.is_empty() {
        info!(
            count = triggers.len(),
            "outbox relay publishing unsent triggers"
        );
        metrics::counter!("runwatch_relay_triggers_total").increment(triggers.len() as u64);
        outbox_publisher::publish(&ctx.store, &ctx.bus, &triggers).await;
    }
    Ok(pending.len())
}
