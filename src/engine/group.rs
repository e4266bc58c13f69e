//! A group's state: one merged state per run and, per rule, the episode bookkeeping
//! (fired or not, settle / cooldown due time).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::merge::RunState;

/// When a timer is due: whichever comes first of the event-time and the wall-clock due time.
/// In `simulate` both clocks are event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    pub event: DateTime<Utc>,
    pub wall: DateTime<Utc>,
}

/// A rule's bookkeeping for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeState {
    /// Starts at 0; a re-run after a trigger opens the next one when `refire_on_rerun`.
    /// Like every field here, not stored while it has its default value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub episode: u32,
    /// The rule has fired in the current episode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fired: bool,
    /// The highest run attempt the group had when the rule fired. Kept for states written
    /// before `fired_attempts` existed; new states use `fired_attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fired_max_attempt: u32,
    /// Each run's attempt when the rule last fired (the runs the rule saw then).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fired_attempts: BTreeMap<String, u32>,
    /// A settle or cooldown timer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Due>,
    /// `fired` was taken over from the commit's group without a pull request, which fired
    /// before the commit was known to belong to this pull request (`require_pr = false`):
    /// the trigger is that group's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherited: bool,
    /// The episode's decision was over a trigger budget: taken (`fired` is set, so it is
    /// not judged again in this episode) but not published (docs/design.md "Budgets").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_budget: Option<super::budget::OverBudget>,
}

/// For `skip_serializing_if`: a counter at its default.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl EpisodeState {
    /// Records that the rule decided in the current episode (fired, or over budget) on runs
    /// at these attempts: it does not decide again in this episode, and a re-run is a run
    /// with a higher attempt than it had then. No timer is left pending.
    pub fn decide<'a>(&mut self, runs: impl IntoIterator<Item = (&'a String, u32)>) {
        self.fired_attempts = runs
            .into_iter()
            .map(|(id, attempt)| (id.clone(), attempt))
            .collect();
        self.fired_max_attempt = self.fired_attempts.values().copied().max().unwrap_or(0);
        self.fired = true;
        self.due = None;
    }

    /// Whether a run was re-run since the rule last fired: some run has a higher attempt
    /// than it had then, a run unknown then counting as attempt 1 (DESIGN.md "Rules").
    pub fn rerun_since_fire<'a>(&self, runs: impl IntoIterator<Item = (&'a String, u32)>) -> bool {
        let legacy = self.fired_attempts.is_empty();
        runs.into_iter().any(|(id, attempt)| {
            if legacy {
                attempt > self.fired_max_attempt.max(1)
            } else {
                attempt > self.fired_attempts.get(id).copied().unwrap_or(1)
            }
        })
    }
}

/// Everything runwatch keeps about one (repository, pull request, commit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    #[serde(default)]
    pub runs: BTreeMap<String, RunState>,
    /// Per rule; a rule at its default bookkeeping has no entry (see `Engine`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, EpisodeState>,
    /// The head commit of the group's pull request as last reported by a `pull_request`
    /// delivery, set by the caller before the engine runs; `only_head_commit` rules do not
    /// fire for a group whose commit is not the head. Not stored with the group (the store
    /// keeps heads per pull request).
    #[serde(skip)]
    pub pr_head: Option<String>,
    /// The group's pull request's state as last reported (open, draft, closed, merged), set
    /// by the caller like `pr_head`; `only_open` / `skip_draft` rules read it. Not stored
    /// with the group (the store keeps it per pull request, next to the head).
    #[serde(skip)]
    pub pr_status: Option<super::pull::PullStatus>,
    /// The group's pull request's title, author, branches and url as last reported, set by
    /// the caller like `pr_head`; the trigger carries them and `authors`,
    /// `exclude_authors`, `skip_bots` read the author. Not stored with the group (the store
    /// keeps it per pull request, next to the head).
    #[serde(skip)]
    pub pr_info: Option<super::pull::PullInfo>,
    /// For a group without a pull request: its commit is known to belong to one, so its
    /// runs are judged in that pull request's group and this group does not fire (a run is
    /// never announced twice, `require_pr = false`). Set by the caller; not stored.
    #[serde(skip)]
    pub commit_in_pull: bool,
}

impl GroupState {
    /// The earliest pending timer, per clock: (event-time due, wall-clock due).
    pub fn next_due(&self) -> Option<Due> {
        self.rules
            .values()
            .filter_map(|r| r.due)
            .reduce(|a, b| Due {
                event: a.event.min(b.event),
                wall: a.wall.min(b.wall),
            })
    }

    /// Whether any rule has fired in its current episode or still waits on a timer.
    pub fn has_pending_timer(&self) -> bool {
        self.rules.values().any(|r| r.due.is_some())
    }
}
