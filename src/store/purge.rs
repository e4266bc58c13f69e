//! Purge (the seed's `clean_old_convos`): by last update, batched, never a group whose
//! trigger is unsent or whose timer is pending.

use std::time::Duration;

use sqlx::postgres::{PgArguments, PgQueryResult};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres};

use super::{Store, StoreError};

/// How a purge runs: what is old, how many rows one statement deletes, and the pause
/// between two full batches (`purge.pause`), which leaves the disk and the cores to the
/// worker's hot path between batches.
#[derive(Debug, Clone, Copy)]
pub struct PurgePace {
    pub older_than: Duration,
    pub batch: i64,
    pub pause: Duration,
}

/// Runs one purge statement until it deletes fewer than `batch` rows, pausing `pause`
/// after each full batch; the rows deleted. `statement` makes it anew for each round (a
/// query is consumed by running it).
async fn drain<'q>(
    pool: &PgPool,
    pace: &PurgePace,
    statement: impl Fn() -> Query<'q, Postgres, PgArguments>,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let done = statement()
            .execute(pool)
            .await
            .map(|r: PgQueryResult| r.rows_affected())?;
        total = total.saturating_add(done);
        if done < u64::try_from(pace.batch).unwrap_or(0) {
            return Ok(total);
        }
        if !pace.pause.is_zero() {
            tokio::time::sleep(pace.pause).await;
        }
    }
}

impl Store {
    /// Deletes groups not updated for `pace.older_than`, `pace.batch` rows per statement
    /// (`pace.pause` after each full one), and the
    /// sent outbox rows, streaks, commit associations, pull request heads and jobs as old, and the
    /// flips dated before that (or before the longest `flaky_window`, whichever is older). Returns the number of groups deleted.
    ///
    /// The statements are `src/store/sql/purge_*.sql` ([`super::sql`]), checked at compile
    /// time; the rest run in the order of [`super::sql::PURGE_REST`].
    pub async fn purge(&self, pace: PurgePace) -> Result<u64, StoreError> {
        let secs = pace.older_than.as_secs_f64();
        let batch = pace.batch;
        let pool = &self.pool;
        let pace = &pace;
        let groups = drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_groups_unstamped.sql", secs, batch)
        })
        .await?
            + drain(pool, pace, || {
                sqlx::query_file!("src/store/sql/purge_groups.sql", secs, batch)
            })
            .await?;
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_outbox.sql", secs, batch)
        })
        .await?;
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_streaks.sql", secs, batch)
        })
        .await?;
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_commit_pulls.sql", secs, batch)
        })
        .await?;
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_pull_heads.sql", secs, batch)
        })
        .await?;
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_trigger_budgets.sql", secs, batch)
        })
        .await?;
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_jobs.sql", secs, batch)
        })
        .await?;
        // Flips by their time, and never one a rule still counts.
        let flips_secs = secs.max(self.engine.rules().longest_flaky_window().as_secs_f64());
        drain(pool, pace, || {
            sqlx::query_file!("src/store/sql/purge_flips.sql", flips_secs, batch)
        })
        .await?;
        metrics::counter!("runwatch_purged_groups_total").increment(groups);
        Ok(groups)
    }
}
