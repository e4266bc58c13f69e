//! Jobs of runs in Postgres (table `jobs`, docs/design.md "Jobs and steps"): written with
//! one set-based upsert per batch that keeps the greater state by the engine's order key,
//! and loaded, for the failed runs of the decisions a transaction writes, in one query. The
//! rules (which runs, which jobs, how many) are the engine's ([`crate::engine::jobs`]).

use std::collections::BTreeSet;

use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use tracing::warn;

use super::lenient::Lenient;
use super::{Store, StoreError};
use crate::engine::jobs::{JobBook, JobKey, JobState, merge_book};
use crate::trigger::Trigger;

/// The jobs of a record transaction's batch, each with its position in the batch, and the
/// position of the input at which each decided trigger was taken: a trigger lists the
/// batch's jobs that came before it (as `simulate` does), and every job of earlier batches.
#[derive(Debug, Default)]
pub(super) struct BatchJobs {
    pub(super) jobs: Vec<(usize, JobKey, JobState)>,
    pub(super) trigger_at: Vec<usize>,
}

impl BatchJobs {
    /// Marks the triggers decided so far (`decided` of them in all) as taken at `position`.
    pub(super) fn decided_until(&mut self, decided: usize, position: usize) {
        while self.trigger_at.len() < decided {
            self.trigger_at.push(position);
        }
    }
}

impl Store {
    /// Lists in each decided trigger the failed jobs of its failed runs: the jobs stored by
    /// earlier transactions (one query), merged with this batch's jobs that came before the
    /// decision.
    pub(super) async fn attach_jobs(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        decided: &mut [(i64, Trigger)],
        batch: &BatchJobs,
    ) -> Result<(), StoreError> {
        let wants: BTreeSet<(i64, String, u32)> = decided
            .iter()
            .flat_map(|(_, t)| self.engine.job_runs(t))
            .collect();
        if wants.is_empty() {
            return Ok(());
        }
        let stored = load(tx, &wants).await?;
        for (k, (_, t)) in decided.iter_mut().enumerate() {
            let at = batch.trigger_at.get(k).copied().unwrap_or(usize::MAX);
            let mut book = stored.clone();
            for (position, key, job) in &batch.jobs {
                if *position < at {
                    merge_book(&mut book, key.clone(), job.clone());
                }
            }
            self.engine.attach_jobs(t, &book);
        }
        Ok(())
    }
}

/// The stored jobs of these (repository, run, attempt), by primary-key prefix.
async fn load(
    tx: &mut Transaction<'static, Postgres>,
    wants: &BTreeSet<(i64, String, u32)>,
) -> Result<JobBook, StoreError> {
    let (mut r, mut run, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for (repo, id, attempt) in wants {
        r.push(*repo);
        run.push(id.clone());
        a.push(i64::from(*attempt));
    }
    let rows = sqlx::query!(
        r#"SELECT j.repository_id, j.run_id, j.job_id, j.job AS "job: Lenient<JobState>" FROM jobs j
         JOIN UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS u(r, run, a)
           ON j.repository_id = u.r AND j.run_id = u.run AND j.attempt = u.a"#,
        &r,
        &run,
        &a
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut book = JobBook::new();
    for row in rows {
        let key: JobKey = (row.repository_id, row.run_id, row.job_id);
        match row.job.0 {
            Ok(j) => {
                book.insert(key, j);
            }
            Err(source) => {
                // Not listed; the decision goes on without it.
                metrics::counter!("runwatch_corrupt_rows_total", "op" => "jobs").increment(1);
                warn!(repository = key.0, run = %key.1, job = %key.2, detail = %source,
                    "stored job cannot be decoded: left out of the trigger");
            }
        }
    }
    Ok(book)
}

/// Writes the batch's jobs: merged in memory first (one row per key), then one upsert that
/// replaces a stored job only when the engine's order key is greater.
pub(super) async fn write(
    tx: &mut Transaction<'static, Postgres>,
    batch: &BatchJobs,
) -> Result<(), StoreError> {
    if batch.jobs.is_empty() {
        return Ok(());
    }
    let mut merged = JobBook::new();
    for (_, key, job) in &batch.jobs {
        merge_book(&mut merged, key.clone(), job.clone());
    }
    let (mut r, mut run, mut id, mut a, mut k, mut j) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for ((repo, run_id, job_id), job) in &merged {
        r.push(*repo);
        run.push(run_id.clone());
        id.push(job_id.clone());
        a.push(i64::from(job.attempt));
        k.push(job.order_key());
        j.push(Json(job));
    }
    sqlx::query!(
        "INSERT INTO jobs (repository_id, run_id, job_id, attempt, order_key, job)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::jsonb[])
         ON CONFLICT (repository_id, run_id, job_id) DO UPDATE
           SET attempt = excluded.attempt, order_key = excluded.order_key, job = excluded.job,
               updated_at = now()
           WHERE excluded.order_key > jobs.order_key",
        &r,
        &run,
        &id,
        &a,
        &k,
        &j as _
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
