//! Runs that reach a pull request's group through their commit (docs/design.md "Pull
//! requests of a commit"): a run reported without a pull request (a commit status, a fork's
//! workflow run, a push build) also counts in the group of every pull request its commit is
//! known to belong to. [`Engine::absorb`] merges such runs into a group with the same
//! per-run merge as [`Engine::apply`], so a pull request's group ends in the merge of every
//! run of its commit, whichever arrives first: its own events, the runs without a pull
//! request, or the association.

use super::merge::{self, RunState};
use super::{Clock, Engine, GroupCtx, Ledger, RuleKind};
use crate::trigger::Trigger;

impl Engine {
    /// Fires the group's due timers, merges `runs` (run id → state) into it and evaluates
    /// the group rules if anything changed. Streaks are not touched: a run is recorded in its
    /// streak once, by the [`Engine::apply`] of its own event. A run that would make the
    /// group exceed `limits.max_runs_per_group` is left out (it still counts in its own
    /// group); returns the triggers and how many runs were left out.
    pub fn absorb<'r>(
        &self,
        g: &mut GroupCtx<'_>,
        ledger: &mut Ledger,
        runs: impl IntoIterator<Item = (&'r String, &'r RunState)>,
        clock: Clock,
    ) -> (Vec<Trigger>, usize) {
        let mut out = self.fire_due(g, ledger, clock);
        let mut changed = false;
        let mut left_out = 0;
        for (id, run) in runs {
            if !g.state.runs.contains_key(id)
                && g.state.runs.len() >= self.limits.max_runs_per_group
            {
                left_out += 1;
                continue;
            }
            let mut slot = g.state.runs.remove(id);
            let flip_before = slot.as_ref().and_then(RunState::flip);
            let this = merge::merge_into(&mut slot, run.clone());
            if let Some(s) = slot {
                changed |= self.note_flip(g.repo, ledger, id, &s, flip_before, clock);
                g.state.runs.insert(id.clone(), s);
            }
            if this && g.branch.is_none() && run.branch.is_some() {
                g.branch.clone_from(&run.branch);
            }
            changed |= this;
        }
        if changed {
            for rule in self.rules.rules() {
                if rule.kind == RuleKind::AllCompletedWithFailure {
                    out.extend(self.evaluate_group(rule, g, ledger, clock, false));
                }
            }
        }
        (out, left_out)
    }

    /// When a commit is first known to belong to a pull request and its group without a
    /// pull request (`from`) has already fired a rule, the pull request's group (`g`)
    /// takes that over: the rule counts as fired there with the same runs' attempts, so the
    /// runs are not announced a second time (`require_pr = false`); a re-run after it still
    /// opens a new episode with `refire_on_rerun`. Call before [`Engine::absorb`].
    pub fn inherit_fired(&self, g: &mut GroupCtx<'_>, from: &super::GroupState) {
        for rule in self.rules.rules() {
            if rule.kind != RuleKind::AllCompletedWithFailure {
                continue;
            }
            // A decision over budget was not published: the pull request's group judges
            // the runs itself.
            let Some(done) = from
                .rules
                .get(&rule.name)
                .filter(|s| s.fired && s.over_budget.is_none())
            else {
                continue;
            };
            let st = g.state.rules.entry(rule.name.clone()).or_default();
            if st.fired {
                continue;
            }
            st.fired = true;
            st.inherited = true;
            st.fired_max_attempt = done.fired_max_attempt;
            st.fired_attempts.clone_from(&done.fired_attempts);
            st.due = None;
        }
    }
}
