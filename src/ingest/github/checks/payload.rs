//! What GitHub's check suite, check run and status deliveries carry, as read here.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::super::payload::Repo;
use crate::ingest::config::GithubOptions;

#[derive(Deserialize)]
pub(super) struct App {
    #[serde(default)]
    pub(super) slug: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PullRef {
    pub(super) number: u64,
    #[serde(default)]
    pub(super) base: Option<PullBase>,
}

#[derive(Deserialize)]
pub(super) struct PullBase {
    #[serde(default)]
    pub(super) repo: Option<IdOnly>,
}

#[derive(Deserialize)]
pub(super) struct IdOnly {
    pub(super) id: u64,
}

#[derive(Deserialize)]
pub(super) struct Suite {
    pub(super) id: u64,
    #[serde(default)]
    pub(super) head_branch: Option<String>,
    pub(super) head_sha: String,
    #[serde(default)]
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) conclusion: Option<String>,
    #[serde(default)]
    pub(super) pull_requests: Vec<PullRef>,
    #[serde(default)]
    pub(super) app: Option<App>,
    #[serde(default)]
    pub(super) updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub(super) struct SuitePayload {
    #[serde(default)]
    pub(super) action: Option<String>,
    pub(super) check_suite: Suite,
    pub(super) repository: Repo,
}

#[derive(Deserialize)]
pub(super) struct CheckRun {
    #[serde(default)]
    pub(super) id: Option<u64>,
    #[serde(default)]
    pub(super) output: Option<Output>,
    pub(super) name: String,
    pub(super) head_sha: String,
    #[serde(default)]
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) conclusion: Option<String>,
    #[serde(default)]
    pub(super) html_url: Option<String>,
    #[serde(default)]
    pub(super) started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(super) completed_at: Option<DateTime<Utc>>,
    pub(super) check_suite: Suite,
    #[serde(default)]
    pub(super) pull_requests: Vec<PullRef>,
    #[serde(default)]
    pub(super) app: Option<App>,
}

#[derive(Deserialize)]
pub(super) struct Output {
    #[serde(default)]
    pub(super) title: Option<String>,
    #[serde(default)]
    pub(super) summary: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RunPayload {
    #[serde(default)]
    pub(super) action: Option<String>,
    pub(super) check_run: CheckRun,
    pub(super) repository: Repo,
}

#[derive(Deserialize)]
pub(super) struct Branch {
    pub(super) name: String,
    pub(super) commit: BranchCommit,
}

#[derive(Deserialize)]
pub(super) struct BranchCommit {
    pub(super) sha: String,
}

#[derive(Deserialize)]
pub(super) struct StatusPayload {
    pub(super) sha: String,
    pub(super) context: String,
    pub(super) state: String,
    #[serde(default)]
    pub(super) target_url: Option<String>,
    #[serde(default)]
    pub(super) branches: Vec<Branch>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) repository: Repo,
}

pub(super) fn app_ignored(app: Option<&App>, options: &GithubOptions) -> bool {
    app.and_then(|a| a.slug.as_deref())
        .is_some_and(|slug| options.ignore_check_apps.iter().any(|i| i == slug))
}

pub(super) fn app_name(app: Option<&App>) -> String {
    let nonempty = |s: Option<&String>| s.filter(|s| !s.trim().is_empty()).cloned();
    app.and_then(|a| nonempty(a.name.as_ref()).or_else(|| nonempty(a.slug.as_ref())))
        .unwrap_or_else(|| "checks".to_string())
}

/// Pull request numbers whose base is `repo_id` (a pull request listed without its base is
/// kept).
pub(super) fn pull_numbers(prs: &[PullRef], repo_id: u64) -> Vec<u64> {
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
