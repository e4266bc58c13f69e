//! The verdict of every rule on one group, from stored state only (pure, no I/O).
//!
//! The verdict renders what the engine recorded and what it checks; it holds no rule of
//! its own. `all_completed_with_failure` ([`group`]): decided over a trigger budget in the
//! current episode (as the engine recorded it: which budget, used of limit, window); fired
//! in the current episode; then the engine's [`Check`](crate::engine::Check) of the group
//! (repository filtered out first), with a pending timer (settle, or a cooldown's end)
//! named before the other checks. The flips are counted up to the group's newest run's
//! `updated_at`, the event clock of its last decision at the earliest. A group where every
//! check passes, nothing fired and no timer is pending is a state the rule has not judged
//! yet, e.g. a rule added since the group's last event.
//!
//! `repeated_failure` ([`streak`]) fires from the group whose event completes a streak; its
//! verdict is fired (a trigger of this group), filtered out, waiting (none of the group's
//! runs has completed), or the state of the streaks the group's completed runs belong to.
//!
//! A pending timer does not say whether `settle` or a cooldown set it: with only one of the
//! two configured it is that one; with both, it is the cooldown when the timer is due
//! exactly when the repository's cooldown ends (within a millisecond), else settle.

mod delivery;
mod group;
mod streak;
#[cfg(test)]
mod tests;
mod types;
mod unmet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::engine::{RuleKind, RuleSet};

pub use streak::streak_keys;
pub use types::{
    Cause, Delivery, Explanation, FiredTrigger, GroupInfo, GroupView, JobInfo, OutboxRow,
    PendingRun, RuleExplanation, RunInfo, Shared, StreakInfo, Verdict, show_time, status_str,
};

/// The trigger ids whose outbox rows the verdicts look up besides the group's own rows:
/// the current episode of every rule that fired, and every fired streak.
pub fn trigger_ids_to_load(g: &GroupView, rules: &RuleSet, shared: &Shared) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for rule in rules.rules() {
        match rule.kind {
            RuleKind::AllCompletedWithFailure => {
                if let Some(st) = g
                    .state
                    .rules
                    .get(&rule.name)
                    .filter(|s| s.fired && s.over_budget.is_none())
                {
                    ids.push(rule.group_trigger_id(
                        &g.repo,
                        g.pr_number,
                        &g.commit_sha,
                        st.episode,
                    ));
                }
            }
            RuleKind::RepeatedFailure => {
                for key in &streak::rule_streak_keys(rule, g) {
                    if let Some(s) = shared
                        .streaks
                        .get(key)
                        .filter(|s| s.has_fired(rule.threshold))
                    {
                        ids.push(rule.streak_trigger_id(&g.repo, key, s));
                    }
                }
            }
        }
    }
    ids
}

/// Explains every rule on the group. `outbox` holds the group's rows and those named by
/// [`trigger_ids_to_load`]; `now` is the database's clock.
pub fn explain(
    g: &GroupView,
    rules: &RuleSet,
    outbox: &[OutboxRow],
    shared: &Shared,
    now: DateTime<Utc>,
) -> Explanation {
    let runs = g
        .state
        .runs
        .iter()
        .map(|(id, r)| RunInfo {
            run_id: id.clone(),
            workflow: r.workflow.clone(),
            attempt: r.attempt,
            status: r.status,
            conclusion: r.conclusion,
            updated_at: r.updated_at,
            url: r.url.clone(),
            jobs: Vec::new(),
        })
        .collect();
    let rules = rules
        .rules()
        .iter()
        .map(|rule| {
            let (verdict, reason) = match rule.kind {
                RuleKind::AllCompletedWithFailure => {
                    let (verdict, mut reason) = group::judge(rule, g, outbox, shared);
                    if let Some(st) = g
                        .state
                        .rules
                        .get(&rule.name)
                        .filter(|s| !s.fired && s.episode > 0)
                    {
                        reason.push_str(&format!(
                            " (episode {}: a re-run after the trigger of episode {} opened it)",
                            st.episode,
                            st.episode.saturating_sub(1)
                        ));
                    }
                    (verdict, reason)
                }
                RuleKind::RepeatedFailure => streak::judge(rule, g, outbox, shared),
            };
            RuleExplanation {
                rule: rule.name.clone(),
                kind: rule.kind.as_str(),
                verdict,
                reason,
            }
        })
        .collect();
    Explanation {
        explained_at: now,
        group: GroupInfo {
            id: g.id,
            provider: g.repo.provider,
            repository: format!("{}/{}", g.repo.owner, g.repo.name),
            repository_id: g.repo.internal_id,
            pr_number: g.pr_number,
            commit_sha: g.commit_sha.clone(),
            branch: g.branch.clone(),
            updated_at: g.updated_at,
            next_due: g.state.next_due(),
        },
        runs,
        rules,
    }
}
