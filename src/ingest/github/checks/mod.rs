//! GitHub's other CI reports, pure: `check_suite`, `check_run` (GitHub Apps: Jenkins,
//! CircleCI, Buildkite, bots…) and `status` (the older commit Statuses API), normalized into
//! `runwatch.workflow_run.v1` events (docs/webhooks.md has the full tables).
//!
//! - `check_suite`: one run per suite: run id = the suite id, workflow = the app's name,
//!   status and conclusion from the suite, one event per pull request of `pull_requests`
//!   (those whose base is this repository), `updated_at` = the suite's.
//! - `check_run` (with `[ingest.github] checks = "run"`): one run per check name within its
//!   suite: run id = `<suite id>/<check name>` (a re-requested check run is a new check run
//!   with the same name: it replaces the old one), workflow = `<app name> / <check name>`,
//!   `updated_at` = `completed_at`, else `started_at`, else the suite's `updated_at`.
//!   A completed check run with an `output.title` or `output.summary` also becomes a
//!   `runwatch.workflow_job.v1` job of that run (the summary cut to 1 KiB), so a trigger
//!   shows what the check reported.
//! - In the default `checks = "suite"` mode `check_run` deliveries are ignored, and in
//!   `run` mode `check_suite` ones are: one CI report is never counted twice.
//! - Suites and runs of the apps in `ignore_check_apps` (default: `github-actions`, whose
//!   runs already arrive as `workflow_run`) are ignored.
//! - `status`: one run per (commit, context): run id = `status:<context>`, workflow = the
//!   context, `pending` → queued, `success` → success, `failure` → failure, `error` →
//!   `status_error` (default failure); branch = the single branch whose head is the commit,
//!   if exactly one is; no pull request (the worker's commit association supplies it).
//!
//! Attempt: none of these carries a re-run counter (a re-requested suite keeps its id; a
//! re-run Jenkins job posts a new status for the same context), so the attempt is
//! [`crate::ingest::report_attempt`] of `updated_at`: the latest report of a run wins the merge, and
//! a report after a trigger counts as a re-run for `refire_on_rerun`. A `rerequested`
//! suite or check run is `queued` at one attempt more ([`rerequest_attempt`]): GitHub sends
//! it with the `updated_at` of the report it re-requests, and it must supersede that report.

use chrono::{DateTime, Utc};

mod payload;

use super::payload::{Repo, per_pull_request, status_and_conclusion};
use crate::event::{Conclusion, Event, Provider, Run, SCHEMA, Status};
use crate::ingest::config::{CheckGranularity, GithubOptions};
use crate::ingest::{NormalizeError, Normalized, report_attempt};
use payload::{RunPayload, StatusPayload, SuitePayload, app_ignored, app_name, pull_numbers};

/// The attempt of a `rerequested` suite or check run dated `t`: one more than the report at
/// `t` it re-requests (GitHub gives both the same `updated_at`), so it supersedes it
/// whatever the order; the re-run's own reports, dated later, supersede it in turn. (A
/// re-run reported done within the same second as its re-request ties with it and stays
/// `queued` until its next report.)
pub(super) fn rerequest_attempt(t: DateTime<Utc>) -> u32 {
    report_attempt(t).saturating_add(1)
}

fn ignored(kind: &str) -> Result<Normalized, NormalizeError> {
    Ok(Normalized::Ignored {
        kind: kind.to_string(),
    })
}

/// A `check_suite` delivery.
pub(super) fn check_suite(
    delivery: &str,
    body: &[u8],
    options: &GithubOptions,
) -> Result<Normalized, NormalizeError> {
    if options.checks != CheckGranularity::Suite {
        return ignored("check_suite");
    }
    let p: SuitePayload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    let s = p.check_suite;
    if app_ignored(s.app.as_ref(), options) {
        return ignored("check_suite");
    }
    // `requested` / `rerequested` deliveries may carry the suite's previous status.
    let rerequested = p.action.as_deref() == Some("rerequested");
    let (status, conclusion) = match p.action.as_deref() {
        Some("requested" | "rerequested") => (Status::Queued, None),
        _ => status_and_conclusion(
            s.status.as_deref().or(p.action.as_deref()),
            s.conclusion.as_deref(),
            ("check_suite.status", "check_suite.conclusion"),
        )?,
    };
    let updated_at = s
        .updated_at
        .ok_or(NormalizeError::Field("check_suite.updated_at"))?;
    let url = p.repository.html_url.as_ref().map(|r| {
        format!(
            "{}/commit/{}/checks?check_suite_id={}",
            r.trim_end_matches('/'),
            s.head_sha,
            s.id
        )
    });
    let prs = pull_numbers(&s.pull_requests, p.repository.id);
    let base = event(
        delivery,
        "check_suite",
        p.repository,
        s.head_sha,
        s.head_branch,
        Run {
            id: s.id.to_string(),
            attempt: if rerequested {
                rerequest_attempt(updated_at)
            } else {
                report_attempt(updated_at)
            },
            workflow: app_name(s.app.as_ref()),
            status,
            conclusion,
            url,
            updated_at,
        },
    );
    Ok(Normalized::Events(per_pull_request(base, delivery, prs)))
}

/// A `check_run` delivery.
pub(super) fn check_run(
    delivery: &str,
    body: &[u8],
    options: &GithubOptions,
) -> Result<Normalized, NormalizeError> {
    if options.checks != CheckGranularity::Run {
        return ignored("check_run");
    }
    let p: RunPayload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    let c = p.check_run;
    let app = c.app.as_ref().or(c.check_suite.app.as_ref());
    if app_ignored(app, options) {
        return ignored("check_run");
    }
    if c.name.trim().is_empty() {
        return Err(NormalizeError::Field("check_run.name"));
    }
    // A `rerequested` delivery carries the check run it re-requests, completed.
    let rerequested = p.action.as_deref() == Some("rerequested");
    let (status, conclusion) = if rerequested {
        (Status::Queued, None)
    } else {
        status_and_conclusion(
            c.status.as_deref(),
            c.conclusion.as_deref(),
            ("check_run.status", "check_run.conclusion"),
        )?
    };
    let updated_at = c
        .completed_at
        .or(c.started_at)
        .or(c.check_suite.updated_at)
        .ok_or(NormalizeError::Field("check_run.started_at"))?;
    let prs = pull_numbers(
        if c.pull_requests.is_empty() {
            &c.check_suite.pull_requests
        } else {
            &c.pull_requests
        },
        p.repository.id,
    );
    let base = event(
        delivery,
        "check_run",
        p.repository,
        c.head_sha,
        c.check_suite.head_branch,
        Run {
            id: format!("{}/{}", c.check_suite.id, c.name),
            attempt: if rerequested {
                rerequest_attempt(updated_at)
            } else {
                report_attempt(updated_at)
            },
            workflow: format!("{} / {}", app_name(app), c.name),
            status,
            conclusion,
            url: c.html_url.clone(),
            updated_at,
        },
    );
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (title, summary) = c
        .output
        .map_or((None, None), |o| (nonempty(o.title), nonempty(o.summary)));
    let events = per_pull_request(base, delivery, prs);
    // A completed check run's output, as the one job of its run (its summary cut to 1 KiB
    // by `JobReport::fit`): what a trigger shows of a failed check run.
    let job = match (c.id, events.first()) {
        (Some(id), Some(run))
            if status == Status::Completed && (title.is_some() || summary.is_some()) =>
        {
            crate::job::JobReport {
                schema: crate::job::JOB_SCHEMA.to_string(),
                event_id: format!("{delivery}:output"),
                provider: Provider::Github,
                repository: run.repository.clone(),
                commit_sha: run.commit_sha.clone(),
                run: crate::job::JobRun {
                    id: run.run.id.clone(),
                    attempt: run.run.attempt,
                    workflow: Some(run.run.workflow.clone()),
                },
                job: crate::job::Job {
                    id: id.to_string(),
                    name: c.name,
                    status,
                    conclusion,
                    url: c.html_url,
                    stage: None,
                    failure_reason: None,
                    title,
                    summary,
                    failed_steps: Vec::new(),
                    failed_steps_omitted: 0,
                    runner_labels: Vec::new(),
                    started_at: c.started_at,
                    completed_at: c.completed_at,
                    updated_at,
                },
                metadata: serde_json::Value::Null,
            }
        }
        _ => return Ok(Normalized::Events(events)),
    };
    Ok(Normalized::RunsAndJobs {
        events,
        jobs: vec![job],
    })
}

/// A `status` delivery.
pub(super) fn status(
    delivery: &str,
    body: &[u8],
    options: &GithubOptions,
) -> Result<Normalized, NormalizeError> {
    let p: StatusPayload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    if p.context.trim().is_empty() {
        return Err(NormalizeError::Field("context"));
    }
    let (status, conclusion) = match p.state.as_str() {
        "pending" => (Status::Queued, None),
        "success" => (Status::Completed, Some(Conclusion::Success)),
        "failure" => (Status::Completed, Some(Conclusion::Failure)),
        "error" => (Status::Completed, Some(options.status_error)),
        other => {
            return Err(NormalizeError::Value {
                field: "state",
                value: other.chars().take(64).collect(),
            });
        }
    };
    let mut heads = p.branches.iter().filter(|b| b.commit.sha == p.sha);
    let branch = match (heads.next(), heads.next()) {
        (Some(one), None) => Some(one.name.clone()),
        _ => None,
    };
    Ok(Normalized::Events(vec![event(
        delivery,
        "status",
        p.repository,
        p.sha,
        branch,
        Run {
            id: format!("status:{}", p.context),
            attempt: report_attempt(p.updated_at),
            workflow: p.context,
            status,
            conclusion,
            url: p.target_url.filter(|u| !u.trim().is_empty()),
            updated_at: p.updated_at,
        },
    )]))
}

/// The event of one GitHub delivery (`metadata.github_event` names its kind), before it
/// is copied per pull request.
fn event(
    delivery: &str,
    github_event: &str,
    repository: Repo,
    commit_sha: String,
    branch: Option<String>,
    run: Run,
) -> Event {
    let mut metadata = serde_json::Map::new();
    metadata.insert("github_event".into(), github_event.into());
    Event {
        schema: SCHEMA.to_string(),
        event_id: delivery.to_string(),
        provider: Provider::Github,
        repository: repository.into_repository(),
        commit_sha,
        branch,
        pr_number: None,
        run,
        metadata: serde_json::Value::Object(metadata),
    }
}

#[cfg(test)]
mod tests;
