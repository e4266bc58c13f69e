//! GitLab webhooks, pure: token check (`X-Gitlab-Token`) and the normalization of
//! "Pipeline Hook" deliveries into `runwatch.workflow_run.v1` events.
//!
//! | GitLab `object_attributes.status` | run status | conclusion |
//! |---|---|---|
//! | `created`, `waiting_for_resource`, `preparing`, `pending`, `scheduled` | `queued` | |
//! | `running`, `canceling` | `in_progress` | |
//! | `success` | `completed` | `success` |
//! | `failed` | `completed` | `failure` |
//! | `canceled` | `completed` | `cancelled` |
//! | `skipped` | `completed` | `skipped` |
//! | `manual` | `completed` | `action_required` |
//!
//! Run id = pipeline id, attempt 1 (a retried job keeps the pipeline id; its later
//! `finished_at` makes the new completion win the merge), workflow = the pipeline's `name`,
//! else its `source`, else `pipeline`; `pr_number` = `merge_request.iid`; branch = `ref`
//! (the merge request's source branch when `ref` is a `refs/merge-requests/…` ref);
//! repository = `project.path_with_namespace` split at its last `/`, id = `project.id`;
//! `updated_at` = `finished_at`, else `created_at`. The event id is `X-Gitlab-Event-UUID`,
//! or `gitlab-body-<sha256 of the body>` when the header is absent.
//!
//! The pipeline's failed `builds` become `runwatch.workflow_job.v1` jobs of its run
//! (`failed_builds`), published before the run's event.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::config::Secret;
use super::{NormalizeError, Normalized};
use crate::event::{Conclusion, Event, Provider, Repository, Run, SCHEMA, Status};

/// The `X-Gitlab-Event` value runwatch normalizes.
pub const PIPELINE_HOOK: &str = "Pipeline Hook";

/// Whether `token` equals one of `tokens`, compared in constant time (both sides are
/// HMAC'd under one key and the tags compared with `verify_slice`, so neither the content
/// nor the length of a configured token leaks through timing).
pub fn verify_token(tokens: &[Secret], token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let tag = |v: &[u8]| {
        <Hmac<Sha256> as KeyInit>::new_from_slice(b"runwatch gitlab token check").map(|mut m| {
            m.update(v);
            m
        })
    };
    let Ok(presented) = tag(token.as_bytes()) else {
        return false;
    };
    let presented = presented.finalize().into_bytes();
    let mut ok = false;
    for t in tokens {
        if let Ok(expected) = tag(t.expose().as_bytes()) {
            ok |= expected.verify_slice(&presented).is_ok();
        }
    }
    ok
}

/// The event id used when `X-Gitlab-Event-UUID` is absent: `gitlab-body-<sha256 hex>`.
pub fn body_event_id(body: &[u8]) -> String {
    format!("gitlab-body-{}", hex::encode(Sha256::digest(body)))
}

#[derive(Deserialize)]
struct Payload {
    object_kind: String,
    object_attributes: Attrs,
    #[serde(default)]
    merge_request: Option<MergeRequest>,
    project: Project,
    #[serde(default)]
    builds: Vec<Build>,
}

#[derive(Deserialize)]
struct Build {
    id: u64,
    #[serde(default)]
    stage: Option<String>,
    name: String,
    status: String,
    #[serde(default)]
    allow_failure: bool,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    runner: Option<Runner>,
}

#[derive(Deserialize)]
struct Runner {
    #[serde(default)]
    tags: Vec<String>,
}

/// The most failed builds of one pipeline delivery published as jobs.
pub const MAX_JOBS_PER_DELIVERY: usize = 50;

#[derive(Deserialize)]
struct Attrs {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    sha: String,
    #[serde(default)]
    source: Option<String>,
    status: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    #[serde(default)]
    source_branch: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    id: u64,
    path_with_namespace: String,
    #[serde(default)]
    web_url: Option<String>,
}

/// The status table of the module documentation.
pub fn map_status(s: &str) -> Option<(Status, Option<Conclusion>)> {
    Some(match s {
        "created" | "waiting_for_resource" | "preparing" | "pending" | "scheduled" => {
            (Status::Queued, None)
        }
        "running" | "canceling" => (Status::InProgress, None),
        "success" => (Status::Completed, Some(Conclusion::Success)),
        "failed" => (Status::Completed, Some(Conclusion::Failure)),
        "canceled" => (Status::Completed, Some(Conclusion::Cancelled)),
        "skipped" => (Status::Completed, Some(Conclusion::Skipped)),
        "manual" => (Status::Completed, Some(Conclusion::ActionRequired)),
        _ => return None,
    })
}

/// GitLab writes `2016-08-12 15:23:28 UTC` (and sometimes `… +0200` or RFC 3339).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S %z") {
        return Some(t.with_timezone(&Utc));
    }
    let naive = s.strip_suffix(" UTC").unwrap_or(s);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Normalizes one delivery. `event_name` is `X-Gitlab-Event`; anything but
/// [`PIPELINE_HOOK`] is [`Normalized::Ignored`]. `event_id` is `X-Gitlab-Event-UUID` or
/// [`body_event_id`].
pub fn normalize(
    event_name: &str,
    event_id: &str,
    body: &[u8],
) -> Result<Normalized, NormalizeError> {
    if event_name != PIPELINE_HOOK {
        return Ok(Normalized::Ignored {
            kind: event_name.to_string(),
        });
    }
    let p: Payload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    if p.object_kind != "pipeline" {
        return Err(NormalizeError::Value {
            field: "object_kind",
            value: p.object_kind.chars().take(64).collect(),
        });
    }
    let a = p.object_attributes;
    let (status, conclusion) = map_status(&a.status).ok_or_else(|| NormalizeError::Value {
        field: "object_attributes.status",
        value: a.status.chars().take(64).collect(),
    })?;
    let (owner, name) = p
        .project
        .path_with_namespace
        .rsplit_once('/')
        .ok_or(NormalizeError::Field("project.path_with_namespace"))?;
    let time_text = a
        .finished_at
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(a.created_at.as_deref())
        .ok_or(NormalizeError::Field("object_attributes.created_at"))?;
    let updated_at = parse_time(time_text).ok_or_else(|| NormalizeError::Value {
        field: "object_attributes.created_at",
        value: time_text.chars().take(64).collect(),
    })?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let workflow = nonempty(a.name)
        .or_else(|| nonempty(a.source))
        .unwrap_or_else(|| "pipeline".to_string());
    let branch = match (a.git_ref, &p.merge_request) {
        (Some(r), Some(mr)) if r.starts_with("refs/merge-requests/") => {
            mr.source_branch.clone().or(Some(r))
        }
        (r, _) => r,
    };
    let url = a.url.or_else(|| {
        p.project
            .web_url
            .as_ref()
            .map(|w| format!("{}/-/pipelines/{}", w.trim_end_matches('/'), a.id))
    });
    let repository = Repository {
        owner: owner.to_string(),
        name: name.to_string(),
        id: Some(p.project.id.to_string()),
        host: None,
    };
    let jobs = failed_builds(
        event_id,
        &repository,
        &a.sha,
        a.id,
        &workflow,
        p.project.web_url.as_deref(),
        p.builds,
        updated_at,
    );
    let event = Event {
        schema: SCHEMA.to_string(),
        event_id: event_id.to_string(),
        provider: Provider::Gitlab,
        repository,
        commit_sha: a.sha,
        branch,
        pr_number: p.merge_request.map(|m| m.iid).filter(|n| *n > 0),
        run: Run {
            id: a.id.to_string(),
            attempt: 1,
            workflow,
            status,
            conclusion,
            url,
            updated_at,
        },
        metadata: serde_json::Value::Null,
    };
    if jobs.is_empty() {
        return Ok(Normalized::Events(vec![event]));
    }
    Ok(Normalized::RunsAndJobs {
        events: vec![event],
        jobs,
    })
}

/// The pipeline's failed builds (status `failed`, not `allow_failure`: those did not fail
/// the pipeline), at most [`MAX_JOBS_PER_DELIVERY`] by build id, as jobs of the pipeline's
/// run (attempt 1): id, name, stage, `failure_reason`, the runner's tags as labels, URL
/// `<project>/-/jobs/<id>`, `updated_at` = `finished_at`, else `started_at`, else
/// `created_at`, else the pipeline's; event id `<delivery>:build:<id>`.
#[allow(clippy::too_many_arguments)]
fn failed_builds(
    event_id: &str,
    repository: &Repository,
    sha: &str,
    pipeline: u64,
    workflow: &str,
    web_url: Option<&str>,
    builds: Vec<Build>,
    pipeline_at: DateTime<Utc>,
) -> Vec<crate::job::JobReport> {
    let time = |t: &Option<String>| t.as_deref().filter(|s| !s.is_empty()).and_then(parse_time);
    let mut failed: Vec<Build> = builds
        .into_iter()
        .filter(|b| b.status == "failed" && !b.allow_failure)
        .collect();
    failed.sort_by_key(|b| b.id);
    failed.truncate(MAX_JOBS_PER_DELIVERY);
    failed
        .into_iter()
        .map(|b| {
            let started_at = time(&b.started_at);
            let completed_at = time(&b.finished_at);
            crate::job::JobReport {
                schema: crate::job::JOB_SCHEMA.to_string(),
                event_id: format!("{event_id}:build:{}", b.id),
                provider: Provider::Gitlab,
                repository: repository.clone(),
                commit_sha: sha.to_string(),
                run: crate::job::JobRun {
                    id: pipeline.to_string(),
                    attempt: 1,
                    workflow: Some(workflow.to_string()),
                },
                job: crate::job::Job {
                    id: b.id.to_string(),
                    name: b.name,
                    status: Status::Completed,
                    conclusion: Some(Conclusion::Failure),
                    url: web_url.map(|w| format!("{}/-/jobs/{}", w.trim_end_matches('/'), b.id)),
                    stage: b.stage.filter(|s| !s.trim().is_empty()),
                    failure_reason: b.failure_reason.filter(|s| !s.trim().is_empty()),
                    title: None,
                    summary: None,
                    failed_steps: Vec::new(),
                    failed_steps_omitted: 0,
                    runner_labels: b.runner.map(|r| r.tags).unwrap_or_default(),
                    started_at,
                    completed_at,
                    updated_at: completed_at
                        .or(started_at)
                        .or_else(|| time(&b.created_at))
                        .unwrap_or(pipeline_at),
                },
                metadata: serde_json::Value::Null,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare() {
        let t = vec![Secret::new("a-token"), Secret::new("b")];
        assert!(verify_token(&t, Some("a-token")));
        assert!(verify_token(&t, Some("b")));
        assert!(!verify_token(&t, Some("a-toke")));
        assert!(!verify_token(&t, None));
        assert!(!verify_token(&[], Some("b")));
    }

    #[test]
    fn times_and_statuses() {
        assert_eq!(
            parse_time("2016-08-12 15:23:28 UTC").unwrap().to_rfc3339(),
            "2016-08-12T15:23:28+00:00"
        );
        assert_eq!(
            parse_time("2016-08-12 17:23:28 +0200")
                .unwrap()
                .to_rfc3339(),
            "2016-08-12T15:23:28+00:00"
        );
        assert_eq!(
            map_status("manual"),
            Some((Status::Completed, Some(Conclusion::ActionRequired)))
        );
        assert_eq!(map_status("scheduled"), Some((Status::Queued, None)));
        assert_eq!(map_status("bogus"), None);
        assert!(body_event_id(b"x").starts_with("gitlab-body-"));
        assert_eq!(body_event_id(b"x"), body_event_id(b"x"));
    }
}
