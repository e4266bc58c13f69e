//! Recording events (the seed's `store_workflow_information`) and firing due timers: one
//! transaction each, under the groups' row locks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use tracing::{error, warn};
use uuid::Uuid;

use super::association;
use super::budgets::{self, OverBudgetNote};
use super::jobs;
use super::{Store, StoreError};
use crate::engine::routing::{self, Arrival, Carries, Pull};
use crate::engine::{
    Clock, CooldownKey, Flip, FlipKey, Flips, GroupCtx, GroupState, Ledger, RepoRef, RunState,
    StreakKey, StreakState, flaky,
};
use crate::event::{Event, RejectCode, Rejection};
use crate::pull_request::Input;
use crate::trace_context::{Stamper, TraceContext};
use crate::trigger::{self, Trigger};

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Merged (possibly a no-op: a duplicate or an older state).
    Applied,
    /// Refused by the engine (e.g. the group is full); nothing was changed for it.
    Rejected(Rejection),
}

/// The result of recording a batch.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One per input event, in input order.
    pub outcomes: Vec<EventOutcome>,
    /// Triggers this transaction decided and wrote to the outbox, claimed by the caller
    /// for `lease`: publish them, then [`Store::mark_sent`].
    pub triggers: Vec<Trigger>,
    /// The event clock after the batch.
    pub clock: Clock,
}

/// A group's key as stored: (repository id, pull request or 0, commit).
type GroupKey = (i64, i64, String);

struct Slot {
    id: i64,
    repo: RepoRef,
    pr_number: Option<u64>,
    commit_sha: String,
    branch: Option<String>,
    state: GroupState,
    original_branch: Option<String>,
    original_state: GroupState,
}

impl Slot {
    /// The engine's view of this group.
    fn ctx(&mut self) -> GroupCtx<'_> {
        GroupCtx {
            repo: &self.repo,
            pr_number: self.pr_number,
            commit_sha: &self.commit_sha,
            branch: &mut self.branch,
            state: &mut self.state,
        }
    }

    fn changed(&self) -> bool {
        self.branch != self.original_branch || self.state != self.original_state
    }
}

fn pr_key(pr: Option<u64>) -> i64 {
    pr.map_or(0, |p| i64::try_from(p).unwrap_or(i64::MAX))
}

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

    /// Fires settle / cooldown timers that are due (by wall clock, or by the caller's event
    /// clock), claiming groups with `FOR UPDATE SKIP LOCKED` so replicas share the work.
    /// Returns the triggers decided (already in the outbox, claimed by the caller).
    pub async fn fire_due_timers(
        &self,
        event_clock: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Trigger>, StoreError> {
        self.with_retry("timers", || self.fire_due_tx(event_clock, limit))
            .await
    }

    async fn fire_due_tx(
        &self,
        event_clock: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Trigger>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (triggers, over_budget) = self.fire_due_in(&mut tx, event_clock, limit).await?;
        tx.commit().await?;
        budgets::report_over_budget(&over_budget);
        Ok(triggers)
    }

    /// The body of the timer transaction, on `tx`.
    async fn fire_due_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event_clock: DateTime<Utc>,
        limit: i64,
    ) -> Result<(Vec<Trigger>, Vec<OverBudgetNote>), StoreError> {
        // A worker that has applied no event yet has the clock at `DateTime::MIN_UTC`, which
        // Postgres rejects ("timestamp out of range"): the whole sweep failed, so a replica
        // restarted with nothing left to consume never fired a wall-clock timer. Before the
        // epoch nothing is due by event time.
        let event_clock = event_clock.max(DateTime::UNIX_EPOCH);
        let rows = sqlx::query(super::sql::TIMERS_DUE)
            .bind(event_clock)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        if rows.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let repo_ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("repository_id"))
            .collect::<Result<_, _>>()?;
        let repos = self.repositories_by_id(&repo_ids).await?;
        let mut slots = Vec::with_capacity(rows.len());
        let mut corrupt = Vec::new();
        for row in &rows {
            match slot_from_row(row, &repos)? {
                Ok(slot) => slots.push(slot),
                Err(c) => {
                    c.report("timers");
                    corrupt.push(c.id);
                }
            }
        }
        if !corrupt.is_empty() {
            // Its timers cannot be evaluated: drop them, so the sweep does not stop at this
            // row on every pass. Its next event is dead-lettered as `corrupt_state`.
            sqlx::query(
                "UPDATE groups SET due_event_at = NULL, due_wall_at = NULL WHERE id = ANY($1)",
            )
            .bind(&corrupt)
            .execute(&mut **tx)
            .await?;
        }
        let cooldown_keys: BTreeSet<CooldownKey> = repos
            .values()
            .flat_map(|r| self.engine.cooldown_keys(r))
            .collect();
        let (mut ledger, _) = lock_ledger(tx, &BTreeSet::new(), &cooldown_keys).await?;
        let budget_keys: BTreeSet<_> = slots
            .iter()
            .flat_map(|s| self.engine.budget_keys(&s.repo, s.pr_number))
            .collect();
        budgets::lock_budgets(tx, &budget_keys, &mut ledger).await?;
        let flip_keys: BTreeSet<FlipKey> = slots
            .iter()
            .flat_map(|s| self.flip_keys(s.repo.internal_id, s.state.runs.values()))
            .collect();
        ledger.flips = self.load_flips(tx, &flip_keys, event_clock).await?;
        let original_ledger = ledger.clone();
        let prs: BTreeSet<(i64, u64)> = slots
            .iter()
            .filter_map(|s| s.pr_number.map(|n| (s.repo.internal_id, n)))
            .collect();
        let heads = association::load_heads(tx, &prs).await?;
        let pr_less: BTreeSet<association::Commit> = slots
            .iter()
            .filter(|s| s.pr_number.is_none())
            .map(|s| (s.repo.internal_id, s.commit_sha.clone()))
            .collect();
        let in_pulls = association::commits_in_pulls(tx, &pr_less).await?;
        for slot in &mut slots {
            set_head(slot, &heads);
            if slot.pr_number.is_none() {
                let in_pull = in_pulls.contains(&(slot.repo.internal_id, slot.commit_sha.clone()));
                slot.state.commit_in_pull = in_pull;
                slot.original_state.commit_in_pull = in_pull;
            }
        }
        let clock = Clock {
            event: event_clock,
            wall: Utc::now(),
        };
        let mut decided = Vec::new();
        let mut over_budget = Vec::new();
        for slot in &mut slots {
            let fired = self.engine.fire_due(&mut slot.ctx(), &mut ledger, clock);
            decided.extend(fired.into_iter().map(|t| (slot.id, t)));
            over_budget.extend(budgets::new_over_budget(
                slot.id,
                &slot.repo,
                slot.pr_number,
                &slot.commit_sha,
                &slot.original_state,
                &slot.state,
            ));
            // The timer was due: even when nothing fired the due columns must move on.
            slot.original_state = GroupState::default();
        }
        write_groups(tx, slots.iter(), &[]).await?;
        write_ledger(tx, &original_ledger, &ledger).await?;
        budgets::write_budgets(tx, &self.engine, &original_ledger, &ledger).await?;
        write_flips(tx, &original_ledger, &ledger).await?;
        Ok((
            self.insert_outbox(tx, decided, &jobs::BatchJobs::default())
                .await?,
            over_budget,
        ))
    }

    /// The (repository, workflow) keys whose flips a decision may count, of `runs`.
    fn flip_keys<'r>(
        &self,
        repository_id: i64,
        runs: impl IntoIterator<Item = &'r RunState>,
    ) -> Vec<FlipKey> {
        runs.into_iter()
            .filter(|r| self.engine.may_count_flips(r))
            .map(|r| FlipKey {
                repository_id,
                workflow: r.workflow.clone(),
            })
            .collect()
    }

    /// The flips the rules may count for `keys` (repository id, workflow), in one
    /// statement: per key, the newest [`flaky::MAX_FLIPS_COUNTED`] dated after `event_clock`
    /// minus the longest `flaky_window` (index `flips_window`). The engine counts within each
    /// rule's window from there, exactly as over every flip (docs/design.md "Flaky
    /// workflows"). Nothing when no rule counts flips.
    async fn load_flips(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        keys: &BTreeSet<FlipKey>,
        event_clock: DateTime<Utc>,
    ) -> Result<BTreeMap<FlipKey, Flips>, StoreError> {
        let mut out = BTreeMap::new();
        if !self.engine.rules().counts_flips() || keys.is_empty() {
            return Ok(out);
        }
        let r: Vec<i64> = keys.iter().map(|k| k.repository_id).collect();
        let w: Vec<&str> = keys.iter().map(|k| k.workflow.as_str()).collect();
        // Before year 1 (a worker that has seen no event yet) every flip counts.
        let from = chrono::Duration::from_std(self.engine.rules().longest_flaky_window())
            .ok()
            .and_then(|d| event_clock.checked_sub_signed(d))
            .filter(|t| *t > earliest_timestamp());
        let rows = sqlx::query(
            "SELECT u.r AS repository_id, u.w AS workflow, f.run_id, f.attempt, f.flipped_at
             FROM UNNEST($1::bigint[], $2::text[]) AS u(r, w)
             CROSS JOIN LATERAL (
                 SELECT run_id, attempt, flipped_at FROM flips
                 WHERE repository_id = u.r AND workflow = u.w AND job = ''
                   AND ($3::timestamptz IS NULL OR flipped_at > $3)
                 ORDER BY flipped_at DESC LIMIT $4) f",
        )
        .bind(&r)
        .bind(&w)
        .bind(from)
        .bind(i64::from(flaky::MAX_FLIPS_COUNTED))
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = FlipKey {
                repository_id: row.try_get("repository_id")?,
                workflow: row.try_get("workflow")?,
            };
            let attempt: i64 = row.try_get("attempt")?;
            let flip = Flip {
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                at: row.try_get("flipped_at")?,
            };
            flaky::record(
                out.entry(key).or_insert_with(Flips::new),
                &row.try_get::<String, _>("run_id")?,
                flip,
            );
        }
        Ok(out)
    }

    /// Writes decided triggers to the outbox, claimed for `lease`; returns those that were
    /// new (a decision taken again inserts nothing and must not be published again). The
    /// triggers list their failed runs' jobs first (store/jobs.rs): those stored, and those
    /// of `batch` that came before each decision.
    async fn insert_outbox(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        mut decided: Vec<(i64, Trigger)>,
        batch: &jobs::BatchJobs,
    ) -> Result<Vec<Trigger>, StoreError> {
        if decided.is_empty() {
            return Ok(Vec::new());
        }
        self.attach_jobs(tx, &mut decided, batch).await?;
        let mut ids = Vec::with_capacity(decided.len());
        let mut groups = Vec::with_capacity(decided.len());
        let mut subjects = Vec::with_capacity(decided.len());
        let mut payloads = Vec::with_capacity(decided.len());
        let (mut parents, mut states) = (Vec::new(), Vec::new());
        let mut decided = decided;
        for (group_id, t) in &mut decided {
            ids.push(t.trigger_id);
            groups.push(*group_id);
            subjects.push(trigger::subject(&self.triggers_subject_prefix, t.provider));
            payloads.push(serde_json::to_vec(t)?);
            // A trigger decided without a context (a timer's) starts a new trace.
            let trace = t.trace.get_or_insert_with(TraceContext::root);
            parents.push(trace.traceparent());
            states.push(trace.state.clone());
        }
        let rows = sqlx::query(
            "INSERT INTO outbox (trigger_id, group_id, subject, payload, claimed_until,
                                 traceparent, tracestate)
             SELECT u.id, u.g, u.s, u.p, now() + make_interval(secs => $5), u.tp, u.ts
             FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::bytea[], $6::text[],
                         $7::text[]) AS u(id, g, s, p, tp, ts)
             ON CONFLICT (trigger_id) DO NOTHING
             RETURNING trigger_id",
        )
        .bind(&ids)
        .bind(&groups)
        .bind(&subjects)
        .bind(&payloads)
        .bind(self.lease.as_secs_f64())
        .bind(&parents)
        .bind(&states)
        .fetch_all(&mut **tx)
        .await?;
        let new: HashSet<Uuid> = rows
            .iter()
            .map(|r| r.try_get::<Uuid, _>("trigger_id"))
            .collect::<Result<_, _>>()?;
        Ok(decided
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| new.contains(&t.trigger_id))
            .collect())
    }
}

/// A row whose stored state cannot be decoded (written by hand, by a newer version, by a
/// bug). It is set aside: never written, its events dead-lettered as `corrupt_state`, its
/// timers dropped; everything else carries on.
struct CorruptRow {
    id: i64,
    label: String,
    detail: String,
}

impl CorruptRow {
    fn report(&self, op: &'static str) {
        metrics::counter!("runwatch_corrupt_rows_total", "op" => op).increment(1);
        error!(row = self.id, key = %self.label, detail = %self.detail, op,
            "stored state cannot be decoded: row set aside (repair it, then redrive its dead letters)");
    }

    fn rejection(&self) -> Rejection {
        Rejection::new(
            RejectCode::CorruptState,
            format!(
                "{} (row {}): stored state cannot be decoded: {}",
                self.label, self.id, self.detail
            ),
        )
    }
}

fn slot_from_row(
    row: &sqlx::postgres::PgRow,
    repos: &HashMap<i64, RepoRef>,
) -> Result<Result<Slot, CorruptRow>, StoreError> {
    let id: i64 = row.try_get("id")?;
    let repo_id: i64 = row.try_get("repository_id")?;
    let pr: Option<i64> = row.try_get("pr_number")?;
    let commit_sha: String = row.try_get("commit_sha")?;
    let branch: Option<String> = row.try_get("branch")?;
    // Straight from the jsonb bytes into the engine's type: no intermediate Value.
    let state: GroupState = match row.try_get::<Json<GroupState>, _>("state") {
        Ok(s) => s.0,
        Err(sqlx::Error::ColumnDecode { source, .. }) => {
            return Ok(Err(CorruptRow {
                id,
                label: format!(
                    "group repository={repo_id} pr={} commit={commit_sha}",
                    pr.unwrap_or(0)
                ),
                detail: source.to_string(),
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let repo = repos
        .get(&repo_id)
        .cloned()
        .ok_or(StoreError::Db(sqlx::Error::RowNotFound))?;
    Ok(Ok(Slot {
        id,
        repo,
        pr_number: pr.and_then(|p| u64::try_from(p).ok()),
        commit_sha,
        original_branch: branch.clone(),
        branch,
        original_state: state.clone(),
        state,
    }))
}

/// Gives the engine the head and the state of the slot's pull request (not stored with the
/// group).
fn set_head(slot: &mut Slot, heads: &BTreeMap<(i64, u64), Pull>) {
    let pull = slot
        .pr_number
        .and_then(|n| heads.get(&(slot.repo.internal_id, n)));
    routing::show_pull(&mut slot.state, pull);
    routing::show_pull(&mut slot.original_state, pull);
}

/// The groups of a batch, locked; the rows that cannot be decoded; the pull requests' heads
/// and states.
type Locked = (
    BTreeMap<GroupKey, Slot>,
    BTreeMap<GroupKey, CorruptRow>,
    BTreeMap<(i64, u64), Pull>,
);

/// Inserts the absent groups, then locks all of them in key order and reads their pull
/// requests' heads and states (one round trip).
async fn lock_groups(
    tx: &mut Transaction<'static, Postgres>,
    keys: &BTreeSet<GroupKey>,
    repos: &HashMap<i64, RepoRef>,
) -> Result<Locked, StoreError> {
    let mut rid = Vec::with_capacity(keys.len());
    let mut pr = Vec::with_capacity(keys.len());
    let mut sha = Vec::with_capacity(keys.len());
    for (r, p, s) in keys {
        rid.push(*r);
        pr.push(*p);
        sha.push(s.clone());
    }
    // runwatch_lock_groups_pulls (migrations/20261203230001): INSERT … ON CONFLICT DO
    // NOTHING, then SELECT … LEFT JOIN pull_heads … ORDER BY key FOR UPDATE, as two
    // statements in one round trip.
    let rows = sqlx::query("SELECT * FROM runwatch_lock_groups_pulls($1, $2, $3)")
        .bind(&rid)
        .bind(&pr)
        .bind(&sha)
        .fetch_all(&mut **tx)
        .await?;
    let mut out = BTreeMap::new();
    let mut corrupt = BTreeMap::new();
    let mut pulls = BTreeMap::new();
    for row in &rows {
        let pr: Option<i64> = row.try_get("pr_number")?;
        if let Some(pr) = pr.and_then(|p| u64::try_from(p).ok())
            && let Some(pull) = association::pull_from_row(row)?
        {
            pulls.insert((row.try_get("repository_id")?, pr), pull);
        }
        match slot_from_row(row, repos)? {
            Ok(slot) => {
                out.insert(
                    (
                        slot.repo.internal_id,
                        pr_key(slot.pr_number),
                        slot.commit_sha.clone(),
                    ),
                    slot,
                );
            }
            Err(c) => {
                let key: GroupKey = (
                    row.try_get("repository_id")?,
                    row.try_get::<Option<i64>, _>("pr_number")?.unwrap_or(0),
                    row.try_get("commit_sha")?,
                );
                c.report("record");
                corrupt.insert(key, c);
            }
        }
    }
    Ok((out, corrupt, pulls))
}

/// Inserts the absent streak and cooldown rows, then locks them in key order.
async fn lock_ledger(
    tx: &mut Transaction<'static, Postgres>,
    streaks: &BTreeSet<StreakKey>,
    cooldowns: &BTreeSet<CooldownKey>,
) -> Result<(Ledger, BTreeMap<StreakKey, CorruptRow>), StoreError> {
    let mut ledger = Ledger::default();
    let mut corrupt = BTreeMap::new();
    if !streaks.is_empty() {
        let (mut r, mut ru, mut b, mut w) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in streaks {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            b.push(k.branch.clone());
            w.push(k.workflow.clone());
        }
        sqlx::query(
            "INSERT INTO streaks (repository_id, rule, branch, workflow)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&r)
        .bind(&ru)
        .bind(&b)
        .bind(&w)
        .execute(&mut **tx)
        .await?;
        let rows = sqlx::query(
            "SELECT s.repository_id, s.rule, s.branch, s.workflow, s.state FROM streaks s
             JOIN UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(r, ru, b, w)
               ON s.repository_id = u.r AND s.rule = u.ru AND s.branch = u.b AND s.workflow = u.w
             ORDER BY s.repository_id, s.rule COLLATE \"C\", s.branch COLLATE \"C\", s.workflow COLLATE \"C\"
             FOR UPDATE OF s",
        )
        .bind(&r)
        .bind(&ru)
        .bind(&b)
        .bind(&w)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = StreakKey {
                repository_id: row.try_get("repository_id")?,
                rule: row.try_get("rule")?,
                branch: row.try_get("branch")?,
                workflow: row.try_get("workflow")?,
            };
            match row.try_get::<Json<StreakState>, _>("state") {
                Ok(state) => {
                    ledger.streaks.insert(key, state.0);
                }
                Err(sqlx::Error::ColumnDecode { source, .. }) => {
                    let c = CorruptRow {
                        id: key.repository_id,
                        label: format!(
                            "streak repository={} rule={} branch={} workflow={}",
                            key.repository_id, key.rule, key.branch, key.workflow
                        ),
                        detail: source.to_string(),
                    };
                    c.report("record");
                    corrupt.insert(key, c);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !cooldowns.is_empty() {
        let (mut r, mut ru) = (Vec::new(), Vec::new());
        for k in cooldowns {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
        }
        sqlx::query(
            "INSERT INTO cooldowns (repository_id, rule)
             SELECT * FROM UNNEST($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&r)
        .bind(&ru)
        .execute(&mut **tx)
        .await?;
        let rows = sqlx::query(
            "SELECT c.repository_id, c.rule, c.last_fired_at FROM cooldowns c
             JOIN UNNEST($1::bigint[], $2::text[]) AS u(r, ru) ON c.repository_id = u.r AND c.rule = u.ru
             ORDER BY c.repository_id, c.rule COLLATE \"C\"
             FOR UPDATE OF c",
        )
        .bind(&r)
        .bind(&ru)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let last: Option<DateTime<Utc>> = row.try_get("last_fired_at")?;
            if let Some(last) = last {
                ledger.cooldowns.insert(
                    CooldownKey {
                        repository_id: row.try_get("repository_id")?,
                        rule: row.try_get("rule")?,
                    },
                    last,
                );
            }
        }
    }
    Ok((ledger, corrupt))
}

/// Writes the groups whose state or branch changed, with their due times, and marks the
/// triggers `sent` as published, in one statement.
async fn write_groups<'a>(
    tx: &mut Transaction<'static, Postgres>,
    slots: impl Iterator<Item = &'a Slot>,
    sent: &[Uuid],
) -> Result<(), StoreError> {
    let (mut ids, mut branches, mut states, mut due_event, mut due_wall) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in slots.filter(|s| s.changed()) {
        let due = s.state.next_due();
        ids.push(s.id);
        branches.push(s.branch.clone());
        states.push(Json(&s.state));
        due_event.push(due.map(|d| d.event));
        due_wall.push(due.map(|d| d.wall));
    }
    if ids.is_empty() && sent.is_empty() {
        return Ok(());
    }
    sqlx::query(
        // updated_at and touched_on are set here, so the PL/pgSQL trigger does not run. The
        // data-modifying WITH runs exactly once, whatever the outer UPDATE matches.
        "WITH sent AS (
             UPDATE outbox SET sent_at = now(), last_error = NULL
             WHERE trigger_id = ANY($6) AND sent_at IS NULL)
         UPDATE groups SET branch = u.b, state = u.st, due_event_at = u.de, due_wall_at = u.dw,
                           updated_at = now(), touched_on = (now() AT TIME ZONE 'UTC')::date
         FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[])
              AS u(id, b, st, de, dw)
         WHERE groups.id = u.id",
    )
    .bind(&ids)
    .bind(&branches)
    .bind(&states)
    .bind(&due_event)
    .bind(&due_wall)
    .bind(sent)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// 0001-01-01T00:00:00Z: the earliest time an input can carry (and Postgres can hold).
fn earliest_timestamp() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Writes the flips the engine added or moved to a greater (attempt, time), in key order.
/// A row another transaction wrote meanwhile keeps the greater of the two, so concurrent
/// decisions need no lock beyond the row's own and the table ends the same in any order.
async fn write_flips(
    tx: &mut Transaction<'static, Postgres>,
    before: &Ledger,
    after: &Ledger,
) -> Result<(), StoreError> {
    let (mut r, mut w, mut run, mut attempt, mut at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, flips) in &after.flips {
        let old = before.flips.get(k);
        for (id, f) in flips {
            if old.and_then(|o| o.get(id)) != Some(f) {
                r.push(k.repository_id);
                w.push(k.workflow.as_str());
                run.push(id.as_str());
                attempt.push(i64::from(f.attempt));
                at.push(f.at);
            }
        }
    }
    if r.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO flips (repository_id, workflow, run_id, attempt, flipped_at)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
         ON CONFLICT (repository_id, workflow, job, run_id) DO UPDATE
             SET attempt = EXCLUDED.attempt, flipped_at = EXCLUDED.flipped_at
             WHERE (EXCLUDED.attempt, EXCLUDED.flipped_at) > (flips.attempt, flips.flipped_at)",
    )
    .bind(&r)
    .bind(&w)
    .bind(&run)
    .bind(&attempt)
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the streaks and cooldowns that changed.
async fn write_ledger(
    tx: &mut Transaction<'static, Postgres>,
    before: &Ledger,
    after: &Ledger,
) -> Result<(), StoreError> {
    let (mut r, mut ru, mut b, mut w, mut st) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, s) in &after.streaks {
        if before.streaks.get(k) != Some(s) {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            b.push(k.branch.clone());
            w.push(k.workflow.clone());
            st.push(Json(s));
        }
    }
    if !r.is_empty() {
        sqlx::query(
            "UPDATE streaks s SET state = u.st
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) AS u(r, ru, b, w, st)
             WHERE s.repository_id = u.r AND s.rule = u.ru AND s.branch = u.b AND s.workflow = u.w",
        )
        .bind(&r)
        .bind(&ru)
        .bind(&b)
        .bind(&w)
        .bind(&st)
        .execute(&mut **tx)
        .await?;
    }
    let (mut r, mut ru, mut at) = (Vec::new(), Vec::new(), Vec::new());
    for (k, t) in &after.cooldowns {
        if before.cooldowns.get(k) != Some(t) {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            at.push(*t);
        }
    }
    if !r.is_empty() {
        sqlx::query(
            "UPDATE cooldowns c SET last_fired_at = u.t
             FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(r, ru, t)
             WHERE c.repository_id = u.r AND c.rule = u.ru",
        )
        .bind(&r)
        .bind(&ru)
        .bind(&at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
