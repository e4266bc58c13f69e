//! The timer sweep: fires settle and cooldown timers that are due by wall clock or by this
//! process's event clock, claiming groups with `SKIP LOCKED` so replicas share the work, and
//! publishes what fired. A sweep the database refuses (see [`crate::store::Health`]) is
//! tried again at the next interval and keeps readiness off until one succeeds.

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Ctx;
use super::supervisor::TaskResult;
use crate::delivery;
use crate::store::Op;

pub async fn run(ctx: Ctx, stop: CancellationToken) -> TaskResult {
    let t = &ctx.config.timers;
    let (every, batch) = (t.interval, t.batch);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let swept =
            delivery::sweep_timers(batch, || ctx.store.fire_due_timers(ctx.clock.get(), batch))
                .await;
        match swept {
            Ok(triggers) => {
                ctx.store.health().succeeded(Op::Timers);
                delivery::publish(&ctx.store, &ctx.bus, &triggers).await;
            }
            // Logged once per episode, and reported on /readyz, by the store's health.
            Err(e) if e.is_transient() => ctx.store.health().failed(Op::Timers, &e),
            Err(e) => warn!(error = %e, "timer sweep failed; will retry"),
        }
    }
}
