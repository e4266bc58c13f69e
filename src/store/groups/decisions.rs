//! The decided triggers of a transaction, written to the outbox with their jobs.

use std::collections::HashSet;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::store::{Store, StoreError, jobs};
use crate::trace_context::TraceContext;
use crate::trigger::{self, Trigger};

impl Store {
    /// Writes decided triggers to the outbox, claimed for `lease`; returns those that were
    /// new (a decision taken again inserts nothing and must not be published again). The
    /// triggers list their failed runs' jobs first (store/jobs.rs): those stored, and those
    /// of `batch` that came before each decision.
    pub(super) async fn insert_outbox(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        mut decided: Vec<(i64, Trigger)>,
        batch: &jobs::BatchJobs,
    ) -> Result<Vec<Trigger>, StoreError> {
        if decided.is_empty() {
            return Ok(Vec::new());
        }
        self.attach_jobs(tx, &mut decided, batch).await?;
        let mut ids = Vec::with_capacity(decided.len());
        let mut groups = Vec::with_capacity(decided.len());
        let mut subjects = Vec::with_capacity(decided.len());
        let mut payloads = Vec::with_capacity(decided.len());
        let (mut parents, mut states) = (Vec::new(), Vec::new());
        let mut decided = decided;
        for (group_id, t) in &mut decided {
            ids.push(t.trigger_id);
            groups.push(*group_id);
            subjects.push(trigger::subject(&self.triggers_subject_prefix, t.provider));
            payloads.push(serde_json::to_vec(t)?);
            // A trigger decided without a context (a timer's) starts a new trace.
            let trace = t.trace.get_or_insert_with(TraceContext::root);
            parents.push(trace.traceparent());
            states.push(trace.state.clone());
        }
        let new: HashSet<Uuid> = sqlx::query_scalar!(
            "INSERT INTO outbox (trigger_id, group_id, subject, payload, claimed_until,
                                 traceparent, tracestate)
             SELECT u.id, u.g, u.s, u.p, now() + make_interval(secs => $5), u.tp, u.ts
             FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::bytea[], $6::text[],
                         $7::text[]) AS u(id, g, s, p, tp, ts)
             ON CONFLICT (trigger_id) DO NOTHING
             RETURNING trigger_id",
            &ids,
            &groups,
            &subjects,
            &payloads,
            self.lease.as_secs_f64(),
            &parents,
            &states as _
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        Ok(decided
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| new.contains(&t.trigger_id))
            .collect())
    }
}
