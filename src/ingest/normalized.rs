//! What a delivery normalizes to, why it may not, and the time-based attempt number of a
//! report.

use crate::event::{Event, Limits, Rejection, decode};

/// The attempt of a report from a CI that keeps no re-run counter (commit statuses, check
/// suites and runs, CircleCI workflows): 1 + the whole seconds from 2000-01-01T00:00:00Z to
/// `t` (1 before that, `u32::MAX` after 2136). A later report of the same run has a higher
/// attempt, so it replaces the earlier one in the merge (a re-run's `queued` replaces the
/// previous `completed`), deterministically from the delivery alone.
pub fn report_attempt(t: chrono::DateTime<chrono::Utc>) -> u32 {
    const EPOCH_2000: i64 = 946_684_800;
    let secs = t.timestamp().saturating_sub(EPOCH_2000).max(0);
    u32::try_from(secs).unwrap_or(u32::MAX).saturating_add(1)
}

/// What a delivery normalizes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    /// Events to publish (several for a GitHub run with several pull requests).
    Events(Vec<Event>),
    /// A pull request's head commit (`runwatch.pull_request.v1`), from a GitHub
    /// `pull_request` delivery.
    PullRequest(Box<crate::pull_request::PullRequestLink>),
    /// Jobs (`runwatch.workflow_job.v1`), and the run events of the same delivery (a GitLab
    /// pipeline with failed builds, a check run with an output; none for GitHub
    /// `workflow_job`). The jobs are published first, so a worker that reads the stream in
    /// order knows them when the run's event decides.
    RunsAndJobs {
        events: Vec<Event>,
        jobs: Vec<crate::job::JobReport>,
    },
    /// GitHub's `ping`: answered 200, nothing published.
    Ping,
    /// An event type runwatch does not use: accepted (202), counted, not published.
    Ignored {
        /// The event type (`X-GitHub-Event` / `X-Gitlab-Event`).
        kind: String,
    },
}

/// Why a delivery cannot be normalized (a 400, with this text as the reason).
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// The body is not JSON of the expected shape (serde names the field and position).
    #[error("body: {0}")]
    Json(serde_json::Error),
    /// A header the provider always sends is missing or empty.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A required field is missing or empty.
    #[error("missing field `{0}`")]
    Field(&'static str),
    /// A field has a value runwatch does not know.
    #[error("field `{field}` has an unknown value {value:?}")]
    Value {
        /// The field.
        field: &'static str,
        /// The value (at most 64 characters).
        value: String,
    },
    /// The normalized event breaks the event contract (e.g. a string over the limit).
    #[error("normalized event refused: {0}")]
    Rejected(#[from] Rejection),
}

/// Cuts each job to the bounds ([`crate::job::JobReport::fit`]), serializes it and checks it
/// against the message contract, returning the bytes to publish.
pub fn encode_jobs(
    jobs: Vec<crate::job::JobReport>,
    limits: &Limits,
) -> Result<Vec<(crate::job::JobReport, Vec<u8>)>, NormalizeError> {
    let mut out = Vec::with_capacity(jobs.len());
    for mut j in jobs {
        j.fit(limits);
        let bytes = serde_json::to_vec(&j).map_err(NormalizeError::Json)?;
        crate::pull_request::decode_input(&bytes, limits)?;
        out.push((j, bytes));
    }
    Ok(out)
}

/// Serializes events and checks each against the event contract (what the worker will
/// accept), returning the bytes to publish.
pub fn encode_events(
    events: &[Event],
    limits: &Limits,
) -> Result<Vec<(Event, Vec<u8>)>, NormalizeError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let bytes = serde_json::to_vec(e).map_err(NormalizeError::Json)?;
        let checked = decode(&bytes, limits)?;
        out.push((checked, bytes));
    }
    Ok(out)
}

/// Serializes a pull request's head and checks it against the message contract.
pub fn encode_link(
    link: &crate::pull_request::PullRequestLink,
    limits: &Limits,
) -> Result<Vec<u8>, NormalizeError> {
    let bytes = serde_json::to_vec(link).map_err(NormalizeError::Json)?;
    crate::pull_request::decode_input(&bytes, limits)?;
    Ok(bytes)
}
