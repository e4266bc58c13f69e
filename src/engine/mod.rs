//! The pure rule engine: state + event + clock → new state + triggers. No I/O.
//!
//! The worker (state in Postgres, under row locks) and `runwatch simulate` (state in
//! memory) call the same functions:
//! - [`Engine::apply`] fires the group's due timers, merges the event's run, and evaluates
//!   every rule on the new state;
//! - [`Engine::fire_due`] fires a group's due settle / cooldown timers on their own.
//!
//! State that spans groups (failure streaks, per-repository cooldowns, flips) lives in a
//! [`Ledger`] that the caller loads (and locks) for the keys [`Engine::streak_keys`] and
//! [`Engine::cooldown_keys`] name, the trigger budgets [`Engine::budget_keys`] names, and the
//! flips of the workflows of the runs for which [`Engine::may_count_flips`] holds.

pub mod association;
pub mod budget;
mod clock;
mod cooldown;
mod evaluate;
pub mod flaky;
pub mod group;
pub mod jobs;
pub mod merge;
pub mod pull;
pub mod reasons;
mod repo;
pub mod routing;
pub mod rules;
mod stored_run;
pub mod streak;
mod time;
mod trigger_content;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::event::{Event, Limits, RejectCode, Rejection, Status};
use crate::trigger::Trigger;

pub use budget::{BudgetKey, BudgetScope, BudgetState, OverBudget};
pub use clock::Clock;
use clock::take_due;
pub use cooldown::CooldownKey;
pub use flaky::{FlakySkip, Flip, FlipKey, Flips};
pub use group::{Due, EpisodeState, GroupState};
pub use jobs::{JobBook, JobKey, JobState};
pub use merge::RunState;
pub use pull::{AuthorBlock, PullAuthor, PullBlock, PullInfo, PullState, PullStatus};
pub use reasons::{Check, Judgment, Reason};
pub use repo::RepoRef;
pub use rules::{Rule, RuleKind, RuleSet};
pub use streak::{StreakKey, StreakRun, StreakState};

/// The identity of a group and its state.
#[derive(Debug)]
pub struct GroupCtx<'a> {
    pub repo: &'a RepoRef,
    pub pr_number: Option<u64>,
    pub commit_sha: &'a str,
    /// The latest branch seen for the group.
    pub branch: &'a mut Option<String>,
    pub state: &'a mut GroupState,
}

/// State shared by several groups, loaded and locked by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub streaks: BTreeMap<StreakKey, StreakState>,
    pub cooldowns: BTreeMap<CooldownKey, DateTime<Utc>>,
    /// Trigger budgets (rules with `max_triggers_per_*`).
    pub budgets: BTreeMap<BudgetKey, BudgetState>,
    /// Flips per (repository, workflow) (`flaky.rs`): the caller loads, for the workflows
    /// of the groups it hands over, the newest [`flaky::MAX_FLIPS_COUNTED`] dated after its
    /// event clock minus [`RuleSet::longest_flaky_window`]; the engine adds the flips it
    /// finds, which the caller writes (no lock: a flip is only ever added or moved to a
    /// greater attempt, see [`flaky::record`]).
    pub flips: BTreeMap<FlipKey, Flips>,
}

/// The rule engine.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RuleSet,
    limits: Limits,
}

impl Engine {
    pub fn new(rules: RuleSet, limits: Limits) -> Engine {
        Engine { rules, limits }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The streaks an event may touch (only completed runs of `repeated_failure` rules).
    pub fn streak_keys(&self, repo: &RepoRef, event: &Event) -> Vec<StreakKey> {
        if event.run.status != Status::Completed {
            return Vec::new();
        }
        self.rules
            .rules()
            .iter()
            .filter(|r| {
                r.kind == RuleKind::RepeatedFailure
                    && r.matches_repository(&repo.owner, &repo.name)
                    && r.matches_run(&event.run.workflow, event.branch.as_deref())
            })
            .map(|r| r.streak_key(repo.internal_id, &RunState::from_event(event)))
            .collect()
    }

    /// The cooldown rows a decision for this repository may read or write.
    pub fn cooldown_keys(&self, repo: &RepoRef) -> Vec<CooldownKey> {
        self.rules
            .rules()
            .iter()
            .filter(|r| !r.cooldown.is_zero() && r.matches_repository(&repo.owner, &repo.name))
            .map(|r| CooldownKey {
                repository_id: repo.internal_id,
                rule: r.name.clone(),
            })
            .collect()
    }

    /// The budget rows a decision for the group of (`repo`, `pr_number`) may read or write:
    /// none unless a rule has a budget.
    pub fn budget_keys(&self, repo: &RepoRef, pr_number: Option<u64>) -> Vec<BudgetKey> {
        self.rules
            .rules()
            .iter()
            .filter(|r| {
                r.kind == RuleKind::AllCompletedWithFailure
                    && r.has_budget()
                    && r.matches_repository(&repo.owner, &repo.name)
            })
            .flat_map(|r| budget::budgets_of(r, repo, pr_number))
            .map(|(_, key, _)| key)
            .collect()
    }

    /// Whether a decision may count the flips of this run's workflow: the run completed
    /// with a conclusion some `all_completed_with_failure` rule counts as a failure (only
    /// failed workflows can be known flaky). The caller loads the flips of those workflows.
    pub fn may_count_flips(&self, run: &RunState) -> bool {
        run.status == Status::Completed
            && self.rules.rules().iter().any(|r| {
                r.kind == RuleKind::AllCompletedWithFailure && r.is_failure(run.conclusion)
            })
    }

    /// Applies one event to its group: fires the group's due timers, merges the run,
    /// evaluates the rules. Returns the triggers to publish, or a rejection (the group
    /// would exceed `limits.max_runs_per_group`), in which case nothing changed.
    pub fn apply(
        &self,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        event: &Event,
        clock: Clock,
    ) -> Result<Vec<Trigger>, Rejection> {
        if !g.state.runs.contains_key(&event.run.id)
            && g.state.runs.len() >= self.limits.max_runs_per_group
        {
            return Err(Rejection::new(
                RejectCode::TooManyRuns,
                format!(
                    "the group already holds {} runs, the limit is {}",
                    g.state.runs.len(),
                    self.limits.max_runs_per_group
                ),
            ));
        }
        let mut out = self.fire_due(g, ledger, clock);
        let incoming = RunState::from_event(event);
        let mut slot = g.state.runs.remove(&event.run.id);
        let flip_before = slot.as_ref().and_then(RunState::flip);
        let changed = merge::merge_into(&mut slot, incoming);
        if let Some(s) = slot {
            self.note_flip(g.repo, ledger, &event.run.id, &s, flip_before, clock);
            g.state.runs.insert(event.run.id.clone(), s);
        }
        if changed && event.branch.is_some() {
            g.branch.clone_from(&event.branch);
        }
        for rule in self.rules.rules() {
            match rule.kind {
                // Judged on every event, changed runs or not: what the caller hands over
                // besides the runs (the pull request's state and head) may have changed
                // since the last judgment (a pull request reopened, marked ready). On an
                // unchanged state the judgment is idempotent, so a duplicate still changes
                // nothing.
                RuleKind::AllCompletedWithFailure => {
                    out.extend(self.evaluate_group(rule, g, ledger, clock, false));
                }
                // A streak counts each run by its latest *completed* attempt, which the
                // group may already have replaced with a newer attempt's `queued`: the
                // streak is told about every completed event, changed group or not.
                RuleKind::RepeatedFailure => {
                    out.extend(self.record_streak(rule, g, ledger, event, clock));
                }
            }
        }
        Ok(out)
    }

    /// Fires the group's due timers and judges the group rules again on its state as it is:
    /// for a group whose pull request's state changed (closed, merged, reopened, ready for
    /// review) while its runs did not. A closed pull request's pending timers are dropped;
    /// a reopened one's group fires if its runs say so.
    pub fn reconsider(
        &self,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        clock: Clock,
    ) -> Vec<Trigger> {
        let mut out = self.fire_due(g, ledger, clock);
        if g.state.runs.is_empty() {
            return out;
        }
        for rule in self.rules.rules() {
            if rule.kind == RuleKind::AllCompletedWithFailure {
                out.extend(self.evaluate_group(rule, g, ledger, clock, false));
            }
        }
        out
    }

    /// Fires the group's timers that are due at `clock`.
    pub fn fire_due(
        &self,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        clock: Clock,
    ) -> Vec<Trigger> {
        let mut out = Vec::new();
        for rule in self.rules.rules() {
            if take_due(rule, g.state, clock) {
                out.extend(self.evaluate_group(rule, g, ledger, clock, true));
            }
        }
        out
    }

    /// Why each group rule would or would not fire on the group as it stands (as
    /// [`Engine::reconsider`] judges it, due timers firing), worked out on a copy: nothing
    /// of `g` or `ledger` changes.
    pub fn judge(&self, g: &GroupCtx<'_>, ledger: &Ledger, clock: Clock) -> Vec<Judgment> {
        let mut state = g.state.clone();
        let mut branch = g.branch.clone();
        let mut ledger = ledger.clone();
        let mut copy = GroupCtx {
            repo: g.repo,
            pr_number: g.pr_number,
            commit_sha: g.commit_sha,
            branch: &mut branch,
            state: &mut state,
        };
        self.rules
            .rules()
            .iter()
            .filter(|rule| rule.kind == RuleKind::AllCompletedWithFailure)
            .map(|rule| {
                let due = take_due(rule, copy.state, clock);
                let (_, reason) = self.evaluate_group_why(rule, &mut copy, &mut ledger, clock, due);
                Judgment {
                    rule: rule.name.clone(),
                    reason,
                }
            })
            .collect()
    }

    /// Records the run's flip in the ledger when the merge made one (or moved it to a later
    /// passing attempt). The flip is dated no later than the event clock (an event dated
    /// ahead of it cannot make a workflow flaky for longer than its window).
    fn note_flip(
        &self,
        repo: &RepoRef,
        ledger: &mut Ledger,
        run_id: &str,
        run: &RunState,
        before: Option<Flip>,
        clock: Clock,
    ) -> bool {
        let Some(mut flip) = run.flip() else {
            return false;
        };
        if before == Some(flip) || !self.rules.counts_flips() {
            return false;
        }
        flip.at = flip.at.min(clock.event);
        let key = FlipKey {
            repository_id: repo.internal_id,
            workflow: run.workflow.clone(),
        };
        flaky::record(ledger.flips.entry(key).or_default(), run_id, flip)
    }
}
