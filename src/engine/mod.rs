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

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Limits, RejectCode, Rejection, Status};
use crate::trigger::{TRIGGER_SCHEMA, Trigger, TriggerPullRequest, TriggerRepository, TriggerRun};

pub use budget::{BudgetKey, BudgetScope, BudgetState, OverBudget};
pub use flaky::{FlakySkip, Flip, FlipKey, Flips};
pub use group::{Due, EpisodeState, GroupState};
pub use jobs::{JobBook, JobKey, JobState};
pub use merge::RunState;
pub use pull::{AuthorBlock, PullAuthor, PullBlock, PullInfo, PullState, PullStatus};
pub use reasons::{Check, Judgment, Reason};
pub use repo::RepoRef;
pub use rules::{Rule, RuleKind, RuleSet};
pub use streak::{StreakKey, StreakRun, StreakState};
use time::{plus, to_chrono};

/// The two clocks a decision sees. `event` is the largest `run.updated_at` seen (event
/// time); `wall` is the real time in the worker and equals `event` in `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub event: DateTime<Utc>,
    pub wall: DateTime<Utc>,
}

impl Clock {
    pub fn event_time(t: DateTime<Utc>) -> Clock {
        Clock { event: t, wall: t }
    }

    /// The clock after seeing an event that happened at `t`, at wall time `wall`. Event time
    /// never moves back, and never past `wall + max_lead`: an event dated further ahead (a
    /// producer bug, milliseconds read as seconds) still merges, but cannot make every other
    /// group's timers due.
    pub fn advance(
        self,
        t: DateTime<Utc>,
        wall: DateTime<Utc>,
        max_lead: std::time::Duration,
    ) -> Clock {
        Clock {
            event: self.event.max(t.min(lead_bound(wall, max_lead))),
            wall,
        }
    }

    /// Whether `t` is further ahead of `wall` than `max_lead` (see [`Clock::advance`]).
    pub fn is_skewed(t: DateTime<Utc>, wall: DateTime<Utc>, max_lead: std::time::Duration) -> bool {
        t > lead_bound(wall, max_lead)
    }

    fn is_due(&self, due: &Due) -> bool {
        due.event <= self.event || due.wall <= self.wall
    }

    fn due_after(&self, d: chrono::Duration) -> Due {
        Due {
            event: plus(self.event, d),
            wall: plus(self.wall, d),
        }
    }
}

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

/// Per-repository cooldown bookkeeping: when a rule last fired for a repository (wall clock).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CooldownKey {
    pub repository_id: i64,
    pub rule: String,
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

    /// `all_completed_with_failure` on one group. A rule whose bookkeeping is left at its
    /// default keeps no entry in the group's state: every reader takes a missing entry as
    /// the default, and the state stays as small as it is stored.
    fn evaluate_group(
        &self,
        rule: &Rule,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        clock: Clock,
        timer_fired: bool,
    ) -> Option<Trigger> {
        self.evaluate_group_why(rule, g, ledger, clock, timer_fired)
            .0
    }

    /// `all_completed_with_failure` on one group: the trigger, if it fired, and why it did
    /// or did not. A rule whose bookkeeping is left at its default (not fired, no timer)
    /// keeps no entry in the group's state.
    fn evaluate_group_why(
        &self,
        rule: &Rule,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        clock: Clock,
        timer_fired: bool,
    ) -> (Option<Trigger>, Reason) {
        let judged = self.judge_group(rule, g, ledger, clock, timer_fired);
        if g.state
            .rules
            .get(&rule.name)
            .is_some_and(|st| *st == EpisodeState::default())
        {
            g.state.rules.remove(&rule.name);
        }
        judged
    }

    /// The rule's judgment of one group, with its reason.
    fn judge_group(
        &self,
        rule: &Rule,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        clock: Clock,
        timer_fired: bool,
    ) -> (Option<Trigger>, Reason) {
        let check = rule.check_group(
            reasons::Subject {
                repo: g.repo,
                pr_number: g.pr_number,
                commit_sha: g.commit_sha,
                state: g.state,
            },
            |w| {
                ledger.flips.get(&FlipKey {
                    repository_id: g.repo.internal_id,
                    workflow: w.to_string(),
                })
            },
            clock.event,
        );
        let (failed_workflows, known_flaky) = match &check {
            Check::Repository => return (None, Reason::Unmet(check)),
            Check::Holds {
                failed_workflows,
                known_flaky,
            } => (failed_workflows.clone(), known_flaky.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        let relevant = rule.relevant_runs(&g.state.runs);
        let runs: BTreeMap<String, TriggerRun> = relevant
            .iter()
            .map(|(id, r)| ((*id).clone(), trigger_run(r)))
            .collect();

        let st = g.state.rules.entry(rule.name.clone()).or_default();
        if rule.refire_on_rerun
            && st.fired
            && st.rerun_since_fire(relevant.iter().map(|(id, r)| (*id, r.attempt)))
        {
            st.episode += 1;
            st.fired = false;
            st.inherited = false;
            st.due = None;
            st.over_budget = None;
        }
        if st.fired {
            st.due = None;
            return (None, Reason::AlreadyFired);
        }
        if !check.holds() {
            st.due = None;
            return (None, Reason::Unmet(check));
        }
        if !timer_fired && !rule.settle.is_zero() {
            let due = *st
                .due
                .get_or_insert_with(|| clock.due_after(to_chrono(rule.settle)));
            return (None, Reason::Settling(due));
        }
        if !timer_fired && let Some(due) = st.due {
            // Deferred by a cooldown: wait for its timer.
            return (None, Reason::Cooldown(due));
        }
        let episode = st.episode;
        let id = rule.group_trigger_id(g.repo, g.pr_number, g.commit_sha, episode);
        // Over budget: decided, recorded, not published. A running cooldown still defers
        // first (the budget may have room when it ends); the cooldown is not spent.
        let over = rule
            .has_budget()
            .then(|| budget::over(rule, g.repo, g.pr_number, &ledger.budgets, clock.wall, id))
            .flatten();
        if let Some(over) = over {
            if let Some(due) = cooldown_pending(rule, g.repo, ledger, clock) {
                st.due = Some(due);
                return (None, Reason::Cooldown(due));
            }
            st.decide(relevant.iter().map(|(id, r)| (*id, r.attempt)));
            st.over_budget = Some(over.clone());
            return (None, Reason::OverBudget(over));
        }
        if let Some(due) = cooldown_deferral(rule, g.repo, ledger, clock) {
            st.due = Some(due);
            return (None, Reason::Cooldown(due));
        }
        st.decide(relevant.iter().map(|(id, r)| (*id, r.attempt)));
        let budget = budget::record(
            rule,
            g.repo,
            g.pr_number,
            &mut ledger.budgets,
            clock.wall,
            id,
        );
        let trigger = Trigger {
            branch: g.branch.clone(),
            episode,
            runs,
            failed_workflows,
            budget,
            known_flaky,
            ..new_trigger(rule, id, g.repo, g.pr_number, g.commit_sha, g.state, clock)
        };
        (Some(trigger), Reason::Fired(id))
    }

    /// `repeated_failure`: records a completed run in its streak and fires once per streak.
    fn record_streak(
        &self,
        rule: &Rule,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        event: &Event,
        clock: Clock,
    ) -> Option<Trigger> {
        if event.run.status != Status::Completed
            || !rule.matches_repository(&g.repo.owner, &g.repo.name)
            || !rule.matches_run(&event.run.workflow, event.branch.as_deref())
        {
            return None;
        }
        let run = RunState::from_event(event);
        let key = rule.streak_key(g.repo.internal_id, &run);
        let threshold = rule.threshold as usize;
        let entry = StreakRun {
            run_id: event.run.id.clone(),
            run,
            commit_sha: event.commit_sha.clone(),
            pr_number: event.pr_number,
            failed: false,
        };
        let failed = rule.is_failure(event.run.conclusion);
        let streak = ledger.streaks.entry(key.clone()).or_default();
        if !streak.record(entry, failed, threshold) || !streak.should_fire(threshold) {
            return None;
        }
        let id = rule.streak_trigger_id(g.repo, &key, streak);
        let runs: BTreeMap<String, TriggerRun> = streak
            .failures()
            .map(|f| (f.run_id.clone(), trigger_run(&f.run)))
            .collect();
        // A streak that ends inside a cooldown is not announced (there is no group to hold
        // a timer); it is marked fired so it does not fire later either.
        let suppressed = cooldown_deferral(rule, g.repo, ledger, clock).is_some();
        if let Some(s) = ledger.streaks.get_mut(&key) {
            s.mark_fired();
        }
        if suppressed {
            return None;
        }
        Some(Trigger {
            branch: event.branch.clone(),
            workflow: Some(key.workflow.clone()),
            runs,
            failed_workflows: vec![key.workflow],
            ..new_trigger(
                rule,
                id,
                g.repo,
                event.pr_number,
                &event.commit_sha,
                g.state,
                clock,
            )
        })
    }
}

/// Whether the rule's timer in the group is due at `clock`; a due timer is cleared (the
/// caller judges the rule as its timer firing).
fn take_due(rule: &Rule, state: &mut GroupState, clock: Clock) -> bool {
    match state.rules.get_mut(&rule.name) {
        Some(s) if s.due.is_some_and(|d| clock.is_due(&d)) => {
            s.due = None;
            true
        }
        _ => false,
    }
}

/// If the rule's per-repository cooldown is running, the due time at which it ends (reads
/// only; [`cooldown_deferral`] also records a firing).
fn cooldown_pending(rule: &Rule, repo: &RepoRef, ledger: &Ledger, clock: Clock) -> Option<Due> {
    if rule.cooldown.is_zero() {
        return None;
    }
    let key = CooldownKey {
        repository_id: repo.internal_id,
        rule: rule.name.clone(),
    };
    let ends = plus(*ledger.cooldowns.get(&key)?, to_chrono(rule.cooldown));
    (ends > clock.wall).then(|| Due {
        event: plus(clock.event, ends - clock.wall),
        wall: ends,
    })
}

/// If the rule's per-repository cooldown is running, the due time at which it ends.
/// Otherwise records that the rule fires now and returns `None`. Cooldowns are measured on
/// the wall clock (event time in `simulate`, where the two are the same).
fn cooldown_deferral(
    rule: &Rule,
    repo: &RepoRef,
    ledger: &mut Ledger,
    clock: Clock,
) -> Option<Due> {
    if rule.cooldown.is_zero() {
        return None;
    }
    let key = CooldownKey {
        repository_id: repo.internal_id,
        rule: rule.name.clone(),
    };
    let cooldown = to_chrono(rule.cooldown);
    if let Some(last) = ledger.cooldowns.get(&key) {
        let ends = plus(*last, cooldown);
        if ends > clock.wall {
            let left = ends - clock.wall;
            return Some(Due {
                event: plus(clock.event, left),
                wall: ends,
            });
        }
    }
    ledger.cooldowns.insert(key, clock.wall);
    None
}

/// `wall + max_lead`, saturating at the end of time.
fn lead_bound(wall: DateTime<Utc>, max_lead: std::time::Duration) -> DateTime<Utc> {
    wall.checked_add_signed(to_chrono(max_lead))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A trigger of `rule` for a commit (of a pull request or none), fired at `clock.wall`:
/// what every trigger carries; the caller sets its runs, branch, workflow, episode,
/// budget and known flaky workflows.
fn new_trigger(
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

fn trigger_run(r: &RunState) -> TriggerRun {
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
