//! `repeated_failure` on one group: the trigger it fired, or the streaks of its completed
//! runs as the engine keeps them.

use std::collections::BTreeSet;

use super::types::{Cause, FiredTrigger, GroupView, OutboxRow, Shared, StreakInfo, Verdict};
use super::{delivery, unmet};
use crate::engine::{Rule, RuleKind, RuleSet, StreakKey};
use crate::event::Status;

/// The streaks of the group's completed runs that `repeated_failure` rules count.
pub fn streak_keys(g: &GroupView, rules: &RuleSet) -> Vec<StreakKey> {
    rules
        .rules()
        .iter()
        .flat_map(|r| rule_streak_keys(r, g))
        .collect()
}

/// The streaks of the group's completed runs that `rule` counts (none for another kind).
pub(super) fn rule_streak_keys(rule: &Rule, g: &GroupView) -> Vec<StreakKey> {
    if rule.kind != RuleKind::RepeatedFailure
        || !rule.matches_repository(&g.repo.owner, &g.repo.name)
    {
        return Vec::new();
    }
    let keys: BTreeSet<StreakKey> = rule
        .relevant_runs(&g.state.runs)
        .into_iter()
        .filter(|(_, r)| r.status == Status::Completed)
        .map(|(_, r)| rule.streak_key(g.repo.internal_id, r))
        .collect();
    keys.into_iter().collect()
}

fn branch_words(branch: &str) -> String {
    if branch.is_empty() {
        "with no branch".to_string()
    } else {
        format!("on `{branch}`")
    }
}

/// `repeated_failure` on the group.
pub(super) fn judge(
    rule: &Rule,
    g: &GroupView,
    outbox: &[OutboxRow],
    shared: &Shared,
) -> (Verdict, String) {
    let mine: Vec<FiredTrigger> = outbox
        .iter()
        .filter(|r| r.group_id == Some(g.id))
        .filter_map(|r| {
            r.trigger
                .as_ref()
                .filter(|t| t.rule_name == rule.name)
                .map(|t| (r, t))
        })
        .map(|(r, t)| {
            let mut f = delivery::fired_trigger(r.trigger_id, outbox);
            f.branch = Some(t.branch.clone().unwrap_or_default());
            f.workflow = t.workflow.clone();
            f
        })
        .collect();
    if !mine.is_empty() {
        let words: Vec<String> = mine
            .iter()
            .map(|t| {
                format!(
                    "fired{} for the streak of `{}` {}: {}",
                    delivery::at_words(t),
                    t.workflow.as_deref().unwrap_or(""),
                    branch_words(t.branch.as_deref().unwrap_or("")),
                    delivery::delivery_words(t)
                )
            })
            .collect();
        return (Verdict::Fired { triggers: mine }, words.join("; "));
    }
    if !rule.matches_repository(&g.repo.owner, &g.repo.name) {
        return unmet::repository_filtered(g);
    }
    let runs = rule.relevant_runs(&g.state.runs);
    if g.state.runs.is_empty() {
        return unmet::no_runs();
    }
    if runs.is_empty() {
        return unmet::filtered(rule.dropping_filters(g.state.runs.values()));
    }
    if runs.iter().all(|(_, r)| r.status != Status::Completed) {
        return unmet::waiting(&runs);
    }
    let mut infos = Vec::new();
    let mut words = Vec::new();
    for key in rule_streak_keys(rule, g) {
        let state = shared.streaks.get(&key).cloned().unwrap_or_default();
        let in_a_row = state.window.iter().rev().take_while(|r| r.failed).count();
        let fired = state.has_fired(rule.threshold);
        let (trigger, in_outbox) = if fired {
            let id = rule.streak_trigger_id(&g.repo, &key, &state);
            (Some(id), Some(outbox.iter().any(|r| r.trigger_id == id)))
        } else {
            (None, None)
        };
        let what = format!(
            "the streak of `{}` {}",
            key.workflow,
            branch_words(&key.branch)
        );
        words.push(match (trigger, in_outbox) {
            (Some(id), Some(true)) => format!("{what} already fired (trigger {id}, from another group)"),
            (Some(id), _) => format!(
                "{what} already fired, but trigger {id} is not in the outbox (the streak ended during a cooldown, or the trigger was purged)"
            ),
            _ => format!(
                "{what} has {in_a_row} failure{} in a row, {} needed",
                if in_a_row == 1 { "" } else { "s" },
                rule.threshold
            ),
        });
        infos.push(StreakInfo {
            branch: key.branch.clone(),
            workflow: key.workflow.clone(),
            threshold: rule.threshold,
            failures_in_a_row: u32::try_from(in_a_row).unwrap_or(u32::MAX),
            fired,
            trigger_id: trigger,
            trigger_in_outbox: in_outbox,
        });
    }
    unmet::will_not_fire(Cause::Streak, Vec::new(), infos, words.join("; "))
}
