//! The record transaction: a batch of inputs routed to their groups
//! ([`crate::engine::routing`]), judged by the engine, written with its decisions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Utc;
use sqlx::{Postgres, Transaction};
use tracing::warn;
use uuid::Uuid;

use super::ledger::{lock_ledger, write_flips, write_ledger};
use super::rows::{CorruptRow, GroupKey, Slot, lock_groups, pr_key, set_head, write_groups};
use super::{BatchOutcome, EventOutcome};
use crate::engine::routing::{self, Arrival, Carries, Pull};
use crate::engine::{Clock, CooldownKey, FlipKey, GroupState, Ledger, RepoRef, RunState};
use crate::event::Event;
use crate::pull_request::Input;
use crate::store::budgets::{self, OverBudgetNote};
use crate::store::{Store, StoreError, association, jobs};
use crate::trace_context::TraceContext;
use crate::trigger::{Stamper, Trigger};

/// The engine's key of a group as stored (no pull request: 0).
fn stored_key((r, pr, sha): &routing::GroupKey) -> GroupKey {
    (*r, pr_key(*pr), sha.clone())
}

/// What routing reads of an input.
fn arrival<'a>(i: &'a Input, r: &RepoRef) -> Arrival<'a> {
    Arrival {
        repository_id: r.internal_id,
        commit_sha: i.commit_sha(),
        carries: match i {
            Input::Run(e) => Carries::Run(e.pr_number),
            Input::PullRequest(p) => Carries::PullRequest(p.pr_number),
            Input::Job(_) => Carries::Job,
        },
    }
}

impl Store {
    /// Records a batch of events in one transaction and returns the triggers it decided.
    /// `clock` is the caller's event clock before the batch.
    pub async fn record(&self, events: &[Event], clock: Clock) -> Result<BatchOutcome, StoreError> {
        let inputs: Vec<Input> = events.iter().cloned().map(Input::Run).collect();
        self.record_inputs(&inputs, clock).await
    }

    /// As [`Store::record`], for messages of any input schema (runs, jobs and pull request
    /// heads).
    pub async fn record_inputs(
        &self,
        inputs: &[Input],
        clock: Clock,
    ) -> Result<BatchOutcome, StoreError> {
        self.record_and_mark(inputs, clock, &[], &[]).await
    }

    /// As [`Store::record_inputs`], and marks the triggers `sent` as published in the same
    /// transaction (in the statement that writes the groups: no extra round trip), instead
    /// of a transaction of their own. When this fails, nothing is marked. `traces[i]` is
    /// the decision context of `inputs[i]`: the triggers it decides carry it (missing or
    /// `None`: a new trace).
    pub async fn record_and_mark(
        &self,
        inputs: &[Input],
        clock: Clock,
        sent: &[Uuid],
        traces: &[Option<TraceContext>],
    ) -> Result<BatchOutcome, StoreError> {
        let mut repos = Vec::with_capacity(inputs.len());
        for i in inputs {
            repos.push(self.resolve_repository(&i.repo_claim()).await?);
        }
        let started = std::time::Instant::now();
        let out = self
            .with_retry("record", || {
                self.record_tx(inputs, &repos, clock, sent, traces)
            })
            .await;
        metrics::histogram!("runwatch_transaction_seconds", "op" => "record")
            .record(started.elapsed().as_secs_f64());
        out
    }

    async fn record_tx(
        &self,
        inputs: &[Input],
        repos: &[RepoRef],
        clock: Clock,
        sent: &[Uuid],
        traces: &[Option<TraceContext>],
    ) -> Result<BatchOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (out, over_budget) = self
            .record_in(&mut tx, inputs, repos, clock, sent, traces)
            .await?;
        tx.commit().await?;
        budgets::report_over_budget(&over_budget);
        Ok(out)
    }

    /// The body of the record transaction, on `tx` (committed by [`Store::record`]).
    async fn record_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        inputs: &[Input],
        repos: &[RepoRef],
        clock: Clock,
        sent: &[Uuid],
        traces: &[Option<TraceContext>],
    ) -> Result<(BatchOutcome, Vec<OverBudgetNote>), StoreError> {
        // The batch's commits first (association.rs), then their known pull requests.
        let commits: BTreeSet<association::Commit> = inputs
            .iter()
            .zip(repos)
            // A job touches no group and no commit (store/jobs.rs).
            .filter(|(i, _)| !matches!(i, Input::Job(_)))
            .map(|(i, r)| (r.internal_id, i.commit_sha().to_string()))
            .collect();
        let mut pulls = association::lock_commits_load_pulls(tx, &commits).await?;
        let plan = pulls.plan(inputs.iter().zip(repos).map(|(i, r)| arrival(i, r)));
        let keys: BTreeSet<GroupKey> = plan.groups.iter().map(stored_key).collect();
        let by_id: HashMap<i64, RepoRef> =
            repos.iter().map(|r| (r.internal_id, r.clone())).collect();
        // The groups' rows come with their pull request's head and state.
        let (mut slots, corrupt, mut heads) = lock_groups(tx, &keys, &by_id).await?;
        let pr_less_stored = association::load_pr_less_runs(tx, &plan.pr_less).await?;
        let mut heads_learnt = BTreeMap::new();
        let mut pulls_learnt = Vec::new();

        let mut streak_keys = BTreeSet::new();
        for (i, r) in inputs.iter().zip(repos) {
            if let Input::Run(e) = i {
                streak_keys.extend(self.engine.streak_keys(r, e));
            }
        }
        let cooldown_keys: BTreeSet<CooldownKey> = by_id
            .values()
            .flat_map(|r| self.engine.cooldown_keys(r))
            .collect();
        let (mut ledger, corrupt_streaks) = lock_ledger(tx, &streak_keys, &cooldown_keys).await?;
        let budget_keys: BTreeSet<_> = keys
            .iter()
            .filter_map(|(r, pr, _)| {
                let repo = by_id.get(r)?;
                let pr = u64::try_from(*pr).ok().filter(|p| *p > 0);
                Some(self.engine.budget_keys(repo, pr))
            })
            .flatten()
            .collect();
        budgets::lock_budgets(tx, &budget_keys, &mut ledger).await?;
        // The flips of every workflow that may have failed in a group of the batch when it
        // is judged: a failed run's, stored, in an event, or among the runs without a pull
        // request the group may absorb (a batch without one reads none).
        let mut flip_keys: BTreeSet<FlipKey> = BTreeSet::new();
        for s in slots.values() {
            flip_keys.extend(self.flip_keys(s.repo.internal_id, s.state.runs.values()));
        }
        for (i, r) in inputs.iter().zip(repos) {
            if let Input::Run(e) = i {
                flip_keys.extend(self.flip_keys(r.internal_id, [&RunState::from_event(e)]));
            }
        }
        for ((r, _), st) in &pr_less_stored {
            flip_keys.extend(self.flip_keys(*r, st.runs.values()));
        }
        ledger.flips = self.load_flips(tx, &flip_keys, clock.event).await?;
        let original_ledger = ledger.clone();

        let wall = Utc::now();
        let mut clock = clock;
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut decided: Vec<(i64, Trigger)> = Vec::new();
        let max_lead = self.engine.limits().max_clock_skew;
        let mut stamp = Stamper::new(traces);
        let mut batch_jobs = jobs::BatchJobs::default();
        for (n, (i, r)) in inputs.iter().zip(repos).enumerate() {
            stamp.input(n, &mut decided);
            batch_jobs.decided_until(decided.len(), n);
            let at = i.updated_at();
            if Clock::is_skewed(at, wall, max_lead) {
                metrics::counter!("runwatch_clock_skew_events_total").increment(1);
                warn!(
                    event_id = %i.event_id(),
                    updated_at = %at,
                    max_clock_skew = ?max_lead,
                    "event dated ahead of the wall clock: merged, but the event clock only advances to the bound"
                );
            }
            clock = clock.advance(at, wall, max_lead);
            if let Input::Job(j) = i {
                let key = crate::engine::JobState::key_of(r.internal_id, j);
                let job = crate::engine::JobState::from_report(j);
                batch_jobs.jobs.push((n, key, job));
                outcomes.push(EventOutcome::Applied);
                continue;
            }
            let route = pulls.route(arrival(i, r));
            if let (Input::Run(e), Some(own)) = (i, &route.own) {
                let key = stored_key(own);
                if let Some(c) = corrupt.get(&key) {
                    outcomes.push(EventOutcome::Rejected(c.rejection()));
                    continue;
                }
                if let Some(c) = self
                    .engine
                    .streak_keys(r, e)
                    .iter()
                    .find_map(|k| corrupt_streaks.get(k))
                {
                    outcomes.push(EventOutcome::Rejected(c.rejection()));
                    continue;
                }
                let Some(slot) = slots.get_mut(&key) else {
                    // lock_groups inserted every key; a missing one is a bug, refuse the batch.
                    return Err(StoreError::Db(sqlx::Error::RowNotFound));
                };
                set_head(slot, &heads);
                if e.pr_number.is_none() {
                    slot.state.commit_in_pull = route.commit_in_pull;
                    slot.original_state.commit_in_pull = route.commit_in_pull;
                }
                match self.engine.apply(&mut slot.ctx(), &mut ledger, e, clock) {
                    Ok(triggers) => {
                        decided.extend(triggers.into_iter().map(|t| (slot.id, t)));
                        outcomes.push(EventOutcome::Applied);
                    }
                    Err(rejection) => {
                        outcomes.push(EventOutcome::Rejected(rejection));
                        continue;
                    }
                }
                let run = (e.run.id.clone(), RunState::from_event(e));
                for target in &route.also {
                    decided.extend(self.absorb_into(
                        &mut slots,
                        &corrupt,
                        &stored_key(target),
                        &heads,
                        [(&run.0, &run.1)],
                        clock,
                        &mut ledger,
                    ));
                }
            } else {
                outcomes.push(EventOutcome::Applied);
            }
            if let (Input::PullRequest(p), Some(target)) = (i, &route.pull) {
                let k = (r.internal_id, p.pr_number);
                let pull = heads.entry(k).or_default();
                let learnt = pull.learn((p.updated_at, p.commit_sha.clone()), p.status(), p.info());
                if learnt.any() {
                    heads_learnt.insert(k, pull.clone());
                }
                if learnt.rejudge() {
                    // Closed, merged, reopened, ready for review, its author known (for
                    // `authors`): the head commit's group is judged again on its runs as
                    // they are.
                    let target = stored_key(target);
                    if !corrupt.contains_key(&target)
                        && let Some(slot) = slots.get_mut(&target)
                    {
                        set_head(slot, &heads);
                        let fired = self.engine.reconsider(&mut slot.ctx(), &mut ledger, clock);
                        decided.extend(fired.into_iter().map(|t| (slot.id, t)));
                    }
                }
            }
            if let Some(join) = &route.join
                && let (r, Some(n), sha) = &join.into
                && pulls.learn(*r, sha, *n)
            {
                pulls_learnt.push((*r, sha.clone(), *n));
                let from = stored_key(&join.from);
                let pr_less: GroupState = match slots.get(&from) {
                    Some(s) => s.state.clone(),
                    None => pr_less_stored
                        .get(&(*r, sha.clone()))
                        .cloned()
                        .unwrap_or_default(),
                };
                let target = stored_key(&join.into);
                if !corrupt.contains_key(&target)
                    && let Some(slot) = slots.get_mut(&target)
                {
                    self.engine.inherit_fired(&mut slot.ctx(), &pr_less);
                }
                decided.extend(self.absorb_into(
                    &mut slots,
                    &corrupt,
                    &target,
                    &heads,
                    pr_less.runs.iter(),
                    clock,
                    &mut ledger,
                ));
            }
        }
        stamp.finish(&mut decided);
        association::insert_pulls(tx, &pulls_learnt).await?;
        association::write_heads(tx, &heads_learnt).await?;
        write_groups(tx, slots.values(), sent).await?;
        write_ledger(tx, &original_ledger, &ledger).await?;
        budgets::write_budgets(tx, &self.engine, &original_ledger, &ledger).await?;
        let over_budget = slots
            .values()
            .flat_map(|s| {
                budgets::new_over_budget(
                    s.id,
                    &s.repo,
                    s.pr_number,
                    &s.commit_sha,
                    &s.original_state,
                    &s.state,
                )
            })
            .collect();
        write_flips(tx, &original_ledger, &ledger).await?;
        batch_jobs.decided_until(decided.len(), inputs.len());
        let triggers = self.insert_outbox(tx, decided, &batch_jobs).await?;
        // After the decisions read the stored jobs: a job later in the batch than a decision
        // is not in its trigger, as in `simulate`.
        jobs::write(tx, &batch_jobs).await?;
        Ok((
            BatchOutcome {
                outcomes,
                triggers,
                clock,
            },
            over_budget,
        ))
    }

    /// Merges runs of a commit into one of its pull requests' groups (locked by
    /// [`Store::record_in`]); a corrupt group is left alone.
    #[allow(clippy::too_many_arguments)]
    fn absorb_into<'r>(
        &self,
        slots: &mut BTreeMap<GroupKey, Slot>,
        corrupt: &BTreeMap<GroupKey, CorruptRow>,
        key: &GroupKey,
        heads: &BTreeMap<(i64, u64), Pull>,
        runs: impl IntoIterator<Item = (&'r String, &'r RunState)>,
        clock: Clock,
        ledger: &mut Ledger,
    ) -> Vec<(i64, Trigger)> {
        if corrupt.contains_key(key) {
            return Vec::new();
        }
        let Some(slot) = slots.get_mut(key) else {
            return Vec::new();
        };
        set_head(slot, heads);
        let (fired, left_out) = self.engine.absorb(&mut slot.ctx(), ledger, runs, clock);
        if left_out > 0 {
            warn!(
                group = slot.id,
                left_out, "runs of the commit not merged into a full pull request group"
            );
        }
        fired.into_iter().map(|t| (slot.id, t)).collect()
    }
}
