//! Trigger budgets (docs/design.md "Budgets"): `all_completed_with_failure` rules with
//! `max_triggers_per_pull_request` / `max_triggers_per_repository` publish at most that
//! many triggers for one pull request / one repository within any `budget_window` (a
//! sliding window on the wall clock, event time in `simulate`, like `cooldown`).
//!
//! A budget is shared by every group of its pull request or repository, so it lives in the
//! [`super::Ledger`]: the caller loads and locks the rows [`super::Engine::budget_keys`]
//! names. A row holds the triggers published within the window (at most the limit: older
//! ones are dropped when the row is written), each with its trigger id, so a decision that
//! is taken again (the same trigger id) is not counted twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::repo::RepoRef;
use super::rules::Rule;
use super::time::{plus, to_chrono};
use crate::trigger::{BudgetUse, TriggerBudget};

/// One budget's row: a rule's budget for one pull request (`pr_number` > 0) or for the
/// repository (`pr_number` = 0; pull request numbers start at 1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BudgetKey {
    pub repository_id: i64,
    pub rule: String,
    pub pr_number: u64,
}

/// One published trigger counted in a budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetEntry {
    /// When it fired (the wall clock).
    pub at: DateTime<Utc>,
    pub trigger_id: Uuid,
}

/// The triggers a budget counts, oldest first (those older than the window may linger
/// until the row is next written; they are never counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    pub fired: Vec<BudgetEntry>,
}

impl BudgetState {
    /// Triggers within the window ending at `now`: fired after `now - window`.
    fn used(&self, now: DateTime<Utc>, window: chrono::Duration) -> usize {
        let start = now
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.fired.iter().filter(|e| e.at > start).count()
    }

    fn holds(&self, id: Uuid) -> bool {
        self.fired.iter().any(|e| e.trigger_id == id)
    }

    /// Counts `id` fired at `now`, dropping what left the window and keeping at most
    /// `limit` entries (the newest).
    fn record(&mut self, id: Uuid, now: DateTime<Utc>, window: chrono::Duration, limit: u32) {
        if self.holds(id) {
            return;
        }
        let start = now
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.fired.retain(|e| e.at > start);
        self.fired.push(BudgetEntry {
            at: now,
            trigger_id: id,
        });
        self.fired.sort_by_key(|e| e.at);
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        if self.fired.len() > keep {
            let drop = self.fired.len() - keep;
            self.fired.drain(..drop);
        }
    }

    /// When nothing in the row counts any more (the newest entry plus `window`); `None`
    /// when it is empty.
    pub fn expires_at(&self, window: std::time::Duration) -> Option<DateTime<Utc>> {
        self.fired
            .iter()
            .map(|e| e.at)
            .max()
            .map(|t| plus(t, to_chrono(window)))
    }
}

/// Which budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    PullRequest,
    Repository,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::PullRequest => "pull_request",
            BudgetScope::Repository => "repository",
        }
    }

    /// "this pull request" / "this repository".
    pub fn words(self) -> &'static str {
        match self {
            BudgetScope::PullRequest => "this pull request",
            BudgetScope::Repository => "this repository",
        }
    }
}

/// A decision the rule took but did not publish: the budget it would have exceeded.
/// Recorded in the group's [`super::EpisodeState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverBudget {
    pub scope: BudgetScope,
    /// Triggers already published within the window (at least `limit`).
    pub used: u32,
    pub limit: u32,
    pub window_seconds: u64,
    /// When the decision was taken (the wall clock).
    pub at: DateTime<Utc>,
}

/// A window in words: `24h`, `7d`, `90m`, `45s` (the largest unit that divides it; days
/// only from two days on, so a day reads `24h`).
pub fn window_words(seconds: u64) -> String {
    const DAY: u64 = 86_400;
    if seconds >= 2 * DAY && seconds.is_multiple_of(DAY) {
        format!("{}d", seconds / DAY)
    } else if seconds >= 3600 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// The rule's budgets for a group: (scope, key, limit), the pull request's first.
pub(crate) fn budgets_of(
    rule: &Rule,
    repo: &RepoRef,
    pr_number: Option<u64>,
) -> Vec<(BudgetScope, BudgetKey, u32)> {
    let mut out = Vec::new();
    if let (Some(limit), Some(pr)) = (rule.max_triggers_per_pull_request, pr_number) {
        out.push((
            BudgetScope::PullRequest,
            BudgetKey {
                repository_id: repo.internal_id,
                rule: rule.name.clone(),
                pr_number: pr,
            },
            limit,
        ));
    }
    if let Some(limit) = rule.max_triggers_per_repository {
        out.push((
            BudgetScope::Repository,
            BudgetKey {
                repository_id: repo.internal_id,
                rule: rule.name.clone(),
                pr_number: 0,
            },
            limit,
        ));
    }
    out
}

/// The first of the rule's budgets that trigger `id` firing at `wall` would exceed, or
/// `None` when it fits them all (or was already counted: the same decision taken again).
pub(crate) fn over(
    rule: &Rule,
    repo: &RepoRef,
    pr_number: Option<u64>,
    states: &BTreeMap<BudgetKey, BudgetState>,
    wall: DateTime<Utc>,
    id: Uuid,
) -> Option<OverBudget> {
    let window = to_chrono(rule.budget_window);
    for (scope, key, limit) in budgets_of(rule, repo, pr_number) {
        let Some(state) = states.get(&key) else {
            continue;
        };
        if state.holds(id) {
            continue;
        }
        let used = state.used(wall, window);
        if used >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Some(OverBudget {
                scope,
                used: u32::try_from(used).unwrap_or(u32::MAX),
                limit,
                window_seconds: rule.budget_window.as_secs(),
                at: wall,
            });
        }
    }
    None
}

/// Counts trigger `id` in each of the rule's budgets; returns what the trigger carries
/// (`None` for a rule without a budget).
pub(crate) fn record(
    rule: &Rule,
    repo: &RepoRef,
    pr_number: Option<u64>,
    states: &mut BTreeMap<BudgetKey, BudgetState>,
    wall: DateTime<Utc>,
    id: Uuid,
) -> Option<TriggerBudget> {
    let budgets = budgets_of(rule, repo, pr_number);
    if budgets.is_empty() {
        return None;
    }
    let window = to_chrono(rule.budget_window);
    let mut out = TriggerBudget::default();
    for (scope, key, limit) in budgets {
        let state = states.entry(key).or_default();
        state.record(id, wall, window, limit);
        let used = BudgetUse {
            used: u32::try_from(state.used(wall, window)).unwrap_or(u32::MAX),
            limit,
            window_seconds: rule.budget_window.as_secs(),
        };
        match scope {
            BudgetScope::PullRequest => out.pull_request = Some(used),
            BudgetScope::Repository => out.repository = Some(used),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(s)
    }

    #[test]
    fn windows_in_words() {
        for (s, w) in [
            (86_400, "24h"),
            (7 * 86_400, "7d"),
            (5400, "90m"),
            (45, "45s"),
            (3600, "1h"),
            (90_000, "25h"),
            (61, "61s"),
        ] {
            assert_eq!(window_words(s), w);
        }
    }

    #[test]
    fn the_window_slides_and_the_row_stays_bounded() {
        let w = chrono::Duration::seconds(100);
        let mut s = BudgetState::default();
        for i in 0..5u128 {
            s.record(Uuid::from_u128(i), t(i as i64 * 10), w, 3);
        }
        // At most the limit, the newest.
        assert_eq!(s.fired.len(), 3);
        assert_eq!(s.fired[0].at, t(20));
        assert_eq!(s.used(t(40), w), 3);
        // 20 leaves the window at 120 (the window is (now - 100, now]).
        assert_eq!(s.used(t(119), w), 3);
        assert_eq!(s.used(t(120), w), 2);
        assert_eq!(s.used(t(141), w), 0);
        // The same trigger is not counted twice.
        s.record(Uuid::from_u128(4), t(50), w, 3);
        assert_eq!(s.fired.len(), 3);
        assert!(s.holds(Uuid::from_u128(4)));
        // Writing drops what left the window.
        s.record(Uuid::from_u128(9), t(135), w, 3);
        assert_eq!(s.fired.len(), 2);
        assert_eq!(
            s.expires_at(std::time::Duration::from_secs(100)),
            Some(t(235))
        );
    }
}
