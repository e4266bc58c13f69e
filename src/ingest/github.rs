//! GitHub webhooks, pure: signature verification (`X-Hub-Signature-256`) and the
//! normalization of `workflow_run` deliveries into `runwatch.workflow_run.v1` events and of
//! `workflow_job` deliveries into `runwatch.workflow_job.v1` jobs
//! (`check_suite`, `check_run` and `status` are in [`super::github_checks`]).
//!
//! Choices (README "Webhooks"):
//! - The run's state is taken from `workflow_run.status` (the `action` only when the status
//!   is absent): `requested`, `waiting`, `pending`, `queued` → `queued`.
//! - One event per pull request in `workflow_run.pull_requests`. With none or one, the
//!   event id is the delivery id; with several it is `<delivery>:<pr number>` for each.
//! - A run from a fork (`head_repository.id` differs from `repository.id`) has no pull
//!   requests in the payload (GitHub leaves the list empty): it is published with
//!   `pr_number: null` and branch `<fork owner>:<head_branch>`, so it never fires a
//!   `require_pr` rule and never mixes into the base repository's branch streaks.
//! - Workflow name: `workflow_run.name`, else `workflow.name`, else `workflow_run.path`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::config::{GithubOptions, Secret};
use super::github_payload::{Owner, Repo, map_conclusion, map_status, per_pull_request};
use super::{NormalizeError, Normalized};
use crate::event::{Conclusion, Event, Provider, Run, SCHEMA, Status};
use crate::pull_request::LinkState;

/// Verifies `X-Hub-Signature-256` (`sha256=<hex>`): HMAC-SHA256 of the raw body under any
/// of `secrets`, compared in constant time. False for a missing or malformed header.
pub fn verify_signature(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex) else {
        return false;
    };
    let mut ok = false;
    for secret in secrets {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        else {
            continue;
        };
        mac.update(body);
        // verify_slice compares in constant time; every secret is tried.
        ok |= mac.verify_slice(&tag).is_ok();
    }
    ok
}

/// The `X-Hub-Signature-256` value of `body` under `secret` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// The JSON of a delivery. A webhook with content type `application/x-www-form-urlencoded`
/// (GitHub's default for repository and organization webhooks created through the API) sends
/// `payload=<url-encoded JSON>`; `application/json` (and no content type) sends the JSON
/// itself. The signature is checked over the raw body before this, as GitHub computes it.
pub fn json_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, NormalizeError> {
    let form = content_type.is_some_and(|c| {
        c.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| std::borrow::Cow::Owned(v.into_owned().into_bytes()))
        .ok_or(NormalizeError::Field("payload"))
}

#[derive(Deserialize)]
struct Payload {
    action: Option<String>,
    repository: Repo,
    workflow_run: WorkflowRun,
    #[serde(default)]
    workflow: Option<Workflow>,
}

#[derive(Deserialize)]
struct Workflow {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowRun {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    head_branch: Option<String>,
    head_sha: String,
    #[serde(default)]
    run_attempt: Option<u32>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    pull_requests: Vec<PullRef>,
    #[serde(default)]
    head_repository: Option<HeadRepo>,
}

#[derive(Deserialize)]
struct PullRef {
    number: u64,
}

#[derive(Deserialize)]
struct HeadRepo {
    id: u64,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    owner: Option<Owner>,
}

/// A run's or job's status (its `status`, else the delivery's `action`) and, when completed,
/// its conclusion; `fields` name the two in errors.
fn status_and_conclusion(
    status: Option<&str>,
    conclusion: Option<&str>,
    fields: (&'static str, &'static str),
) -> Result<(Status, Option<Conclusion>), NormalizeError> {
    let status_text = status.ok_or(NormalizeError::Field(fields.0))?;
    let status = map_status(status_text).ok_or_else(|| NormalizeError::Value {
        field: fields.0,
        value: status_text.chars().take(64).collect(),
    })?;
    let conclusion = match (status, conclusion) {
        (Status::Completed, None) => return Err(NormalizeError::Field(fields.1)),
        (Status::Completed, Some(c)) => {
            Some(map_conclusion(c).ok_or_else(|| NormalizeError::Value {
                field: fields.1,
                value: c.chars().take(64).collect(),
            })?)
        }
        _ => None,
    };
    Ok((status, conclusion))
}

/// Normalizes one delivery. `event_name` is `X-GitHub-Event`, `delivery` is
/// `X-GitHub-Delivery`. `ping` answers [`Normalized::Ping`]; `workflow_run`, `check_suite`,
/// `check_run` and `status` become events (as `options` says); other event types are
/// [`Normalized::Ignored`].
pub fn normalize(
    event_name: &str,
    delivery: &str,
    body: &[u8],
    options: &GithubOptions,
) -> Result<Normalized, NormalizeError> {
    match event_name {
        "ping" => return Ok(Normalized::Ping),
        "workflow_run" | "workflow_job" | "check_suite" | "check_run" | "status"
        | "pull_request" => {}
        other => {
            return Ok(Normalized::Ignored {
                kind: other.to_string(),
            });
        }
    }
    if delivery.trim().is_empty() {
        return Err(NormalizeError::MissingHeader("X-GitHub-Delivery"));
    }
    match event_name {
        "check_suite" => return super::github_checks::check_suite(delivery, body, options),
        "check_run" => return super::github_checks::check_run(delivery, body, options),
        "status" => return super::github_checks::status(delivery, body, options),
        "pull_request" => return pull_request(delivery, body),
        "workflow_job" => return workflow_job(delivery, body),
        _ => {}
    }
    let p: Payload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    let wr = p.workflow_run;
    let (status, conclusion) = status_and_conclusion(
        wr.status.as_deref().or(p.action.as_deref()),
        wr.conclusion.as_deref(),
        ("workflow_run.status", "workflow_run.conclusion"),
    )?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let workflow = nonempty(wr.name)
        .or_else(|| nonempty(p.workflow.and_then(|w| w.name)))
        .or_else(|| nonempty(wr.path))
        .ok_or(NormalizeError::Field("workflow_run.name"))?;

    let fork = wr
        .head_repository
        .as_ref()
        .filter(|h| h.id != p.repository.id);
    let branch = match (fork, wr.head_branch) {
        (Some(h), Some(b)) => {
            let owner = h
                .owner
                .as_ref()
                .map(|o| o.login.clone())
                .or_else(|| {
                    h.full_name
                        .as_ref()
                        .and_then(|f| f.split('/').next().map(str::to_string))
                })
                .unwrap_or_else(|| "fork".to_string());
            Some(format!("{owner}:{b}"))
        }
        (None, b) => b,
        (Some(_), None) => None,
    };
    let mut metadata = serde_json::Map::new();
    if let Some(e) = &wr.event {
        metadata.insert("github_event".into(), e.clone().into());
    }
    if let Some(h) = fork {
        metadata.insert("fork".into(), true.into());
        if let Some(f) = &h.full_name {
            metadata.insert("head_repository".into(), f.clone().into());
        }
    }

    let base = Event {
        schema: SCHEMA.to_string(),
        event_id: delivery.to_string(),
        provider: Provider::Github,
        repository: p.repository.into_repository(),
        commit_sha: wr.head_sha,
        branch,
        pr_number: None,
        run: Run {
            id: wr.id.to_string(),
            attempt: wr.run_attempt.unwrap_or(1).max(1),
            workflow,
            status,
            conclusion,
            url: wr.html_url,
            updated_at: wr.updated_at,
        },
        metadata: serde_json::Value::Object(metadata),
    };
    let prs: Vec<u64> = wr.pull_requests.iter().map(|p| p.number).collect();
    Ok(Normalized::Events(per_pull_request(base, delivery, prs)))
}

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
fn workflow_job(delivery: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
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

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    number: u64,
    pull_request: PullRequestBody,
    repository: Repo,
}

#[derive(Deserialize)]
struct PullRequestBody {
    head: PullHead,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    draft: Option<bool>,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<DateTime<Utc>>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    user: Option<PullUser>,
    #[serde(default)]
    base: Option<PullBase>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct PullUser {
    login: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct PullBase {
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
}

#[derive(Deserialize)]
struct PullHead {
    sha: String,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    repo: Option<HeadRepo>,
}

/// A `pull_request` delivery, whatever its action (`opened`, `synchronize`, `closed`,
/// `converted_to_draft`, `ready_for_review`, `labeled`…: every one carries the pull
/// request as it is), becomes a `runwatch.pull_request.v1` message: head commit, number,
/// `updated_at`, branch `<fork owner>:<ref>` for a fork as for `workflow_run`, and the
/// state (`state`, `draft`, `merged`; `state_at` = the pull request's `updated_at`), the
/// title (fitted: [`crate::pull_request::fit_title`]), the author (`user.login`; a bot when
/// `user.type` is `Bot` or the login ends in `[bot]`), the base branch (`base.ref`) and the
/// page (`html_url`). A field of the wrong type refuses the delivery as any malformed body.
fn pull_request(delivery: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
    let p: PullRequestPayload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    let pr = p.pull_request;
    let state = match pr.state.as_deref() {
        None => None,
        Some("open") => Some(LinkState::Open),
        Some("closed") => Some(LinkState::Closed),
        Some(other) => {
            return Err(NormalizeError::Value {
                field: "pull_request.state",
                value: other.chars().take(64).collect(),
            });
        }
    };
    let head = pr.head;
    let fork = head.repo.as_ref().filter(|h| h.id != p.repository.id);
    let branch = match (fork, head.git_ref) {
        (Some(h), Some(b)) => {
            let owner = h
                .owner
                .as_ref()
                .map(|o| o.login.clone())
                .unwrap_or_else(|| "fork".to_string());
            Some(format!("{owner}:{b}"))
        }
        (None, b) => b,
        (Some(_), None) => None,
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("github_event".into(), "pull_request".into());
    metadata.insert(
        "action".into(),
        p.action.chars().take(64).collect::<String>().into(),
    );
    if let Some(h) = fork {
        metadata.insert("fork".into(), true.into());
        if let Some(f) = &h.full_name {
            metadata.insert("head_repository".into(), f.clone().into());
        }
    }
    Ok(Normalized::PullRequest(Box::new(
        crate::pull_request::PullRequestLink {
            schema: crate::pull_request::PULL_REQUEST_SCHEMA.to_string(),
            event_id: delivery.to_string(),
            provider: Provider::Github,
            repository: p.repository.into_repository(),
            commit_sha: head.sha,
            pr_number: p.number,
            branch,
            updated_at: pr.updated_at,
            state,
            draft: pr.draft,
            // Older payloads lack `merged`; `merged_at` says it too.
            merged: pr.merged.or(state.map(|_| pr.merged_at.is_some())),
            state_at: state.map(|_| pr.updated_at),
            title: pr
                .title
                .as_deref()
                .and_then(|t| crate::pull_request::fit_title(t, MAX_TITLE_BYTES)),
            author: pr.user.map(|u| crate::pull_request::LinkAuthor {
                bot: u.kind.as_deref() == Some("Bot") || u.login.ends_with("[bot]"),
                login: u.login,
            }),
            base_branch: pr.base.and_then(|b| b.git_ref).filter(|b| !b.is_empty()),
            url: pr.html_url.filter(|u| !u.is_empty()),
            metadata: serde_json::Value::Object(metadata),
        },
    )))
}

/// The longest title a `pull_request` delivery passes on (the default string limit: the
/// worker cuts it further if its limit is lower).
const MAX_TITLE_BYTES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_carry_the_json_in_payload() {
        let json = r#"{"zen":"a+b & c=d %"}"#;
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", json)
            .finish();
        let got = json_body(Some("application/x-www-form-urlencoded"), form.as_bytes()).unwrap();
        assert_eq!(&*got, json.as_bytes());
        let got = json_body(
            Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
            form.as_bytes(),
        )
        .unwrap();
        assert_eq!(&*got, json.as_bytes());
        assert_eq!(
            &*json_body(Some("application/json"), json.as_bytes()).unwrap(),
            json.as_bytes()
        );
        assert_eq!(&*json_body(None, json.as_bytes()).unwrap(), json.as_bytes());
        assert!(matches!(
            json_body(Some("application/x-www-form-urlencoded"), b"other=1"),
            Err(NormalizeError::Field("payload"))
        ));
    }

    #[test]
    fn signatures() {
        let secrets = vec![Secret::new("old"), Secret::new("new")];
        let body = b"{\"zen\":\"x\"}";
        assert!(verify_signature(&secrets, Some(&sign(b"new", body)), body));
        assert!(verify_signature(&secrets, Some(&sign(b"old", body)), body));
        assert!(!verify_signature(
            &secrets,
            Some(&sign(b"other", body)),
            body
        ));
        assert!(!verify_signature(
            &secrets,
            Some(&sign(b"new", b"tampered")),
            body
        ));
        assert!(!verify_signature(&secrets, None, body));
        assert!(!verify_signature(&secrets, Some("sha1=00"), body));
        assert!(!verify_signature(&secrets, Some("sha256=zz"), body));
        assert!(!verify_signature(&[], Some(&sign(b"new", body)), body));
        // GitHub's documented test vector.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    fn run(prs: &str, head_repo_id: u64) -> Vec<u8> {
        format!(
            r#"{{"action":"completed","repository":{{"id":7,"name":"r","owner":{{"login":"o"}}}},
            "workflow":{{"name":"wf"}},
            "workflow_run":{{"id":99,"name":"","path":".github/workflows/ci.yml","head_branch":"main",
            "head_sha":"abc","run_attempt":2,"status":"completed","conclusion":"failure",
            "html_url":"u","updated_at":"2026-01-01T00:00:00Z","pull_requests":[{prs}],
            "head_repository":{{"id":{head_repo_id},"full_name":"forker/r","owner":{{"login":"forker"}}}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn one_event_per_pull_request() {
        let Normalized::Events(e) = normalize(
            "workflow_run",
            "d1",
            &run(r#"{"number":3},{"number":1}"#, 7),
            &GithubOptions::default(),
        )
        .unwrap() else {
            panic!()
        };
        let ids: Vec<_> = e
            .iter()
            .map(|e| (e.event_id.as_str(), e.pr_number))
            .collect();
        assert_eq!(ids, vec![("d1:1", Some(1)), ("d1:3", Some(3))]);
        assert_eq!(e[0].run.workflow, "wf");
        assert_eq!(e[0].run.attempt, 2);
        assert_eq!(e[0].branch.as_deref(), Some("main"));
        let Normalized::Events(e) = normalize(
            "workflow_run",
            "d1",
            &run(r#"{"number":3}"#, 7),
            &GithubOptions::default(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((e[0].event_id.as_str(), e[0].pr_number), ("d1", Some(3)));
    }

    #[test]
    fn forks_have_no_pull_request_and_a_qualified_branch() {
        let Normalized::Events(e) =
            normalize("workflow_run", "d", &run("", 8), &GithubOptions::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pr_number, None);
        assert_eq!(e[0].branch.as_deref(), Some("forker:main"));
        assert_eq!(e[0].metadata["fork"], true);
    }

    #[test]
    fn other_events_and_bad_bodies() {
        assert!(matches!(
            normalize("ping", "", b"{}", &GithubOptions::default()),
            Ok(Normalized::Ping)
        ));
        assert!(matches!(
            normalize("push", "d", b"x", &GithubOptions::default()),
            Ok(Normalized::Ignored { .. })
        ));
        assert!(matches!(
            normalize("workflow_job", "d", b"x", &GithubOptions::default()),
            Err(NormalizeError::Json(_))
        ));
        assert!(matches!(
            normalize("workflow_run", "d", b"nope", &GithubOptions::default()),
            Err(NormalizeError::Json(_))
        ));
        assert!(matches!(
            normalize("workflow_run", "", &run("", 7), &GithubOptions::default()),
            Err(NormalizeError::MissingHeader(_))
        ));
        let bad = String::from_utf8(run("", 7))
            .unwrap()
            .replace("\"completed\",\"conclusion\"", "\"weird\",\"conclusion\"");
        let err = normalize(
            "workflow_run",
            "d",
            bad.as_bytes(),
            &GithubOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("weird"), "{err}");
    }
}
