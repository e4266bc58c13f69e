//! Finishing a committed batch: publish what it decided, then dispose of its inputs (ack the
//! applied, dead-letter the rejected), and export each input's decision span.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use async_nats::jetstream::Message;
use tracing::{Instrument, info_span};
use uuid::Uuid;

use super::context::Ctx;
use super::disposition::{self, msg_info};
use crate::outbox_publisher;
use crate::pull_request::Input;
use crate::store::EventOutcome;
use crate::trace_context::TraceContext;
use crate::trace_export::{self, Attr, Kind};
use crate::trigger::Trigger;

/// The decision span of one input: a child of the events message's trace context (a new
/// trace when it carries none); the triggers the input decided carry it as their parent.
pub(super) struct DecisionSpan {
    parent: Option<TraceContext>,
    pub(super) context: TraceContext,
    start: SystemTime,
}

impl DecisionSpan {
    pub(super) fn of(msg: &Message, start: SystemTime) -> DecisionSpan {
        let parent = TraceContext::from_nats(msg.headers.as_ref());
        DecisionSpan {
            context: TraceContext::child_of(parent.as_ref()),
            parent,
            start,
        }
    }
}

/// Publishes what a committed batch decided (the sent ones go to `marks`, for the next
/// transaction), then disposes of its inputs: applied events are acked (their decision is
/// in the database; a trigger that could not be published stays in the outbox for the
/// relay), rejected ones are dead-lettered.
pub(super) async fn finish(
    ctx: &Ctx,
    batch: Vec<(Message, Input)>,
    outcomes: Vec<EventOutcome>,
    triggers: Vec<Trigger>,
    spans: Vec<DecisionSpan>,
    marks: &Mutex<Vec<Uuid>>,
) {
    let decided_at = SystemTime::now();
    let delivered = outbox_publisher::publish_unmarked(&ctx.store, &ctx.bus, &triggers).await;
    if !delivered.sent.is_empty() {
        marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(delivered.sent);
    }
    // The triggers of each decision span, for its `runwatch.trigger_ids` (tracing on only).
    let mut by_span: HashMap<u64, Vec<String>> = HashMap::new();
    if trace_export::enabled() {
        for t in &triggers {
            if let Some(c) = &t.trace {
                by_span
                    .entry(c.span_id)
                    .or_default()
                    .push(t.trigger_id.to_string());
            }
        }
    }
    for (((msg, event), result), decision) in batch.into_iter().zip(outcomes).zip(spans) {
        let (seq, _) = msg_info(&msg);
        let trace_id = decision.context.trace_id_field();
        let span = info_span!("event", seq, group = %group_label(&event), %trace_id);
        export_decision(&decision, seq, &event, &result, &mut by_span, decided_at);
        match result {
            EventOutcome::Applied => disposition::applied(&msg).instrument(span).await,
            EventOutcome::Rejected(r) => {
                disposition::dead_letter(&ctx.bus, &ctx.config, &msg, r.code.as_str(), &r.detail)
                    .instrument(span)
                    .await;
            }
        }
    }
}

/// Exports an input's `runwatch.decide` span (when tracing is on): from the start of its
/// record transaction to its commit; the triggers it decided are those whose context is
/// this span's.
fn export_decision(
    d: &DecisionSpan,
    seq: u64,
    event: &Input,
    result: &EventOutcome,
    by_span: &mut HashMap<u64, Vec<String>>,
    end: SystemTime,
) {
    trace_export::export(&d.context, || {
        let ids = by_span.remove(&d.context.span_id).unwrap_or_default();
        let (outcome, error) = match result {
            EventOutcome::Applied => ("applied", None),
            EventOutcome::Rejected(r) => ("rejected", Some(r.code.as_str().to_string())),
        };
        trace_export::Span {
            name: "runwatch.decide",
            kind: Kind::Consumer,
            context: &d.context,
            parent: d.parent.as_ref().map(|p| p.span_id),
            start: d.start,
            end,
            attributes: vec![
                Attr::uint("runwatch.stream_sequence", seq),
                Attr::str("runwatch.event_id", event.event_id()),
                Attr::str("runwatch.group", group_label(event)),
                Attr::str("runwatch.outcome", outcome),
                Attr::strs("runwatch.trigger_ids", ids),
            ],
            error,
        }
    });
}

/// `owner/name#pr@commit` (`-` for no pull request), built without `format!`'s machinery
/// for the strings: it is made for every decision span exported.
pub(crate) fn group_label(e: &Input) -> String {
    use std::fmt::Write;
    let (repo, sha) = (e.repository(), e.commit_sha());
    let mut s = String::with_capacity(repo.owner.len() + repo.name.len() + sha.len() + 24);
    s.push_str(&repo.owner);
    s.push('/');
    s.push_str(&repo.name);
    s.push('#');
    match e.pr_number() {
        // Writing to a String cannot fail.
        Some(p) => {
            let _ = write!(s, "{p}");
        }
        None => s.push('-'),
    }
    s.push('@');
    s.push_str(sha);
    s
}
