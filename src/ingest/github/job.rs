//! `workflow_job` deliveries: a `runwatch.workflow_job.v1` job of its run.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::payload::{Repo, status_and_conclusion};
use crate::event::Provider;
use crate::ingest::{NormalizeError, Normalized};

#[derive(Deserialize)]
struct JobPayload {
    #[serde(default)]
    action: Option<String>,
    repository: Repo,
    workflow_job: WorkflowJob,
}

#[derive(Deserialize)]
struct WorkflowJob {
    id: u64,
    run_id: u64,
    #[serde(default)]
    run_attempt: Option<u32>,
    head_sha: String,
    #[serde(default)]
    workflow_name: Option<String>,
    name: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    steps: Vec<JobStep>,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
struct JobStep {
    name: String,
    #[serde(default)]
    number: Option<u32>,
    #[serde(default)]
    conclusion: Option<String>,
}

/// A `workflow_job` delivery (`queued`, `waiting`, `in_progress`, `completed`) becomes a
/// `runwatch.workflow_job.v1` message: job id, name, status and conclusion as for a run, run
/// = (`run_id`, `run_attempt`), `html_url`, the steps whose conclusion is `failure` or
/// `timed_out` (number and name), the runner `labels`, `started_at`, `completed_at`;
/// `updated_at` = `completed_at`, else `started_at`, else `created_at`. The event id is the
/// delivery id. Ingest cuts it to the bounds of the schema ([`crate::job::JobReport::fit`]).
pub(super) fn workflow_job(delivery: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
    let p: JobPayload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    let wj = p.workflow_job;
    let (status, conclusion) = status_and_conclusion(
        wj.status.as_deref().or(p.action.as_deref()),
        wj.conclusion.as_deref(),
        ("workflow_job.status", "workflow_job.conclusion"),
    )?;
    let updated_at = wj
        .completed_at
        .or(wj.started_at)
        .or(wj.created_at)
        .ok_or(NormalizeError::Field("workflow_job.started_at"))?;
    let failed_steps = wj
        .steps
        .into_iter()
        .filter(|s| matches!(s.conclusion.as_deref(), Some("failure" | "timed_out")))
        .map(|s| crate::job::Step {
            number: s.number,
            name: s.name,
        })
        .collect();
    Ok(Normalized::RunsAndJobs {
        events: Vec::new(),
        jobs: vec![crate::job::JobReport {
            schema: crate::job::JOB_SCHEMA.to_string(),
            event_id: delivery.to_string(),
            provider: Provider::Github,
            repository: p.repository.into_repository(),
            commit_sha: wj.head_sha,
            run: crate::job::JobRun {
                id: wj.run_id.to_string(),
                attempt: wj.run_attempt.unwrap_or(1).max(1),
                workflow: wj.workflow_name.filter(|w| !w.trim().is_empty()),
            },
            job: crate::job::Job {
                id: wj.id.to_string(),
                name: wj.name,
                status,
                conclusion,
                url: wj.html_url,
                stage: None,
                failure_reason: None,
                title: None,
                summary: None,
                failed_steps,
                failed_steps_omitted: 0,
                runner_labels: wj.labels,
                started_at: wj.started_at,
                completed_at: wj.completed_at,
                updated_at,
            },
            metadata: serde_json::Value::Null,
        }],
    })
}
