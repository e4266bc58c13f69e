//! Purge (the seed's `clean_old_convos`): by last update, batched, never a group whose
//! trigger is unsent or whose timer is pending.

use std::time::Duration;

use super::{Store, StoreError};

impl Store {
    /// Deletes groups not updated for `older_than`, `batch` rows per statement, and the
    /// sent outbox rows, streaks, commit associations and pull request heads as old. Returns the number of groups deleted.
    pub async fn purge(&self, older_than: Duration, batch: i64) -> Result<u64, StoreError> {
        let secs = older_than.as_secs_f64();
        let mut groups = 0u64;
        loop {
            let done = sqlx::query(
                // `touched_on` (indexed, the UTC day of the last write; NULL for rows not
                // written since it was added) narrows the scan to the old days;
                // `updated_at` (exact, unindexed so that updates stay HOT) decides.
                "DELETE FROM groups WHERE id IN (
                     SELECT g.id FROM groups g
                     WHERE (g.touched_on IS NULL
                            OR g.touched_on <= ((now() - make_interval(secs => $1)) AT TIME ZONE 'UTC')::date)
                       AND g.updated_at < now() - make_interval(secs => $1)
                       AND g.due_wall_at IS NULL
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.group_id = g.id AND o.sent_at IS NULL)
                     ORDER BY g.touched_on NULLS FIRST LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
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
        for sql in [
            "DELETE FROM outbox WHERE trigger_id IN (
                 SELECT trigger_id FROM outbox WHERE sent_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM streaks WHERE (repository_id, rule, branch, workflow) IN (
                 SELECT repository_id, rule, branch, workflow FROM streaks
                 WHERE updated_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            // Commit → pull request associations and pull request heads (store/association.rs).
            "DELETE FROM commit_pulls WHERE (repository_id, commit_sha, pr_number) IN (
                 SELECT repository_id, commit_sha, pr_number FROM commit_pulls
                 WHERE created_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM pull_heads WHERE (repository_id, pr_number) IN (
                 SELECT repository_id, pr_number FROM pull_heads
                 WHERE updated_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        ] {
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
        metrics::counter!("runwatch_purged_groups_total").increment(groups);
        Ok(groups)
    }
}
