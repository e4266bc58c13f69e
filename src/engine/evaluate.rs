//! How each rule kind judges what a decision hands it: `all_completed_with_failure` a
//! group (with the reason it did or did not fire), `repeated_failure` a streak of runs.

use std::collections::BTreeMap;

use super::cooldown::{cooldown_deferral, cooldown_pending};
use super::merge::RunState;
use super::reasons::{self, Check, Reason};
use super::rules::Rule;
use super::streak::StreakRun;
use super::time::to_chrono;
use super::trigger_content::{new_trigger, trigger_run};
use super::{Clock, Engine, EpisodeState, FlipKey, GroupCtx, Ledger, budget};
use crate::event::{Event, Status};
use crate::trigger::{Trigger, TriggerRun};

impl Engine {
    /// `all_completed_with_failure` on one group. A rule whose bookkeeping is left at its
    /// default keeps no entry in the group's state: every reader takes a missing entry as
    /// the default, and the state stays as small as it is stored.
    pub(super) fn evaluate_group(
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
    pub(super) fn evaluate_group_why(
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
    pub(super) fn record_streak(
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
