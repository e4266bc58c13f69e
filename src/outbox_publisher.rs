//! Getting decided triggers out: publish each one (a result per trigger), mark the sent ones
//! in the outbox, leave the others to the outbox relay with their error; and the timer
//! sweep's paging. Shared by the worker (consume, relay, timers) and `runwatch replay`.

use std::future::Future;
use std::time::Instant;

use tracing::{info, info_span, warn};
use uuid::Uuid;

use crate::bus::Bus;
use crate::store::{Store, StoreError};
use crate::trigger::Trigger;

/// What a [`publish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Triggers whose PubAck arrived (and that were marked sent, unless `mark_failed`).
    pub sent: Vec<Uuid>,
    /// Triggers whose publish failed: still unsent in the outbox, for the relay.
    pub failed: Vec<Uuid>,
    /// Marking the sent ones failed: the relay republishes them after their lease and
    /// JetStream's duplicate window drops the copies.
    pub mark_failed: bool,
}

/// Publishes `triggers` (pipelined PubAcks), then marks those acknowledged as sent. A
/// trigger whose publish fails stays unsent in the outbox with its error: the relay of any
/// replica publishes it once its claim expires. Never fails as a whole.
pub async fn publish(store: &Store, bus: &Bus, triggers: &[Trigger]) -> Delivered {
    let mut out = publish_unmarked(store, bus, triggers).await;
    if let Err(e) = store.mark_sent(&out.sent).await {
        warn!(error = %e, "marking triggers sent failed; the relay republishes them after their lease");
        out.mark_failed = true;
    }
    out
}

/// As [`publish`], but leaves marking the sent ones to the caller (the consume task folds
/// them into its next record transaction: one commit instead of two). Until they are
/// marked they stay claimed for their lease; a crash meanwhile makes the relay publish them
/// again after it, and JetStream's duplicate window drops the copies.
pub async fn publish_unmarked(store: &Store, bus: &Bus, triggers: &[Trigger]) -> Delivered {
    let mut out = Delivered::default();
    if triggers.is_empty() {
        return out;
    }
    let started = Instant::now();
    let results = bus.publish_triggers(triggers).await;
    metrics::histogram!("runwatch_publish_seconds").record(started.elapsed().as_secs_f64());
    for (t, r) in triggers.iter().zip(results) {
        let span = info_span!("trigger", trigger_id = %t.trigger_id, rule = %t.rule_name,
            group = %group_key(t),
            trace_id = t.trace.as_ref().map(|c| tracing::field::display(c.trace_id_field())));
        let _g = span.enter();
        match r {
            Ok(()) => {
                info!(failed = ?t.failed_workflows, "trigger published");
                metrics::counter!("runwatch_triggers_total", "rule" => t.rule.clone()).increment(1);
                out.sent.push(t.trigger_id);
            }
            Err(e) => {
                warn!(error = %e, "trigger publish failed; the outbox relay will retry");
                out.failed.push(t.trigger_id);
                if let Err(e) = store
                    .record_publish_error(t.trigger_id, &e.to_string())
                    .await
                {
                    warn!(error = %e, "recording the publish error failed");
                }
            }
        }
    }
    out
}

/// A trigger's group as logs and spans name it: `owner/name#<pr>@<sha>` (`-` without a
/// pull request).
pub fn group_key(t: &Trigger) -> String {
    format!(
        "{}/{}#{}@{}",
        t.repository.owner,
        t.repository.name,
        t.pr_number.map_or_else(|| "-".into(), |p| p.to_string()),
        t.commit_sha
    )
}

/// Runs a timer sweep page by page: `page` fires at most `batch` groups' due timers per
/// call; a full page means more may be due. Returns every trigger decided.
pub async fn sweep_timers<F, Fut>(batch: i64, mut page: F) -> Result<Vec<Trigger>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Trigger>, StoreError>>,
{
    let batch = batch.max(1);
    let mut decided = Vec::new();
    loop {
        let started = Instant::now();
        let fired = page().await;
        metrics::histogram!("runwatch_transaction_seconds", "op" => "timers")
            .record(started.elapsed().as_secs_f64());
        let fired = fired?;
        let full = i64::try_from(fired.len()).unwrap_or(i64::MAX) >= batch;
        decided.extend(fired);
        if !full {
            return Ok(decided);
        }
    }
}
