//! The outbox relay's side of the store: claim unsent triggers whose claim expired, mark
//! them sent after the PubAck, record publish errors.

use uuid::Uuid;

use super::{Store, StoreError};

/// An unsent trigger claimed by this process.
#[derive(Debug, Clone)]
pub struct Pending {
    pub trigger_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    pub attempts: i32,
    /// The W3C trace context written with the decision (`None` for older rows).
    pub trace: Option<crate::trace_context::TraceContext>,
}

impl Store {
    /// Claims up to `limit` unsent triggers that nobody holds (claim expired or never
    /// claimed), for `lease`. Short transaction with `FOR UPDATE SKIP LOCKED`: replicas
    /// claim disjoint rows, and no lock is held while publishing.
    pub async fn claim_unsent(&self, limit: i64) -> Result<Vec<Pending>, StoreError> {
        // src/store/sql/relay_claim.sql ([`super::sql::RELAY_CLAIM`]).
        let rows = sqlx::query_file!(
            "src/store/sql/relay_claim.sql",
            limit,
            self.lease.as_secs_f64()
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Pending {
                    trigger_id: r.trigger_id,
                    subject: r.subject,
                    payload: r.payload,
                    attempts: r.attempts,
                    trace: r.traceparent.and_then(|tp| {
                        crate::trace_context::TraceContext::parse(&tp, r.tracestate.as_deref())
                    }),
                })
            })
            .collect()
    }

    /// Marks triggers as published (their PubAck arrived).
    pub async fn mark_sent(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "UPDATE outbox SET sent_at = now(), last_error = NULL WHERE trigger_id = ANY($1) AND sent_at IS NULL",
            ids
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records why a publish failed; the claim stays until its lease expires, then any
    /// relay retries.
    pub async fn record_publish_error(&self, id: Uuid, error: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE outbox SET last_error = left($2, 1000) WHERE trigger_id = $1",
            id,
            error
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets an unsent row aside: the relay no longer claims it (its payload cannot be
    /// published, e.g. it does not decode as a trigger). Kept for an operator, with `reason`.
    pub async fn set_aside(&self, id: Uuid, reason: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE outbox SET set_aside_at = now(), set_aside_reason = left($2, 1000)
             WHERE trigger_id = $1 AND sent_at IS NULL",
            id,
            reason
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Unsent triggers the relay will publish (the outbox backlog), for metrics and tests;
    /// rows set aside are not counted.
    pub async fn unsent_count(&self) -> Result<i64, StoreError> {
        // count(*) is never NULL, which Postgres does not tell: "n!".
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM outbox WHERE sent_at IS NULL AND set_aside_at IS NULL"#
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
