//! CircleCI outbound webhooks, pure: the `circleci-signature` check and the normalization
//! of `workflow-completed` deliveries into `runwatch.workflow_run.v1` events with provider
//! `circleci`.
//!
//! | CircleCI `workflow.status` | conclusion |
//! |---|---|
//! | `success` | `success` |
//! | `failed`, `error`, `failing` | `failure` |
//! | `canceled` | `cancelled` |
//! | `unauthorized` | `action_required` |
//! | `not_run` | `skipped` |
//!
//! One run per (commit, workflow name): run id = `workflow.name` (a re-run workflow gets a
//! new workflow id but keeps its name: it replaces the previous one), attempt =
//! [`super::report_attempt`] of `updated_at` (CircleCI sends no re-run counter), status
//! `completed`; `pr_number` from a `pull/<n>` branch (CircleCI's branch for a pull request
//! from a fork) — the payload carries no other pull request; branch = `pipeline.vcs.branch`;
//! repository = owner/name of `pipeline.vcs.target_repository_url` (else the last two
//! segments of `project.slug`), id = `project.id`; `updated_at` = `workflow.stopped_at`,
//! else `happened_at`. The event id is the payload's `id` (CircleCI's deduplication key).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::config::Secret;
use super::{NormalizeError, Normalized, buildkite, hmac_matches, report_attempt};
use crate::event::{Conclusion, Event, Provider, Run, SCHEMA, Status};

/// The `circleci-event-type` CircleCI sends for a finished workflow.
pub const WORKFLOW_COMPLETED: &str = "workflow-completed";

/// Whether `circleci-signature` (a comma-separated list of `v<N>=<hex>`; only `v1`, the
/// HMAC-SHA256 of the body, is understood) carries a `v1` that matches any secret.
pub fn verify(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let mut ok = false;
    for part in header.split(',') {
        if let Some(hex) = part.trim().strip_prefix("v1=")
            && let Some(tag) = hex::decode(hex).ok()
        {
            ok |= hmac_matches(secrets, &[body], &tag);
        }
    }
    ok
}

/// The `circleci-signature` value of `body` under `secret` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("v1={}", super::hmac_hex(secret, &[body]))
}

#[derive(Deserialize)]
struct Payload {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    happened_at: DateTime<Utc>,
    project: Project,
    workflow: Workflow,
    pipeline: Pipeline,
}

#[derive(Deserialize)]
struct Project {
    #[serde(default)]
    id: Option<String>,
    slug: String,
}

#[derive(Deserialize)]
struct Workflow {
    id: String,
    name: String,
    status: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    stopped_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Pipeline {
    #[serde(default)]
    number: Option<u64>,
    vcs: Vcs,
}

#[derive(Deserialize)]
struct Vcs {
    revision: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    target_repository_url: Option<String>,
    #[serde(default)]
    origin_repository_url: Option<String>,
}

/// The conclusion table of the module documentation.
pub fn map_status(s: &str) -> Option<Conclusion> {
    Some(match s {
        "success" => Conclusion::Success,
        "failed" | "error" | "failing" => Conclusion::Failure,
        "canceled" => Conclusion::Cancelled,
        "unauthorized" => Conclusion::ActionRequired,
        "not_run" => Conclusion::Skipped,
        _ => return None,
    })
}

/// Normalizes one delivery. `event_name` is `circleci-event-type` (or the body's `type`):
/// [`WORKFLOW_COMPLETED`] becomes an event, anything else (`job-completed`, …) is
/// [`Normalized::Ignored`].
pub fn normalize(event_name: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
    if event_name != WORKFLOW_COMPLETED {
        return Ok(Normalized::Ignored {
            kind: event_name.to_string(),
        });
    }
    let p: Payload = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    if p.kind != WORKFLOW_COMPLETED {
        return Err(NormalizeError::Value {
            field: "type",
            value: p.kind.chars().take(64).collect(),
        });
    }
    let w = p.workflow;
    let conclusion = map_status(&w.status).ok_or_else(|| NormalizeError::Value {
        field: "workflow.status",
        value: w.status.chars().take(64).collect(),
    })?;
    let (owner, name) = p
        .pipeline
        .vcs
        .target_repository_url
        .as_deref()
        .and_then(buildkite::owner_and_name)
        .or_else(|| buildkite::owner_and_name(&p.project.slug))
        .ok_or(NormalizeError::Field("project.slug"))?;
    let branch = p.pipeline.vcs.branch.filter(|b| !b.trim().is_empty());
    let pr_number = branch
        .as_deref()
        .and_then(|b| b.strip_prefix("pull/"))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0);
    let updated_at = w.stopped_at.unwrap_or(p.happened_at);
    let mut metadata = serde_json::Map::new();
    metadata.insert("circleci_workflow_id".into(), w.id.into());
    if let Some(n) = p.pipeline.number {
        metadata.insert("circleci_pipeline_number".into(), n.into());
    }
    if let Some(origin) = p.pipeline.vcs.origin_repository_url
        && Some(&origin) != p.pipeline.vcs.target_repository_url.as_ref()
    {
        metadata.insert("fork".into(), true.into());
        metadata.insert("head_repository".into(), origin.into());
    }
    let (repository, run_id) = buildkite::repository_and_run(
        p.pipeline.vcs.target_repository_url.as_deref(),
        (owner, name, p.project.id.filter(|i| !i.trim().is_empty())),
        "circleci",
        w.name.clone(),
    );
    Ok(Normalized::Events(vec![Event {
        schema: SCHEMA.to_string(),
        event_id: p.id,
        provider: Provider::Circleci,
        repository,
        commit_sha: p.pipeline.vcs.revision,
        branch,
        pr_number,
        run: Run {
            id: run_id,
            attempt: report_attempt(updated_at),
            workflow: w.name,
            status: Status::Completed,
            conclusion: Some(conclusion),
            url: w.url,
            updated_at,
        },
        metadata: serde_json::Value::Object(metadata),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secrets = vec![Secret::new("cc-secret")];
        let body = b"{\"a\":1}";
        let good = sign(b"cc-secret", body);
        assert!(verify(&secrets, Some(&good), body));
        assert!(verify(&secrets, Some(&format!("v2=00,{good}")), body));
        assert!(!verify(&secrets, Some(&sign(b"other", body)), body));
        assert!(!verify(&secrets, Some(&good), b"{\"a\":2}"));
        assert!(!verify(&secrets, None, body));
        assert!(!verify(&secrets, Some("v1=zz"), body));
    }

    #[test]
    fn statuses() {
        assert_eq!(map_status("failed"), Some(Conclusion::Failure));
        assert_eq!(map_status("error"), Some(Conclusion::Failure));
        assert_eq!(map_status("canceled"), Some(Conclusion::Cancelled));
        assert_eq!(map_status("running"), None);
    }
}
