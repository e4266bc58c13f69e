//! Purge (the seed's `clean_old_convos`): by last update, batched, never a group whose
//! trigger is unsent or whose timer is pending.

use std::time::Duration;

use super::{Store, StoreError};

impl Store {
    /// Deletes groups not updated for `older_than`, `batch` rows per statement, and the
    /// sent outbox rows, streaks, commit associations, pull request heads and jobs as old, and the
    /// flips dated before that (or before the longest `flaky_window`, whichever is older). Returns the number of groups deleted.
    pub async fn purge(&self, older_than: Duration, batch: i64) -> Result<u64, StoreError> {
        let secs = older_than.as_secs_f64();
        let mut groups = 0u64;
        loop {
            let done = sqlx::query(super::sql::PURGE_GROUPS)
                .bind(secs)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
            groups += done;
            if done < batch as u64 {
                break;
            }
        }
        for sql in super::sql::PURGE_REST {
            loop {
                let done = sqlx::query(sql)
                    .bind(secs)
                    .bind(batch)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if done < batch as u64 {
                    break;
                }
            }
        }
        // Flips by their time, and never one a rule still counts.
        let flips_secs = secs.max(self.engine.rules().longest_flaky_window().as_secs_f64());
        loop {
            let done = sqlx::query(super::sql::PURGE_FLIPS)
                .bind(flips_secs)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
            if done < batch as u64 {
                break;
            }
        }
        metrics::counter!("runwatch_purged_groups_total").increment(groups);
        Ok(groups)
    }
}
