//! The timer sweep: settle and cooldown timers that are due, in a transaction of their own.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::ledger::{lock_ledger, write_flips, write_ledger};
use super::rows::{GroupColumns, set_head, slot_from_row, write_groups};
use crate::engine::{Clock, CooldownKey, FlipKey, GroupState};
use crate::store::budgets::{self, OverBudgetNote};
use crate::store::lenient::Lenient;
use crate::store::{Store, StoreError, association, jobs};
use crate::trigger::Trigger;

impl Store {
    /// Fires settle / cooldown timers that are due (by wall clock, or by the caller's event
    /// clock), claiming groups with `FOR UPDATE SKIP LOCKED` so replicas share the work.
    /// Returns the triggers decided (already in the outbox, claimed by the caller).
    pub async fn fire_due_timers(
        &self,
        event_clock: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Trigger>, StoreError> {
        self.with_retry("timers", || self.fire_due_tx(event_clock, limit))
            .await
    }

    async fn fire_due_tx(
        &self,
        event_clock: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Trigger>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (triggers, over_budget) = self.fire_due_in(&mut tx, event_clock, limit).await?;
        tx.commit().await?;
        budgets::report_over_budget(&over_budget);
        Ok(triggers)
    }

    /// The body of the timer transaction, on `tx`.
    async fn fire_due_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event_clock: DateTime<Utc>,
        limit: i64,
    ) -> Result<(Vec<Trigger>, Vec<OverBudgetNote>), StoreError> {
        // A worker that has applied no event yet has the clock at `DateTime::MIN_UTC`, which
        // Postgres rejects ("timestamp out of range"): the whole sweep failed, so a replica
        // restarted with nothing left to consume never fired a wall-clock timer. Before the
        // epoch nothing is due by event time.
        let event_clock = event_clock.max(DateTime::UNIX_EPOCH);
        // src/store/sql/timers_due.sql ([`crate::store::sql::TIMERS_DUE`]).
        let rows = sqlx::query_file_as!(
            GroupColumns,
            "src/store/sql/timers_due.sql",
            event_clock,
            limit
        )
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let repo_ids: Vec<i64> = rows.iter().map(|r| r.repository_id).collect();
        let repos = self.repositories_by_id(&repo_ids).await?;
        let mut slots = Vec::with_capacity(rows.len());
        let mut corrupt = Vec::new();
        for row in rows {
            match slot_from_row(row, &repos)? {
                Ok(slot) => slots.push(slot),
                Err(c) => {
                    c.report("timers");
                    corrupt.push(c.id);
                }
            }
        }
        if !corrupt.is_empty() {
            // Its timers cannot be evaluated: drop them, so the sweep does not stop at this
            // row on every pass. Its next event is dead-lettered as `corrupt_state`.
            sqlx::query!(
                "UPDATE groups SET due_event_at = NULL, due_wall_at = NULL WHERE id = ANY($1)",
                &corrupt
            )
            .execute(&mut **tx)
            .await?;
        }
        let cooldown_keys: BTreeSet<CooldownKey> = repos
            .values()
            .flat_map(|r| self.engine.cooldown_keys(r))
            .collect();
        let (mut ledger, _) = lock_ledger(tx, &BTreeSet::new(), &cooldown_keys).await?;
        let budget_keys: BTreeSet<_> = slots
            .iter()
            .flat_map(|s| self.engine.budget_keys(&s.repo, s.pr_number))
            .collect();
        budgets::lock_budgets(tx, &budget_keys, &mut ledger).await?;
        let flip_keys: BTreeSet<FlipKey> = slots
            .iter()
            .flat_map(|s| self.flip_keys(s.repo.internal_id, s.state.runs.values()))
            .collect();
        ledger.flips = self.load_flips(tx, &flip_keys, event_clock).await?;
        let original_ledger = ledger.clone();
        let prs: BTreeSet<(i64, u64)> = slots
            .iter()
            .filter_map(|s| s.pr_number.map(|n| (s.repo.internal_id, n)))
            .collect();
        let heads = association::load_heads(tx, &prs).await?;
        let pr_less: BTreeSet<association::Commit> = slots
            .iter()
            .filter(|s| s.pr_number.is_none())
            .map(|s| (s.repo.internal_id, s.commit_sha.clone()))
            .collect();
        let in_pulls = association::commits_in_pulls(tx, &pr_less).await?;
        for slot in &mut slots {
            set_head(slot, &heads);
            if slot.pr_number.is_none() {
                let in_pull = in_pulls.contains(&(slot.repo.internal_id, slot.commit_sha.clone()));
                slot.state.commit_in_pull = in_pull;
                slot.original_state.commit_in_pull = in_pull;
            }
        }
        let clock = Clock {
            event: event_clock,
            wall: Utc::now(),
        };
        let mut decided = Vec::new();
        let mut over_budget = Vec::new();
        for slot in &mut slots {
            let fired = self.engine.fire_due(&mut slot.ctx(), &mut ledger, clock);
            decided.extend(fired.into_iter().map(|t| (slot.id, t)));
            over_budget.extend(budgets::new_over_budget(
                slot.id,
                &slot.repo,
                slot.pr_number,
                &slot.commit_sha,
                &slot.original_state,
                &slot.state,
            ));
            // The timer was due: even when nothing fired the due columns must move on.
            slot.original_state = GroupState::default();
        }
        write_groups(tx, slots.iter(), &[]).await?;
        write_ledger(tx, &original_ledger, &ledger).await?;
        budgets::write_budgets(tx, &self.engine, &original_ledger, &ledger).await?;
        write_flips(tx, &original_ledger, &ledger).await?;
        Ok((
            self.insert_outbox(tx, decided, &jobs::BatchJobs::default())
                .await?,
            over_budget,
        ))
    }
}
