//! `pull_request` deliveries: a `runwatch.pull_request.v1` link (head, state, info).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::payload::{HeadRepo, Repo};
use crate::event::Provider;
use crate::ingest::{NormalizeError, Normalized};
use crate::pull_request::LinkState;

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
pub(super) fn pull_request(delivery: &str, body: &[u8]) -> Result<Normalized, NormalizeError> {
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
