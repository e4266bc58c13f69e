//! `workflow_run` deliveries: one event per pull request of the run (none for a fork's).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::payload::{HeadRepo, Repo, per_pull_request, status_and_conclusion};
use crate::event::{Event, Provider, Run, SCHEMA};
use crate::ingest::{NormalizeError, Normalized};

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

/// A `workflow_run` delivery.
pub(super) fn workflow_run(delivery: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
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
