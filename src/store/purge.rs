//! Purge (the seed's `clean_old_convos`): by last update, batched, never a group whose
//! trigger is unsent or whose timer is pending.

use std::time::Duration;

use sqlx::postgres::{PgArguments, PgQueryResult};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres};

use super::{Store, StoreError};

/// Runs one purge statement until it deletes fewer than `batch` rows; the rows deleted.
/// `statement` makes it anew for each round (a query is consumed by running it).
async fn drain<'q>(
    pool: &PgPool,
    batch: i64,
    statement: impl Fn() -> Query<'q, Postgres, PgArguments>,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let done = statement()
            .execute(pool)
            .await
            .map(|r: PgQueryResult| r.rows_affected())?;
        total += done;
        if done < batch as u64 {
            return Ok(total);
        }
    }
}

impl Store {
    /// Deletes groups not updated for `older_than`, `batch` rows per statement, and the
    /// sent outbox rows, streaks, commit associations, pull request heads and jobs as old, and the
    /// flips dated before that (or before the longest `flaky_window`, whichever is older). Returns the number of groups deleted.
    ///
    /// The statements are `src/store/sql/purge_*.sql` ([`super::sql`]), checked at compile
    /// time; the rest run in the order of [`super::sql::PURGE_REST`].
    pub async fn purge(&self, older_than: Duration, batch: i64) -> Result<u64, StoreError> {
        let secs = older_than.as_secs_f64();
        let pool = &self.pool;
        let groups = drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_groups_unstamped.sql", secs, batch)
        })
        .await?
            + drain(pool, batch, || {
                sqlx::query_file!("src/store/sql/purge_groups.sql", secs, batch)
            })
            .await?;
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_outbox.sql", secs, batch)
        })
        .await?;
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_streaks.sql", secs, batch)
        })
        .await?;
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_commit_pulls.sql", secs, batch)
        })
        .await?;
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_pull_heads.sql", secs, batch)
        })
        .await?;
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_trigger_budgets.sql", secs, batch)
        })
        .await?;
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_jobs.sql", secs, batch)
        })
        .await?;
        // Flips by their time, and never one a rule still counts.
        let flips_secs = secs.max(self.engine.rules().longest_flaky_window().as_secs_f64());
        drain(pool, batch, || {
            sqlx::query_file!("src/store/sql/purge_flips.sql", flips_secs, batch)
        })
        .await?;
        metrics::counter!("runwatch_purged_groups_total").increment(groups);
        Ok(groups)
    }
}
