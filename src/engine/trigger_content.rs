//! What a trigger carries of its group: its runs, pull request and repository.

use std::collections::BTreeMap;

use super::merge::RunState;
use super::repo::RepoRef;
use super::rules::Rule;
use super::{Clock, GroupState};
use crate::trigger::{TRIGGER_SCHEMA, Trigger, TriggerPullRequest, TriggerRepository, TriggerRun};

/// A trigger of `rule` for a commit (of a pull request or none), fired at `clock.wall`:
/// what every trigger carries; the caller sets its runs, branch, workflow, episode,
/// budget and known flaky workflows.
pub(super) fn new_trigger(
    rule: &Rule,
    id: uuid::Uuid,
    repo: &RepoRef,
    pr_number: Option<u64>,
    commit_sha: &str,
    state: &GroupState,
    clock: Clock,
) -> Trigger {
    Trigger {
        schema: TRIGGER_SCHEMA.to_string(),
        trigger_id: id,
        rule: rule.kind.as_str().to_string(),
        rule_name: rule.name.clone(),
        provider: repo.provider,
        repository: trigger_repository(repo),
        pr_number,
        commit_sha: commit_sha.to_string(),
        branch: None,
        workflow: None,
        episode: 0,
        runs: BTreeMap::new(),
        failed_workflows: Vec::new(),
        fired_at: clock.wall,
        budget: None,
        pull_request: trigger_pull_request(pr_number, state),
        known_flaky: Vec::new(),
        trace: None,
    }
}

pub(super) fn trigger_run(r: &RunState) -> TriggerRun {
    TriggerRun {
        attempt: r.attempt,
        workflow: r.workflow.clone(),
        status: r.status,
        conclusion: r.conclusion,
        url: r.url.clone(),
        updated_at: r.updated_at,
        jobs: Vec::new(),
        jobs_omitted: 0,
    }
}

/// What the group knows of its pull request, for the trigger: `None` without a pull
/// request or before any `pull_request` delivery said anything about it.
fn trigger_pull_request(pr: Option<u64>, state: &GroupState) -> Option<TriggerPullRequest> {
    let number = pr?;
    let info = state.pr_info.as_ref();
    let status = state.pr_status.as_ref();
    if info.is_none() && status.is_none() {
        return None;
    }
    let author = info.and_then(|i| i.author.as_ref());
    Some(TriggerPullRequest {
        number,
        title: info.and_then(|i| i.title.clone()),
        author: author.map(|a| a.login.clone()),
        author_is_bot: author.map(|a| a.bot),
        head_branch: info.and_then(|i| i.head_branch.clone()),
        base_branch: info.and_then(|i| i.base_branch.clone()),
        url: info.and_then(|i| i.url.clone()),
        draft: status.map(|s| s.draft),
        state: status.map(|s| s.state),
    })
}

fn trigger_repository(repo: &RepoRef) -> TriggerRepository {
    TriggerRepository {
        owner: repo.owner.clone(),
        name: repo.name.clone(),
        id: repo.external_id.clone(),
        internal_id: repo.internal_id,
    }
}
