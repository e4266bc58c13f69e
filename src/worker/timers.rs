//! The timer sweep: fires settle and cooldown timers that are due by wall clock or by this
//! process's event clock, claiming groups with `SKIP LOCKED` so replicas share the work, and
//! publishes what fired. A sweep the database refuses (see [`crate::store::Health`]) is
//! tried again at the next interval and keeps readiness off until one succeeds.

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::context::Ctx;
use crate::outbox_publisher;
use crate::service::TaskResult;
use crate::store::Op;

pub async fn run(ctx: Ctx, stop: CancellationToken) -> TaskResult {
    let t = &ctx.config.timers;
    let (every, batch) = (t.interval, t.batch);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let started = std::time::SystemTime::now();
        let swept = outbox_publisher::sweep_timers(batch, || {
            ctx.store.fire_due_timers(ctx.clock.get(), batch)
        })
        .await;
        match swept {
            Ok(triggers) => {
                ctx.store.health().succeeded(Op::Timers);
                export_spans(&triggers, started);
                outbox_publisher::publish(&ctx.store, &ctx.bus, &triggers).await;
            }
            // Logged once per episode, and reported on /readyz, by the store's health.
            Err(e) if e.is_transient() => ctx.store.health().failed(Op::Timers, &e),
            Err(e) => warn!(error = %e, "timer sweep failed; will retry"),
        }
    }
}

/// A trigger fired by a timer starts a new trace (the store gave it a root context): its
/// `runwatch.timer` span is that trace's root, and the trigger message's `traceparent`
/// names it as parent. No link to the inputs that armed the timer (they may be days old
/// and many).
fn export_spans(triggers: &[crate::trigger::Trigger], started: std::time::SystemTime) {
    use crate::trace_export::Attr;
    let end = std::time::SystemTime::now();
    for t in triggers {
        let Some(trace) = &t.trace else { continue };
        crate::trace_export::export(trace, || crate::trace_export::Span {
            name: "runwatch.timer",
            kind: crate::trace_export::Kind::Internal,
            context: trace,
            parent: None,
            start: started,
            end,
            attributes: vec![
                Attr::str("runwatch.trigger_id", t.trigger_id.to_string()),
                Attr::str("runwatch.group", crate::outbox_publisher::group_key(t)),
                Attr::str("runwatch.rule", t.rule_name.as_str()),
            ],
            error: None,
        });
    }
}
