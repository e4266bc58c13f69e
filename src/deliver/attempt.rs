//! One delivery attempt of one trigger to one target: the request, its outcome (ack, nak
//! with a delay, or a dead letter), the deliver span and the metrics.

use std::time::{Instant, SystemTime};

use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use tracing::{Instrument, debug, info, info_span, warn};

use super::context::TargetCtx;
use super::request::{self, Outcome};
use super::template;
use crate::bus::disposition::{Letter, ack, dead_letter_else_nak, msg_info};
use crate::bus::{DeadLetter, DeliveryDeadLetter, REDRIVE_TOKEN};
use crate::trace_context::TraceContext;
use crate::trace_export::{self, Attr, Kind};
use crate::trigger::Trigger;

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
pub(super) async fn deliver_one(ctx: &TargetCtx, msg: Message) {
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
            Attr::str("runwatch.target", target),
            Attr::str("runwatch.trigger_id", trigger_id),
            Attr::uint("runwatch.stream_sequence", seq),
            Attr::uint("runwatch.attempt", attempt),
            Attr::str("runwatch.outcome", result),
        ];
        if let Some(status) = status {
            attributes.push(Attr::int("http.response.status_code", i64::from(status)));
        }
        trace_export::Span {
            name: "runwatch.deliver",
            kind: Kind::Client,
            context: trace,
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
}
