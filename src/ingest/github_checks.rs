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
//! [`super::report_attempt`] of `updated_at`: the latest report of a run wins the merge, and
//! a report after a trigger counts as a re-run for `refire_on_rerun`. A `rerequested`
//! suite or check run is `queued` at one attempt more ([`rerequest_attempt`]): GitHub sends
//! it with the `updated_at` of the report it re-requests, and it must supersede that report.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::config::{CheckGranularity, GithubOptions};
use super::github_payload::{Repo, map_conclusion, map_status, per_pull_request};
use super::{NormalizeError, Normalized, report_attempt};
use crate::event::{Conclusion, Event, Provider, Run, SCHEMA, Status};

#[derive(Deserialize)]
struct App {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct PullRef {
    number: u64,
    #[serde(default)]
    base: Option<PullBase>,
}

#[derive(Deserialize)]
struct PullBase {
    #[serde(default)]
    repo: Option<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

#[derive(Deserialize)]
struct Suite {
    id: u64,
    #[serde(default)]
    head_branch: Option<String>,
    head_sha: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    pull_requests: Vec<PullRef>,
    #[serde(default)]
    app: Option<App>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct SuitePayload {
    #[serde(default)]
    action: Option<String>,
    check_suite: Suite,
    repository: Repo,
}

#[derive(Deserialize)]
struct CheckRun {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    output: Option<Output>,
    name: String,
    head_sha: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    completed_at: Option<DateTime<Utc>>,
    check_suite: Suite,
    #[serde(default)]
    pull_requests: Vec<PullRef>,
    #[serde(default)]
    app: Option<App>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    summary: Option<String>,
}

#[derive(Deserialize)]
struct RunPayload {
    #[serde(default)]
    action: Option<String>,
    check_run: CheckRun,
    repository: Repo,
}

#[derive(Deserialize)]
struct Branch {
    name: String,
    commit: BranchCommit,
}

#[derive(Deserialize)]
struct BranchCommit {
    sha: String,
}

#[derive(Deserialize)]
struct StatusPayload {
    sha: String,
    context: String,
    state: String,
    #[serde(default)]
    target_url: Option<String>,
    #[serde(default)]
    branches: Vec<Branch>,
    updated_at: DateTime<Utc>,
    repository: Repo,
}

fn app_ignored(app: Option<&App>, options: &GithubOptions) -> bool {
    app.and_then(|a| a.slug.as_deref())
        .is_some_and(|slug| options.ignore_check_apps.iter().any(|i| i == slug))
}

fn app_name(app: Option<&App>) -> String {
    let nonempty = |s: Option<&String>| s.filter(|s| !s.trim().is_empty()).cloned();
    app.and_then(|a| nonempty(a.name.as_ref()).or_else(|| nonempty(a.slug.as_ref())))
        .unwrap_or_else(|| "checks".to_string())
}

/// Pull request numbers whose base is `repo_id` (a pull request listed without its base is
/// kept).
fn pull_numbers(prs: &[PullRef], repo_id: u64) -> Vec<u64> {
    prs.iter()
        .filter(|p| {
            p.base
                .as_ref()
                .and_then(|b| b.repo.as_ref())
                .is_none_or(|r| r.id == repo_id)
        })
        .map(|p| p.number)
        .collect()
}

/// Status and conclusion of a check suite or run.
fn state(
    field_status: &'static str,
    field_conclusion: &'static str,
    status: Option<&str>,
    action: Option<&str>,
    conclusion: Option<&str>,
) -> Result<(Status, Option<Conclusion>), NormalizeError> {
    let text = status
        .or(action)
        .ok_or(NormalizeError::Field(field_status))?;
    let status = map_status(text).ok_or_else(|| NormalizeError::Value {
        field: field_status,
        value: text.chars().take(64).collect(),
    })?;
    let conclusion = match (status, conclusion) {
        (Status::Completed, None) => return Err(NormalizeError::Field(field_conclusion)),
        (Status::Completed, Some(c)) => {
            Some(map_conclusion(c).ok_or_else(|| NormalizeError::Value {
                field: field_conclusion,
                value: c.chars().take(64).collect(),
            })?)
        }
        _ => None,
    };
    Ok((status, conclusion))
}

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
        _ => state(
            "check_suite.status",
            "check_suite.conclusion",
            s.status.as_deref(),
            p.action.as_deref(),
            s.conclusion.as_deref(),
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
        state(
            "check_run.status",
            "check_run.conclusion",
            c.status.as_deref(),
            None,
            c.conclusion.as_deref(),
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
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/github/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn events(n: Result<Normalized, NormalizeError>) -> Vec<Event> {
        match n.unwrap() {
            Normalized::Events(e) => e,
            other => panic!("not events: {other:?}"),
        }
    }

    #[test]
    fn a_completed_suite_is_one_run_of_its_app() {
        let opts = GithubOptions::default();
        let e = events(check_suite(
            "d",
            &fixture("check_suite/completed.payload.json"),
            &opts,
        ));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].run.id, "118578147");
        assert_eq!(e[0].pr_number, Some(2));
        assert_eq!(e[0].run.status, Status::Completed);
        assert_eq!(e[0].run.conclusion, Some(Conclusion::Success));
        assert_eq!(e[0].run.workflow, "octocoders-linter");
        // The Actions app's suites are ignored by default, counted when configured.
        let actions = fixture("check_suite/completed.1.payload.json");
        assert!(matches!(
            check_suite("d", &actions, &opts),
            Ok(Normalized::Ignored { .. })
        ));
        let all = GithubOptions {
            ignore_check_apps: vec![],
            ..opts.clone()
        };
        assert_eq!(events(check_suite("d", &actions, &all)).len(), 1);
    }

    #[test]
    fn a_rerequested_suite_is_queued_and_newer() {
        let opts = GithubOptions::default();
        let done = events(check_suite(
            "d1",
            &fixture("check_suite/completed.payload.json"),
            &opts,
        ));
        // The real pair: the re-request carries the completed suite's `updated_at`.
        let again = events(check_suite(
            "d2",
            &fixture("check_suite/rerequested.payload.json"),
            &opts,
        ));
        assert_eq!(again[0].run.updated_at, done[0].run.updated_at);
        assert_eq!(again[0].run.id, done[0].run.id);
        assert_eq!(again[0].run.status, Status::Queued);
        assert!(again[0].run.attempt > done[0].run.attempt);
        // The re-run's completion a second later supersedes the re-request.
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("check_suite/completed.payload.json")).unwrap();
        v["check_suite"]["updated_at"] = "2019-05-15T15:21:15Z".into();
        let rerun = events(check_suite("d3", &serde_json::to_vec(&v).unwrap(), &opts));
        assert!(rerun[0].run.attempt >= again[0].run.attempt);
        assert_eq!(rerun[0].run.status, Status::Completed);
        // A re-requested check run is queued at one attempt more than the run it re-requests.
        let run_mode = GithubOptions {
            checks: CheckGranularity::Run,
            ..GithubOptions::default()
        };
        let done = events(check_run(
            "r1",
            &fixture("check_run/completed.payload.json"),
            &run_mode,
        ));
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("check_run/completed.payload.json")).unwrap();
        v["action"] = "rerequested".into();
        let again = events(check_run("r2", &serde_json::to_vec(&v).unwrap(), &run_mode));
        assert_eq!(
            (again[0].run.status, again[0].run.conclusion),
            (Status::Queued, None)
        );
        assert_eq!(again[0].run.attempt, done[0].run.attempt + 1);
    }

    #[test]
    fn check_runs_only_when_asked_and_never_both() {
        let suite_mode = GithubOptions::default();
        let run_mode = GithubOptions {
            checks: CheckGranularity::Run,
            ..GithubOptions::default()
        };
        let body = fixture("check_run/completed.payload.json");
        assert!(matches!(
            check_run("d", &body, &suite_mode),
            Ok(Normalized::Ignored { .. })
        ));
        let e = events(check_run("d", &body, &run_mode));
        assert_eq!(e[0].run.id, "118578147/Octocoders-linter");
        assert_eq!(e[0].run.workflow, "octocoders-linter / Octocoders-linter");
        assert_eq!(e[0].pr_number, Some(2));
        let suite = fixture("check_suite/completed.payload.json");
        assert!(matches!(
            check_suite("d", &suite, &run_mode),
            Ok(Normalized::Ignored { .. })
        ));
        let actions = fixture("check_run/completed.1.payload.json");
        assert!(matches!(
            check_run("d", &actions, &run_mode),
            Ok(Normalized::Ignored { .. })
        ));
    }

    #[test]
    fn statuses_are_one_run_per_context() {
        let opts = GithubOptions::default();
        let e = events(status("d", &fixture("status/payload.json"), &opts));
        assert_eq!(e[0].run.id, "status:default");
        assert_eq!(e[0].run.workflow, "default");
        assert_eq!(e[0].pr_number, None);
        assert_eq!(e[0].run.conclusion, Some(Conclusion::Success));
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("status/payload.json")).unwrap();
        v["state"] = "error".into();
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            events(status("d", &body, &opts))[0].run.conclusion,
            Some(Conclusion::Failure)
        );
        let neutral = GithubOptions {
            status_error: Conclusion::Neutral,
            ..GithubOptions::default()
        };
        assert_eq!(
            events(status("d", &body, &neutral))[0].run.conclusion,
            Some(Conclusion::Neutral)
        );
        v["state"] = "pending".into();
        let e = events(status("d", &serde_json::to_vec(&v).unwrap(), &opts));
        assert_eq!(
            (e[0].run.status, e[0].run.conclusion),
            (Status::Queued, None)
        );
        v["state"] = "weird".into();
        assert!(status("d", &serde_json::to_vec(&v).unwrap(), &opts).is_err());
    }

    #[test]
    fn a_failed_check_runs_output_is_the_job_of_its_run() {
        let run_mode = GithubOptions {
            checks: CheckGranularity::Run,
            ..GithubOptions::default()
        };
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("check_run/completed.payload.json")).unwrap();
        v["check_run"]["conclusion"] = "failure".into();
        v["check_run"]["output"]["title"] = "3 failures".into();
        v["check_run"]["output"]["summary"] = "é".repeat(1500).into();
        let body = serde_json::to_vec(&v).unwrap();
        let Normalized::RunsAndJobs { events, mut jobs } =
            check_run("o1", &body, &run_mode).unwrap()
        else {
            panic!("no job")
        };
        assert_eq!(jobs.len(), 1);
        let j = &jobs[0];
        assert_eq!(
            (j.run.id.as_str(), j.run.attempt),
            (events[0].run.id.as_str(), events[0].run.attempt)
        );
        assert_eq!(
            (j.job.id.as_str(), j.job.name.as_str()),
            ("128620228", "Octocoders-linter")
        );
        assert_eq!(j.job.title.as_deref(), Some("3 failures"));
        assert_eq!(j.job.conclusion, Some(Conclusion::Failure));
        // Ingest cuts the summary to 1 KiB on a character boundary.
        jobs[0].fit(&crate::event::Limits::default());
        assert_eq!(jobs[0].job.summary.as_ref().map(String::len), Some(1024));
        // Without an output, or in suite mode, no job.
        v["check_run"]["output"]["title"] = serde_json::Value::Null;
        v["check_run"]["output"]["summary"] = serde_json::Value::Null;
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(events_of(check_run("o2", &body, &run_mode)), 1);
        assert!(matches!(
            check_run("o3", &body, &GithubOptions::default()),
            Ok(Normalized::Ignored { .. })
        ));
    }

    fn events_of(n: Result<Normalized, NormalizeError>) -> usize {
        events(n).len()
    }
}
