//! The third input message, schema `runwatch.workflow_job.v1`: one job of a run as a
//! provider reported it (GitHub `workflow_job`, a GitLab pipeline's `builds`, a Buildkite
//! `job.finished`, a GitHub check run's output). A job never creates a group: it is kept per
//! (repository, run id, job id) beside the groups, merged like a run
//! ([`crate::engine::jobs`]), and a trigger lists the failed jobs of its failed runs
//! (docs/design.md "Jobs and steps").
//!
//! Bounds (the schema `schemas/workflow_job.v1.json` states them): every string within
//! `limits.max_string_bytes`, at most [`MAX_FAILED_STEPS`] failed steps, at most
//! [`MAX_RUNNER_LABELS`] runner labels, `summary` at most [`MAX_SUMMARY_BYTES`]. The decoder
//! refuses a message over them (`oversize`); ingest cuts what it normalizes to fit first
//! ([`JobReport::fit`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{self, Conclusion, Limits, Provider, RejectCode, Rejection, Repository, Status};

/// The schema name of a [`JobReport`].
pub const JOB_SCHEMA: &str = "runwatch.workflow_job.v1";

/// The most failed steps a job message lists.
pub const MAX_FAILED_STEPS: usize = 50;

/// The most runner labels a job message lists.
pub const MAX_RUNNER_LABELS: usize = 20;

/// The longest `job.summary`, in bytes of UTF-8.
pub const MAX_SUMMARY_BYTES: usize = 1024;

fn default_attempt() -> u32 {
    1
}

/// The run a job belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// The run's id, as in `runwatch.workflow_run.v1` (`run.id`).
    pub id: String,
    /// The run's attempt the job ran in.
    #[serde(default = "default_attempt")]
    pub attempt: u32,
    /// The run's workflow, when the provider names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

/// One failed step of a job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Step {
    /// The step's number in its job (GitHub's `number`), when the provider numbers steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    pub name: String,
}

/// A job's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub status: Status,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    /// Where a person sees the job (GitHub `html_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// GitLab: the build's stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// GitLab's `failure_reason`, Buildkite's exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// A check run's `output.title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A check run's `output.summary`, at most [`MAX_SUMMARY_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The failed steps, at most [`MAX_FAILED_STEPS`], in the job's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_steps: Vec<Step>,
    /// How many failed steps were left out of `failed_steps`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_steps_omitted: u32,
    /// The runner's labels, at most [`MAX_RUNNER_LABELS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When the provider recorded this state (orders the merge, moves the event clock).
    pub updated_at: DateTime<Utc>,
}

pub fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One job message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub schema: String,
    pub event_id: String,
    pub provider: Provider,
    pub repository: Repository,
    pub commit_sha: String,
    pub run: JobRun,
    pub job: Job,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// Control characters replaced by U+FFFD (names are printed one per line).
fn printable(s: &mut String) {
    if s.chars().any(char::is_control) {
        *s = s
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
    }
}

impl JobReport {
    /// Cuts what a provider sent to the bounds the decoder enforces: the names, labels, title
    /// and reason to `limits.max_string_bytes` (control characters in names and labels
    /// replaced by U+FFFD), the summary to [`MAX_SUMMARY_BYTES`], the failed steps to
    /// [`MAX_FAILED_STEPS`] and the labels to [`MAX_RUNNER_LABELS`], and then, while the
    /// message is still over `limits.max_message_bytes`, the last failed steps. Steps left out
    /// are counted in `failed_steps_omitted`. Ingest calls it on what it normalizes.
    pub fn fit(&mut self, limits: &Limits) {
        let max = limits.max_string_bytes;
        let j = &mut self.job;
        for s in [&mut j.name]
            .into_iter()
            .chain(j.stage.as_mut())
            .chain(j.failure_reason.as_mut())
            .chain(j.runner_labels.iter_mut())
            .chain(j.failed_steps.iter_mut().map(|s| &mut s.name))
        {
            printable(s);
            truncate(s, max);
        }
        for s in [j.title.as_mut(), j.url.as_mut()].into_iter().flatten() {
            truncate(s, max);
        }
        if let Some(s) = j.summary.as_mut() {
            truncate(s, MAX_SUMMARY_BYTES.min(max));
        }
        if let Some(w) = self.run.workflow.as_mut() {
            printable(w);
            truncate(w, max);
        }
        j.runner_labels.truncate(MAX_RUNNER_LABELS);
        let omit = |j: &mut Job, keep: usize| {
            let dropped = j.failed_steps.len().saturating_sub(keep);
            j.failed_steps.truncate(keep);
            j.failed_steps_omitted = j
                .failed_steps_omitted
                .saturating_add(u32::try_from(dropped).unwrap_or(u32::MAX));
        };
        omit(j, MAX_FAILED_STEPS);
        while !self.job.failed_steps.is_empty()
            && serde_json::to_vec(self).map_or(0, |b| b.len()) > limits.max_message_bytes
        {
            let keep = self.job.failed_steps.len() - 1;
            omit(&mut self.job, keep);
        }
    }
}

/// Validates a decoded job message (the size of the message was checked by the caller).
pub(crate) fn validate(report: JobReport, limits: &Limits) -> Result<JobReport, Rejection> {
    let r = &report;
    let j = &r.job;
    event::check_required(&[
        ("event_id", &r.event_id),
        ("repository.owner", &r.repository.owner),
        ("repository.name", &r.repository.name),
        ("commit_sha", &r.commit_sha),
        ("run.id", &r.run.id),
        ("job.id", &j.id),
        ("job.name", &j.name),
    ])?;
    let mut strings: Vec<(String, Option<&String>)> = vec![
        ("event_id".into(), Some(&r.event_id)),
        ("repository.owner".into(), Some(&r.repository.owner)),
        ("repository.name".into(), Some(&r.repository.name)),
        ("repository.id".into(), r.repository.id.as_ref()),
        ("commit_sha".into(), Some(&r.commit_sha)),
        ("run.id".into(), Some(&r.run.id)),
        ("run.workflow".into(), r.run.workflow.as_ref()),
        ("job.id".into(), Some(&j.id)),
        ("job.name".into(), Some(&j.name)),
        ("job.url".into(), j.url.as_ref()),
        ("job.stage".into(), j.stage.as_ref()),
        ("job.failure_reason".into(), j.failure_reason.as_ref()),
        ("job.title".into(), j.title.as_ref()),
        ("job.summary".into(), j.summary.as_ref()),
    ];
    for (i, s) in j.failed_steps.iter().enumerate() {
        strings.push((format!("job.failed_steps[{i}].name"), Some(&s.name)));
    }
    for (i, l) in j.runner_labels.iter().enumerate() {
        strings.push((format!("job.runner_labels[{i}]"), Some(l)));
    }
    let fields: Vec<(&str, Option<&String>)> =
        strings.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    event::check_strings(&fields, limits)?;
    event::check_event_id(&r.event_id)?;
    // Everything that is printed (explain, logs) holds no control character; the URL, the
    // title and the summary are carried, never printed as text.
    let printed: Vec<(&str, Option<&String>)> = fields
        .iter()
        .filter(|(k, _)| !matches!(*k, "event_id" | "job.url" | "job.title" | "job.summary"))
        .copied()
        .collect();
    event::check_no_controls(&printed)?;
    let over = |field: &str, n: usize, max: usize| {
        Err(Rejection::new(
            RejectCode::Oversize,
            format!("{field} holds {n}, the limit is {max}"),
        ))
    };
    if j.failed_steps.len() > MAX_FAILED_STEPS {
        return over("job.failed_steps", j.failed_steps.len(), MAX_FAILED_STEPS);
    }
    if j.runner_labels.len() > MAX_RUNNER_LABELS {
        return over(
            "job.runner_labels",
            j.runner_labels.len(),
            MAX_RUNNER_LABELS,
        );
    }
    if let Some(s) = &j.summary
        && s.len() > MAX_SUMMARY_BYTES
    {
        return over("job.summary (bytes)", s.len(), MAX_SUMMARY_BYTES);
    }
    if r.run.attempt == 0 {
        return Err(Rejection::new(
            RejectCode::Invalid,
            "run.attempt must be at least 1",
        ));
    }
    if j.status == Status::Completed && j.conclusion.is_none() {
        return Err(Rejection::new(
            RejectCode::Invalid,
            "job.conclusion is required when job.status is completed",
        ));
    }
    event::check_time("job.updated_at", j.updated_at)?;
    for (field, t) in [
        ("job.started_at", j.started_at),
        ("job.completed_at", j.completed_at),
    ] {
        if let Some(t) = t {
            event::check_time(field, t)?;
        }
    }
    event::check_metadata(&r.metadata, limits)?;
    let mut report = report;
    if report.job.status != Status::Completed {
        // As for runs: a conclusion before completion means nothing.
        report.job.conclusion = None;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull_request::{Input, decode_input};

    pub(crate) const JOB: &str = r#"{"schema":"runwatch.workflow_job.v1","event_id":"j1","provider":"github",
      "repository":{"owner":"o","name":"r","id":"7"},"commit_sha":"abc",
      "run":{"id":"99","attempt":1,"workflow":"ci"},
      "job":{"id":"5","name":"test","status":"completed","conclusion":"failure",
        "url":"https://x/5","failed_steps":[{"number":3,"name":"Run tests"}],
        "runner_labels":["ubuntu-latest"],"started_at":"2026-01-01T00:00:00Z",
        "completed_at":"2026-01-01T00:01:00Z","updated_at":"2026-01-01T00:01:00Z"}}"#;

    fn code(s: &str) -> RejectCode {
        decode_input(s.as_bytes(), &Limits::default())
            .unwrap_err()
            .code
    }

    #[test]
    fn a_job_decodes_and_hostile_ones_are_refused() {
        let Ok(Input::Job(j)) = decode_input(JOB.as_bytes(), &Limits::default()) else {
            panic!("not a job")
        };
        assert_eq!(j.job.failed_steps[0].name, "Run tests");
        assert_eq!(j.run.attempt, 1);
        assert_eq!(
            code(&JOB.replace("\"completed\",\"conclusion\"", "\"weird\",\"conclusion\"")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&JOB.replace(",\"conclusion\":\"failure\"", "")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&JOB.replace("Run tests", &"x".repeat(2000))),
            RejectCode::Oversize
        );
        assert_eq!(
            code(&JOB.replace("Run tests", "Run\\u001btests")),
            RejectCode::Invalid
        );
        assert_eq!(code(&JOB.replace("\"5\"", "\"\"")), RejectCode::Invalid);
        let many: Vec<String> = (0..51)
            .map(|i| format!("{{\"number\":{i},\"name\":\"s{i}\"}}"))
            .collect();
        assert_eq!(
            code(&JOB.replace(
                "[{\"number\":3,\"name\":\"Run tests\"}]",
                &format!("[{}]", many.join(","))
            )),
            RejectCode::Oversize
        );
        let labels: Vec<String> = (0..21).map(|i| format!("\"l{i}\"")).collect();
        assert_eq!(
            code(&JOB.replace("[\"ubuntu-latest\"]", &format!("[{}]", labels.join(",")))),
            RejectCode::Oversize
        );
        assert_eq!(
            code(&JOB.replace(
                "\"url\"",
                &format!("\"summary\":\"{}\",\"url\"", "s".repeat(1025))
            )),
            RejectCode::Oversize
        );
        assert_eq!(
            code(&JOB.replace("\"attempt\":1", "\"attempt\":0")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&JOB.replace("2026-01-01T00:01:00Z\"}}", "+10000-01-01T00:00:00Z\"}}")),
            RejectCode::Invalid
        );
    }

    #[test]
    fn fit_cuts_to_the_bounds_on_char_boundaries() {
        let Ok(Input::Job(mut j)) = decode_input(JOB.as_bytes(), &Limits::default()) else {
            panic!("not a job")
        };
        j.job.name = "é".repeat(1000);
        j.job.summary = Some("€".repeat(1000));
        j.job.failed_steps = (0..70)
            .map(|i| Step {
                number: Some(i),
                name: format!("step\n{i}"),
            })
            .collect();
        j.job.runner_labels = (0..30).map(|i| format!("l{i}")).collect();
        let limits = Limits::default();
        j.fit(&limits);
        assert_eq!(j.job.name.len(), 1024);
        // 341 three-byte characters: cut before the one that would cross 1024 bytes.
        assert_eq!(j.job.summary.as_ref().unwrap().len(), 1023);
        assert_eq!(j.job.failed_steps.len(), MAX_FAILED_STEPS);
        assert_eq!(j.job.failed_steps_omitted, 20);
        assert_eq!(j.job.failed_steps[0].name, "step\u{fffd}0");
        assert_eq!(j.job.runner_labels.len(), MAX_RUNNER_LABELS);
        let bytes = serde_json::to_vec(&j).unwrap();
        assert!(matches!(decode_input(&bytes, &limits), Ok(Input::Job(_))));
        // Over the message size: the last steps go.
        let small = Limits {
            max_message_bytes: 4096,
            ..limits
        };
        j.fit(&small);
        let bytes = serde_json::to_vec(&j).unwrap();
        assert!(bytes.len() <= 4096, "{}", bytes.len());
        assert!(j.job.failed_steps_omitted > 20);
    }
}
