//! Jobs of runs (docs/design.md "Jobs and steps"): the monotone merge of one job's state
//! and what a trigger lists of them.
//!
//! A job is kept per (repository, run id, job id), outside the groups. An incoming report
//! replaces the kept state only if it is greater in the order (attempt, phase, updated_at,
//! event_id, then the rest of the content), as a run's state does ([`super::merge`]), so
//! any order and any number of copies of the same reports end in the same state.
//! [`JobState::order_key`] writes that order as bytes that compare the same way, so the
//! store merges with one set-based `INSERT … ON CONFLICT … DO UPDATE … WHERE excluded.key
//! > jobs.key` and holds no rule of its own.
//!
//! [`Engine::attach_jobs`] lists, in a trigger, the failed jobs of each failed run (of the
//! run's attempt in the trigger, with their failed steps): the worker calls it where a
//! decision is written to the outbox, `simulate` where it emits a decision, on the jobs
//! known at that moment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Engine;
use crate::event::{Conclusion, Status};
use crate::job::{JobReport, Step, is_zero};
use crate::trigger::{Trigger, TriggerJob};

/// The most failed jobs a trigger lists per run; the others are counted in the run's
/// `jobs_omitted`.
pub const MAX_JOBS_PER_RUN: usize = 20;

/// The most bytes (as JSON) of jobs a trigger lists in all runs together; the jobs that do
/// not fit are counted in their run's `jobs_omitted`. It keeps a trigger well under NATS's
/// default 1 MiB payload whatever its jobs carry.
pub const MAX_TRIGGER_JOB_BYTES: usize = 256 * 1024;

/// A job's key: (repository internal id, run id, job id).
pub type JobKey = (i64, String, String);

/// Jobs by key: what the store loads for a decision, what `simulate` keeps.
pub type JobBook = BTreeMap<JobKey, JobState>;

/// What is kept of one job: the greatest report seen, by [`JobState::order_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub attempt: u32,
    pub name: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<Conclusion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_steps_omitted: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub event_id: String,
}

impl JobState {
    /// The state a report carries.
    pub fn from_report(r: &JobReport) -> JobState {
        let j = &r.job;
        JobState {
            attempt: r.run.attempt,
            name: j.name.clone(),
            status: j.status,
            conclusion: j.conclusion,
            url: j.url.clone(),
            stage: j.stage.clone(),
            failure_reason: j.failure_reason.clone(),
            title: j.title.clone(),
            summary: j.summary.clone(),
            failed_steps: j.failed_steps.clone(),
            failed_steps_omitted: j.failed_steps_omitted,
            runner_labels: j.runner_labels.clone(),
            started_at: j.started_at,
            completed_at: j.completed_at,
            updated_at: j.updated_at,
            event_id: r.event_id.clone(),
        }
    }

    /// The key of a report: (repository internal id, run id, job id).
    pub fn key_of(repository_id: i64, r: &JobReport) -> JobKey {
        (repository_id, r.run.id.clone(), r.job.id.clone())
    }

    /// The merge order as bytes that compare (bytewise, as Postgres compares `bytea`) as the
    /// order does: the attempt (4 bytes, big-endian), the phase (1 byte: queued <
    /// in_progress < completed), `updated_at` (seconds with the sign bit flipped, 8 bytes,
    /// then nanoseconds, 4 bytes), the event id and a NUL (no input string holds one), then
    /// the SHA-256 of the whole state as JSON, so two reports that share everything above
    /// but differ still have the same winner in every order.
    pub fn order_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(4 + 1 + 12 + self.event_id.len() + 1 + 32);
        k.extend_from_slice(&self.attempt.to_be_bytes());
        k.push(match self.status {
            Status::Queued => 0,
            Status::InProgress => 1,
            Status::Completed => 2,
        });
        let secs = self.updated_at.timestamp().cast_unsigned() ^ (1u64 << 63);
        k.extend_from_slice(&secs.to_be_bytes());
        k.extend_from_slice(&self.updated_at.timestamp_subsec_nanos().to_be_bytes());
        k.extend_from_slice(self.event_id.as_bytes());
        k.push(0);
        let content = serde_json::to_vec(self).unwrap_or_default();
        k.extend_from_slice(&Sha256::digest(&content));
        k
    }

    /// Whether the job completed with a conclusion `is_failure` counts.
    fn failed(&self, is_failure: impl Fn(Option<Conclusion>) -> bool) -> bool {
        self.status == Status::Completed && is_failure(self.conclusion)
    }

    fn to_trigger_job(&self, id: &str) -> TriggerJob {
        TriggerJob {
            id: id.to_string(),
            name: self.name.clone(),
            conclusion: self.conclusion,
            url: self.url.clone(),
            stage: self.stage.clone(),
            failure_reason: self.failure_reason.clone(),
            title: self.title.clone(),
            summary: self.summary.clone(),
            failed_steps: self.failed_steps.clone(),
            failed_steps_omitted: self.failed_steps_omitted,
            runner_labels: self.runner_labels.clone(),
            started_at: self.started_at,
            completed_at: self.completed_at,
        }
    }
}

/// Merges `incoming` into `slot`; returns true when the slot changed.
pub fn merge_into(slot: &mut Option<JobState>, incoming: JobState) -> bool {
    match slot {
        Some(current) if incoming.order_key() <= current.order_key() => false,
        _ => {
            *slot = Some(incoming);
            true
        }
    }
}

/// Merges a job into a book.
pub fn merge_book(book: &mut JobBook, key: JobKey, incoming: JobState) -> bool {
    let mut slot = book.remove(&key);
    let changed = merge_into(&mut slot, incoming);
    if let Some(s) = slot {
        book.insert(key, s);
    }
    changed
}

impl Engine {
    /// The runs whose jobs `t` lists: its failed runs (by the failure conclusions of the rule
    /// that decided it), each at its attempt in the trigger, as (repository internal id, run
    /// id, attempt). What the store loads before [`Engine::attach_jobs`].
    pub fn job_runs(&self, t: &Trigger) -> Vec<(i64, String, u32)> {
        let Some(rule) = self.rules().rules().iter().find(|r| r.name == t.rule_name) else {
            return Vec::new();
        };
        t.runs
            .iter()
            .filter(|(_, r)| rule.is_failure(r.conclusion))
            .map(|(id, r)| (t.repository.internal_id, id.clone(), r.attempt))
            .collect()
    }

    /// Lists in `t`, for each failed run, its failed jobs of the run's attempt as `book`
    /// knows them (sorted by name, then id), at most [`MAX_JOBS_PER_RUN`] per run and
    /// [`MAX_TRIGGER_JOB_BYTES`] in all; the jobs left out are counted in the run's
    /// `jobs_omitted`. A job is failed when it completed with a conclusion the rule counts
    /// as a failure. Sets the lists (does not add to them), so calling it again on the same
    /// book changes nothing.
    pub fn attach_jobs(&self, t: &mut Trigger, book: &JobBook) {
        let Some(rule) = self.rules().rules().iter().find(|r| r.name == t.rule_name) else {
            return;
        };
        let repo = t.repository.internal_id;
        let mut budget = MAX_TRIGGER_JOB_BYTES;
        for (run_id, run) in t.runs.iter_mut() {
            run.jobs.clear();
            run.jobs_omitted = 0;
            if !rule.is_failure(run.conclusion) {
                continue;
            }
            let start = (repo, run_id.clone(), String::new());
            let mut failed: Vec<(&String, &JobState)> = book
                .range(start..)
                .take_while(|((r, run, _), _)| *r == repo && run == run_id)
                .filter(|(_, j)| j.attempt == run.attempt && j.failed(|c| rule.is_failure(c)))
                .map(|((_, _, id), j)| (id, j))
                .collect();
            failed.sort_by(|a, b| (&a.1.name, a.0).cmp(&(&b.1.name, b.0)));
            let mut omitted = 0u32;
            for (id, j) in failed {
                let job = j.to_trigger_job(id);
                let size = serde_json::to_vec(&job).map_or(usize::MAX, |b| b.len());
                if run.jobs.len() < MAX_JOBS_PER_RUN && size <= budget {
                    budget -= size;
                    run.jobs.push(job);
                } else {
                    omitted = omitted.saturating_add(1);
                }
            }
            run.jobs_omitted = omitted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(attempt: u32, status: Status, secs: i64, id: &str) -> JobState {
        JobState {
            attempt,
            name: "test".into(),
            status,
            conclusion: (status == Status::Completed).then_some(Conclusion::Failure),
            url: None,
            stage: None,
            failure_reason: None,
            title: None,
            summary: None,
            failed_steps: vec![],
            failed_steps_omitted: 0,
            runner_labels: vec![],
            started_at: None,
            completed_at: None,
            updated_at: DateTime::from_timestamp(secs, 0).unwrap(),
            event_id: id.into(),
        }
    }

    #[test]
    fn the_key_orders_as_the_merge_does() {
        let cases = [
            (
                js(1, Status::Completed, 10, "a"),
                js(2, Status::Queued, 5, "a"),
            ),
            (
                js(1, Status::InProgress, 50, "z"),
                js(1, Status::Completed, 5, "a"),
            ),
            (
                js(1, Status::Queued, -5, "z"),
                js(1, Status::Queued, 5, "a"),
            ),
            (
                js(1, Status::Queued, 5, "a"),
                js(1, Status::Queued, 5, "ab"),
            ),
            (
                js(1, Status::Queued, 5, "ab"),
                js(1, Status::Queued, 5, "b"),
            ),
        ];
        for (lo, hi) in cases {
            assert!(lo.order_key() < hi.order_key(), "{lo:?} < {hi:?}");
        }
        let mut later = js(1, Status::Queued, 5, "a");
        later.updated_at += chrono::Duration::nanoseconds(1);
        assert!(js(1, Status::Queued, 5, "a").order_key() < later.order_key());
    }

    #[test]
    fn a_late_in_progress_does_not_regress_and_content_converges() {
        let mut slot = None;
        assert!(merge_into(&mut slot, js(1, Status::Completed, 10, "b")));
        assert!(!merge_into(&mut slot, js(1, Status::InProgress, 20, "c")));
        assert!(!merge_into(&mut slot, js(1, Status::Completed, 10, "b")));
        let a = js(1, Status::Completed, 10, "same");
        let mut b = a.clone();
        b.name = "other".into();
        let (mut x, mut y) = (None, None);
        merge_into(&mut x, a.clone());
        merge_into(&mut x, b.clone());
        merge_into(&mut y, b);
        merge_into(&mut y, a);
        assert_eq!(x, y);
    }
}
