//! Buildkite pipeline webhooks, pure: authentication (`X-Buildkite-Token`, or the HMAC
//! `X-Buildkite-Signature`) and the normalization of `build.*` deliveries into
//! `runwatch.workflow_run.v1` events with provider `buildkite`.
//!
//! | Buildkite `build.state` | run status | conclusion |
//! |---|---|---|
//! | `scheduled`, `creating`, `waiting` | `queued` | |
//! | `running`, `failing`, `canceling`, `waiting_failed` | `in_progress` | |
//! | `passed` | `completed` | `success` |
//! | `failed` | `completed` | `failure` |
//! | `blocked` (or `build.blocked`) on `build.finished` | `completed` | `action_required` |
//! | `canceled` | `completed` | `cancelled` |
//! | `skipped`, `not_run` | `completed` | `skipped` |
//!
//! One run per (commit, pipeline): run id = the pipeline's slug, attempt = the build number
//! (a rebuild is a new build with a higher number: it replaces the previous build), workflow
//! = the pipeline's name; `pr_number` = `build.pull_request.id`; branch = `build.branch`;
//! repository = owner/name of the pipeline's repository URL (else the organization and
//! pipeline slugs), no id; `updated_at` = `finished_at`, else `started_at`, else
//! `scheduled_at`, else `created_at`. The event id is `buildkite-<sha256 of the body>`
//! (Buildkite sends no delivery id; a redelivery of the same body deduplicates).
//!
//! `job.finished` becomes a `runwatch.workflow_job.v1` job of its build's run (same run id
//! and attempt as the build's events), with the job's conclusion, exit status and agent
//! query rules.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::config::Secret;
use super::{NormalizeError, Normalized, gitlab, hmac_matches};
use crate::event::{Conclusion, Event, Provider, Repository, Run, SCHEMA, Status};

/// How far an `X-Buildkite-Signature` timestamp may be from the receiver's clock.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Whether a delivery is authentic: `X-Buildkite-Signature` (`timestamp=T,signature=HEX`,
/// HEX = HMAC-SHA256 of `T.` + body under a token, T within
/// [`SIGNATURE_TOLERANCE_SECS`] of `now`) when present, else `X-Buildkite-Token` equal to a
/// token (constant time). False when neither header is present.
pub fn verify(
    tokens: &[Secret],
    token: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> bool {
    if let Some(sig) = signature {
        let mut timestamp = None;
        let mut tag = None;
        for part in sig.split(',') {
            match part.trim().split_once('=') {
                Some(("timestamp", t)) => timestamp = Some(t),
                Some(("signature", s)) => tag = Some(s),
                _ => {}
            }
        }
        let (Some(t), Some(tag)) = (timestamp, tag) else {
            return false;
        };
        let Ok(secs) = t.parse::<i64>() else {
            return false;
        };
        if now.timestamp().abs_diff(secs) > SIGNATURE_TOLERANCE_SECS.unsigned_abs() {
            return false;
        }
        let Some(tag) = hex::decode(tag).ok() else {
            return false;
        };
        return hmac_matches(tokens, &[t.as_bytes(), b".", body], &tag);
    }
    gitlab::verify_token(tokens, token)
}

/// The `X-Buildkite-Signature` value of `body` at `timestamp` under `token` (for tests and
/// tools).
pub fn sign(token: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    format!(
        "timestamp={t},signature={}",
        super::hmac_hex(token, &[t.as_bytes(), b".", body])
    )
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    event: Option<String>,
    build: Build,
    #[serde(default)]
    pipeline: Option<Pipeline>,
    #[serde(default)]
    job: Option<Job>,
}

#[derive(Deserialize)]
struct Job {
    id: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    step_key: Option<String>,
    state: String,
    #[serde(default)]
    soft_failed: bool,
    #[serde(default)]
    exit_status: Option<i64>,
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    agent_query_rules: Vec<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    finished_at: Option<DateTime<Utc>>,
}

/// A finished job's conclusion: `passed` → success, `failed` → failure (neutral when
/// `soft_failed`: it did not fail the build), `timed_out`, `canceled` → cancelled,
/// `broken`, `skipped` → skipped, `expired` → stale. Any other state (a wait or block
/// step's) is `None`: the delivery is accepted (202) and not published.
pub fn map_job_state(state: &str, soft_failed: bool) -> Option<Conclusion> {
    Some(match state {
        "passed" => Conclusion::Success,
        "failed" if soft_failed => Conclusion::Neutral,
        "failed" => Conclusion::Failure,
        "timed_out" => Conclusion::TimedOut,
        "canceled" | "canceling" => Conclusion::Cancelled,
        "broken" | "skipped" => Conclusion::Skipped,
        "expired" => Conclusion::Stale,
        _ => return None,
    })
}

#[derive(Deserialize)]
struct Build {
    id: String,
    #[serde(default)]
    web_url: Option<String>,
    number: u32,
    state: String,
    #[serde(default)]
    blocked: bool,
    commit: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    pull_request: Option<PullRequest>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    scheduled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct PullRequest {
    id: serde_json::Value,
}

#[derive(Deserialize)]
struct Pipeline {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// The status table of the module documentation.
pub fn map_state(state: &str, blocked: bool) -> Option<(Status, Option<Conclusion>)> {
    Some(match state {
        "scheduled" | "creating" | "waiting" => (Status::Queued, None),
        "running" | "failing" | "canceling" | "waiting_failed" => (Status::InProgress, None),
        "passed" if blocked => (Status::Completed, Some(Conclusion::ActionRequired)),
        "passed" => (Status::Completed, Some(Conclusion::Success)),
        "failed" => (Status::Completed, Some(Conclusion::Failure)),
        "blocked" => (Status::Completed, Some(Conclusion::ActionRequired)),
        "canceled" => (Status::Completed, Some(Conclusion::Cancelled)),
        "skipped" | "not_run" => (Status::Completed, Some(Conclusion::Skipped)),
        _ => return None,
    })
}

/// `owner/name` from a git URL (`git@github.com:acme/app.git`,
/// `https://github.com/acme/app.git`): its last two path segments.
pub fn owner_and_name(url: &str) -> Option<(String, String)> {
    let path = url.trim().trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.rsplit(['/', ':']);
    let name = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty() && !s.contains('@'))?;
    Some((owner.to_string(), name.to_string()))
}

/// The GitHub or GitLab repository a repository URL names (`git@github.com:acme/app.git`,
/// `https://gitlab.com/group/sub/app`, `ssh://git@github.com/acme/app.git`): the host's
/// provider and the repository's owner and name as that provider spells them (GitLab: the
/// namespace path, subgroups included). `None` for another host.
pub fn hosted_repository(url: &str) -> Option<(Provider, String, String)> {
    let u = url.trim();
    let rest = u.split_once("://").map_or(u, |(_, r)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    let (host, path) = rest.split_once([':', '/'])?;
    let provider = match host.to_ascii_lowercase().as_str() {
        "github.com" | "www.github.com" => Provider::Github,
        "gitlab.com" | "www.gitlab.com" => Provider::Gitlab,
        _ => return None,
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, name) = path.rsplit_once('/')?;
    if owner.is_empty() || name.is_empty() || (provider == Provider::Github && owner.contains('/'))
    {
        return None;
    }
    Some((provider, owner.to_string(), name.to_string()))
}

/// The repository of a build of `url`, and its run id: on GitHub or GitLab, the host's
/// repository with a run id qualified by the CI (`<ci>:<id>`, so it never meets a host
/// run's id in the shared group); else `fallback` as given.
pub(super) fn repository_and_run(
    url: Option<&str>,
    fallback: (String, String, Option<String>),
    ci: &str,
    run_id: String,
) -> (Repository, String) {
    match url.and_then(hosted_repository) {
        Some((host, owner, name)) => (
            Repository {
                owner,
                name,
                id: fallback.2,
                host: Some(host),
            },
            format!("{ci}:{run_id}"),
        ),
        None => (
            Repository {
                owner: fallback.0,
                name: fallback.1,
                id: fallback.2,
                host: None,
            },
            run_id,
        ),
    }
}

/// Normalizes one delivery. `event_name` is `X-Buildkite-Event` (or the body's `event`):
/// `ping` answers [`Normalized::Ping`], `build.*` becomes an event, `job.finished` a job of
/// its build's run (`job_report`), anything else is [`Normalized::Ignored`].
pub fn normalize(event_name: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
    if event_name == "ping" {
        return Ok(Normalized::Ping);
    }
    if !event_name.starts_with("build.") && event_name != "job.finished" {
        return Ok(Normalized::Ignored {
            kind: event_name.to_string(),
        });
    }
    let mut p: Payload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    if event_name == "job.finished" {
        let job = p.job.take().ok_or(NormalizeError::Field("job"))?;
        let Some(conclusion) = map_job_state(&job.state, job.soft_failed) else {
            // A wait or block step's state (`waiting_failed`, `blocked_failed`, …): no job
            // that ran, nothing to list.
            return Ok(Normalized::Ignored {
                kind: event_name.to_string(),
            });
        };
        let run = build_event(p, body)?;
        return Ok(Normalized::RunsAndJobs {
            events: Vec::new(),
            jobs: vec![job_report(job, conclusion, run)],
        });
    }
    Ok(Normalized::Events(vec![build_event(p, body)?]))
}

/// A `job.finished` delivery's job, as a job of its build's run (`run`: the event its build
/// normalizes to): id, name (else label, else step key, else type), conclusion
/// ([`map_job_state`]), `web_url`, `exit status <n>` as `failure_reason`, the agent query
/// rules (`queue=default`) as runner labels, `updated_at` = `finished_at`, else
/// `started_at`, else `created_at`, else the build's.
fn job_report(job: Job, conclusion: Conclusion, run: Event) -> crate::job::JobReport {
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let name = nonempty(job.name)
        .or_else(|| nonempty(job.label))
        .or_else(|| nonempty(job.step_key))
        .or_else(|| nonempty(job.kind))
        .unwrap_or_else(|| "job".to_string());
    crate::job::JobReport {
        schema: crate::job::JOB_SCHEMA.to_string(),
        event_id: run.event_id,
        provider: Provider::Buildkite,
        repository: run.repository,
        commit_sha: run.commit_sha,
        run: crate::job::JobRun {
            id: run.run.id,
            attempt: run.run.attempt,
            workflow: Some(run.run.workflow),
        },
        job: crate::job::Job {
            id: job.id,
            name,
            status: Status::Completed,
            conclusion: Some(conclusion),
            url: job.web_url,
            stage: None,
            failure_reason: job
                .exit_status
                .filter(|_| conclusion != Conclusion::Success)
                .map(|n| format!("exit status {n}")),
            title: None,
            summary: None,
            failed_steps: Vec::new(),
            failed_steps_omitted: 0,
            runner_labels: job.agent_query_rules,
            started_at: job.started_at,
            completed_at: job.finished_at,
            updated_at: job
                .finished_at
                .or(job.started_at)
                .or(job.created_at)
                .unwrap_or(run.run.updated_at),
        },
        metadata: serde_json::Value::Null,
    }
}

/// The run event of a delivery's build.
fn build_event(p: Payload, body: &[u8]) -> Result<Event, NormalizeError> {
    let b = p.build;
    let (status, conclusion) =
        map_state(&b.state, b.blocked).ok_or_else(|| NormalizeError::Value {
            field: "build.state",
            value: b.state.chars().take(64).collect(),
        })?;
    let pipeline = p.pipeline.ok_or(NormalizeError::Field("pipeline"))?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let slug = nonempty(pipeline.slug.clone()).ok_or(NormalizeError::Field("pipeline.slug"))?;
    let (owner, name) = pipeline
        .repository
        .as_deref()
        .and_then(owner_and_name)
        .or_else(|| {
            let org = pipeline.url.as_deref().and_then(|u| {
                u.split("/organizations/")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .map(str::to_string)
            })?;
            Some((org, slug.clone()))
        })
        .ok_or(NormalizeError::Field("pipeline.repository"))?;
    let updated_at = b
        .finished_at
        .or(b.started_at)
        .or(b.scheduled_at)
        .or(b.created_at)
        .ok_or(NormalizeError::Field("build.created_at"))?;
    let pr_number = b.pull_request.as_ref().and_then(|pr| match &pr.id {
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    });
    let mut metadata = serde_json::Map::new();
    metadata.insert("buildkite_build_id".into(), b.id.clone().into());
    if let Some(e) = p.event {
        metadata.insert("buildkite_event".into(), e.into());
    }
    let (repository, run_id) = repository_and_run(
        pipeline.repository.as_deref(),
        (owner, name, None),
        "buildkite",
        slug.clone(),
    );
    Ok(Event {
        schema: SCHEMA.to_string(),
        event_id: gitlab::body_event_id(body).replacen("gitlab-body-", "buildkite-", 1),
        provider: Provider::Buildkite,
        repository,
        commit_sha: b.commit,
        branch: nonempty(b.branch),
        pr_number: pr_number.filter(|n| *n > 0),
        run: Run {
            id: run_id,
            attempt: b.number.max(1),
            workflow: nonempty(pipeline.name).unwrap_or(slug),
            status,
            conclusion,
            url: b.web_url,
            updated_at,
        },
        metadata: serde_json::Value::Object(metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_signatures() {
        let tokens = vec![Secret::new("bk-token")];
        let body = b"{}";
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert!(verify(&tokens, Some("bk-token"), None, body, now));
        assert!(!verify(&tokens, Some("other"), None, body, now));
        assert!(!verify(&tokens, None, None, body, now));
        let good = sign(b"bk-token", 1_700_000_000, body);
        assert!(verify(&tokens, None, Some(&good), body, now));
        // A signature, when present, is what counts (a right token does not rescue it).
        assert!(!verify(
            &tokens,
            Some("bk-token"),
            Some(&sign(b"x", 1_700_000_000, body)),
            body,
            now
        ));
        assert!(!verify(&tokens, None, Some(&good), b"{ }", now));
        let old = sign(b"bk-token", 1_700_000_000 - 301, body);
        assert!(
            !verify(&tokens, None, Some(&old), body, now),
            "replayed too late"
        );
        assert!(!verify(
            &tokens,
            None,
            Some("timestamp=1700000000"),
            body,
            now
        ));
        assert!(!verify(&tokens, None, Some("garbage"), body, now));
    }

    #[test]
    fn repository_urls() {
        let want = Some(("acme".to_string(), "app".to_string()));
        assert_eq!(owner_and_name("git@github.com:acme/app.git"), want);
        assert_eq!(owner_and_name("https://github.com/acme/app.git"), want);
        assert_eq!(owner_and_name("https://github.com/acme/app/"), want);
        assert_eq!(owner_and_name("git@github.com:app.git"), None);
        let gh = Some((Provider::Github, "acme".to_string(), "app".to_string()));
        assert_eq!(hosted_repository("git@github.com:acme/app.git"), gh);
        assert_eq!(hosted_repository("https://github.com/acme/app"), gh);
        assert_eq!(hosted_repository("ssh://git@github.com/acme/app.git"), gh);
        assert_eq!(hosted_repository("https://GitHub.com/acme/app/"), gh);
        assert_eq!(
            hosted_repository("https://gitlab.com/group/sub/app.git"),
            Some((Provider::Gitlab, "group/sub".to_string(), "app".to_string()))
        );
        assert_eq!(hosted_repository("git@git.example.com:acme/app.git"), None);
        assert_eq!(hosted_repository("https://github.com/a/b/c"), None);
        assert_eq!(hosted_repository("github.com"), None);
    }

    #[test]
    fn states() {
        assert_eq!(
            map_state("failed", false),
            Some((Status::Completed, Some(Conclusion::Failure)))
        );
        assert_eq!(
            map_state("passed", true),
            Some((Status::Completed, Some(Conclusion::ActionRequired)))
        );
        assert_eq!(
            map_state("failing", false),
            Some((Status::InProgress, None))
        );
        assert_eq!(map_state("scheduled", false), Some((Status::Queued, None)));
        assert_eq!(map_state("bogus", false), None);
    }
}
