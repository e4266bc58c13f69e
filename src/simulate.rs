//! `runwatch simulate`: the engine over a file of events, state in memory, event time.
//!
//! The clock is the largest `run.updated_at` seen so far. Before an event is applied, every
//! timer due at or before the new clock fires, in due-time order; at the end of the input
//! every pending timer fires. A malformed line is reported with its line number and skipped.
//!
//! `runwatch.pull_request.v1` lines and runs without a pull request follow the commit
//! association of docs/design.md ("Pull requests of a commit"), in memory, as the worker
//! does in Postgres. `runwatch.workflow_job.v1` lines are merged into the jobs kept in
//! memory, and every trigger lists its failed runs' jobs known when it fires.
//!
//! Flips (docs/design.md "Flaky workflows") are kept in the in-memory ledger, all of them:
//! the engine counts each rule's window from there, as the worker does from the newest it
//! loads per workflow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};

use crate::engine::jobs::merge_book;
use crate::engine::routing::{Arrival, Associations, Carries, Pull, show_pull};
use crate::engine::{
    Clock, Engine, GroupCtx, GroupState, JobBook, JobState, Ledger, PullInfo, RepoRef, RunState,
};
use crate::event::Limits;
use crate::pull_request::{Input, decode_input};
use crate::repository::MemoryRegistry;
use crate::trigger::Trigger;

use crate::engine::routing::GroupKey;

struct SimGroup {
    repo: RepoRef,
    branch: Option<String>,
    state: GroupState,
}

impl SimGroup {
    /// The engine's view of the group `key`.
    fn ctx<'a>(&'a mut self, key: &'a GroupKey) -> GroupCtx<'a> {
        GroupCtx {
            repo: &self.repo,
            pr_number: key.1,
            commit_sha: &key.2,
            branch: &mut self.branch,
            state: &mut self.state,
        }
    }
}

/// What a simulation saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub triggers: u64,
    /// Lines that were skipped (malformed or rejected), with their reasons.
    pub rejected: u64,
}

/// The in-memory pipeline.
pub struct Simulation {
    engine: Engine,
    limits: Limits,
    registry: MemoryRegistry,
    groups: HashMap<GroupKey, SimGroup>,
    ledger: Ledger,
    clock: Option<DateTime<Utc>>,
    /// Pending timers by event-time due.
    timers: BTreeSet<(DateTime<Utc>, GroupKey)>,
    /// The pull requests each (repository, commit) is known to belong to.
    associations: Associations,
    /// Each pull request's head, state and info, the newest reported.
    pulls: HashMap<(i64, u64), Pull>,
    /// The jobs seen, merged (`runwatch.workflow_job.v1`).
    jobs: JobBook,
}

impl Simulation {
    pub fn new(engine: Engine, limits: Limits) -> Simulation {
        Simulation {
            engine,
            limits,
            registry: MemoryRegistry::default(),
            groups: HashMap::new(),
            ledger: Ledger::default(),
            clock: None,
            timers: BTreeSet::new(),
            associations: Associations::default(),
            pulls: HashMap::new(),
            jobs: JobBook::new(),
        }
    }

    /// Decodes and applies one line; returns its triggers, or why it was skipped.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<Vec<Trigger>, String> {
        let (mut out, job) = self.feed(line)?;
        // Every trigger lists its failed runs' jobs as known when it was decided, as the
        // worker lists them where it writes the decision. A job input decides nothing (the
        // timers it made due fired before it, their triggers listed without it).
        if !job {
            self.attach_jobs(&mut out);
        }
        Ok(out)
    }

    fn attach_jobs(&self, triggers: &mut [Trigger]) {
        for t in triggers {
            self.engine.attach_jobs(t, &self.jobs);
        }
    }

    /// Applies one line; returns its triggers and whether it was a job.
    fn feed(&mut self, line: &[u8]) -> Result<(Vec<Trigger>, bool), String> {
        let input = decode_input(line, &self.limits).map_err(|r| r.to_string())?;
        let t = input.updated_at();
        let now = self.clock.map_or(t, |c| c.max(t));
        let mut out = self.fire_timers_until(Some(now));
        self.clock = Some(now);
        let repo = self.registry.resolve(&input.repo_claim());
        let clock = Clock::event_time(now);
        if let Input::Job(j) = &input {
            let key = JobState::key_of(repo.internal_id, j);
            merge_book(&mut self.jobs, key, JobState::from_report(j));
            return Ok((out, true));
        }
        let sha = input.commit_sha().to_string();
        let route = self.associations.route(Arrival {
            repository_id: repo.internal_id,
            commit_sha: &sha,
            carries: match &input {
                Input::Run(e) => Carries::Run(e.pr_number),
                Input::PullRequest(p) => Carries::PullRequest(p.pr_number),
                Input::Job(_) => Carries::Job,
            },
        });
        if let (Input::Run(event), Some(key)) = (&input, route.own) {
            let old_due = self.due_of(&key);
            let pull = self.pull_of(&key).cloned();
            let group = group_entry(&mut self.groups, &key, &repo);
            show_pull(&mut group.state, pull.as_ref());
            group.state.commit_in_pull = route.commit_in_pull;
            let mut ctx = group.ctx(&key);
            let fired = self
                .engine
                .apply(&mut ctx, &mut self.ledger, event, clock)
                .map_err(|r| r.to_string())?;
            out.extend(fired);
            self.reindex(&key, old_due);
            let run = (event.run.id.clone(), RunState::from_event(event));
            for target in &route.also {
                out.extend(self.absorb(&repo, target, std::iter::once((&run.0, &run.1)), clock));
            }
        }
        if let (Input::PullRequest(p), Some(key)) = (&input, route.pull) {
            let learnt = self
                .pulls
                .entry((repo.internal_id, p.pr_number))
                .or_default()
                .learn((p.updated_at, sha.clone()), p.status(), p.info());
            // Closed, merged, reopened, ready for review, its author known: the head
            // commit's group is judged again (as the worker does).
            if learnt.rejudge() && self.groups.contains_key(&key) {
                let old_due = self.due_of(&key);
                let group = group_entry(&mut self.groups, &key, &repo);
                show_pull(
                    &mut group.state,
                    self.pulls.get(&(repo.internal_id, p.pr_number)),
                );
                let mut ctx = group.ctx(&key);
                out.extend(self.engine.reconsider(&mut ctx, &mut self.ledger, clock));
                self.reindex(&key, old_due);
            }
        }
        // A pull request carried by the input: learn the association; the first time, the
        // runs the commit had without a pull request join the pull request's group.
        if let Some(join) = route.join
            && let (r, Some(n), _) = &join.into
            && self.associations.learn(*r, &sha, *n)
        {
            let pr_less: GroupState = self
                .groups
                .get(&join.from)
                .map(|g| g.state.clone())
                .unwrap_or_default();
            let group = group_entry(&mut self.groups, &join.into, &repo);
            let mut ctx = group.ctx(&join.into);
            self.engine.inherit_fired(&mut ctx, &pr_less);
            out.extend(self.absorb(&repo, &join.into, pr_less.runs.iter(), clock));
        }
        Ok((out, false))
    }

    /// The group's next due time, if it has one.
    fn due_of(&self, key: &GroupKey) -> Option<DateTime<Utc>> {
        self.groups
            .get(key)
            .and_then(|g| g.state.next_due())
            .map(|d| d.event)
    }

    /// The pull request of a group, as far as it is known.
    fn pull_of(&self, key: &GroupKey) -> Option<&Pull> {
        key.1.and_then(|n| self.pulls.get(&(key.0, n)))
    }

    /// Merges runs into a pull request's group of the commit.
    fn absorb<'r>(
        &mut self,
        repo: &RepoRef,
        key: &GroupKey,
        runs: impl IntoIterator<Item = (&'r String, &'r RunState)>,
        clock: Clock,
    ) -> Vec<Trigger> {
        let old_due = self.due_of(key);
        let pull = self.pull_of(key).cloned();
        let group = group_entry(&mut self.groups, key, repo);
        show_pull(&mut group.state, pull.as_ref());
        let mut ctx = group.ctx(key);
        let (fired, _) = self.engine.absorb(&mut ctx, &mut self.ledger, runs, clock);
        self.reindex(key, old_due);
        fired
    }

    /// What the simulation knows of a pull request (title, author, branches, url): what
    /// the property tests compare with the worker's.
    pub fn pull_info(&self, repository_internal_id: i64, pr: u64) -> Option<PullInfo> {
        self.pulls
            .get(&(repository_internal_id, pr))
            .and_then(|p| p.info.clone())
    }

    /// Every group's runs, by (repository internal id, pull request, commit): what the
    /// property tests compare.
    pub fn group_runs(
        &self,
    ) -> BTreeMap<(i64, Option<u64>, String), BTreeMap<String, crate::engine::RunState>> {
        self.groups
            .iter()
            .map(|(k, g)| (k.clone(), g.state.runs.clone()))
            .collect()
    }

    /// The flips found so far, per (repository internal id, workflow), by run id.
    pub fn flips(&self) -> &BTreeMap<crate::engine::FlipKey, crate::engine::Flips> {
        &self.ledger.flips
    }

    /// Fires pending timers due at or before `until` (all of them when `None`), in due order.
    pub fn fire_timers_until(&mut self, until: Option<DateTime<Utc>>) -> Vec<Trigger> {
        let mut out = Vec::new();
        while let Some((due, key)) = self.timers.first().cloned() {
            if until.is_some_and(|u| due > u) {
                break;
            }
            self.timers.remove(&(due, key.clone()));
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            let at = self.clock.map_or(due, |c| c.max(due));
            let pull = key.1.and_then(|n| self.pulls.get(&(key.0, n)));
            show_pull(&mut group.state, pull);
            group.state.commit_in_pull =
                key.1.is_none() && self.associations.in_pull(key.0, &key.2);
            let mut ctx = group.ctx(&key);
            out.extend(
                self.engine
                    .fire_due(&mut ctx, &mut self.ledger, Clock::event_time(at)),
            );
            if let Some(next) = group.state.next_due() {
                self.timers.insert((next.event, key));
            }
        }
        self.attach_jobs(&mut out);
        out
    }

    fn reindex(&mut self, key: &GroupKey, old_due: Option<DateTime<Utc>>) {
        if let Some(d) = old_due {
            self.timers.remove(&(d, key.clone()));
        }
        if let Some(next) = self.groups.get(key).and_then(|g| g.state.next_due()) {
            self.timers.insert((next.event, key.clone()));
        }
    }
}

fn group_entry<'a>(
    groups: &'a mut HashMap<GroupKey, SimGroup>,
    key: &GroupKey,
    repo: &RepoRef,
) -> &'a mut SimGroup {
    let group = groups.entry(key.clone()).or_insert_with(|| SimGroup {
        repo: repo.clone(),
        branch: None,
        state: GroupState::default(),
    });
    group.repo = repo.clone();
    group
}

/// Runs a whole input: triggers to `out` as JSON lines, problems to `err` with line numbers.
pub fn run(
    engine: Engine,
    limits: Limits,
    input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> std::io::Result<Report> {
    let mut sim = Simulation::new(engine, limits);
    let mut report = Report::default();
    let emit =
        |triggers: Vec<Trigger>, out: &mut dyn Write, report: &mut Report| -> std::io::Result<()> {
            for t in triggers {
                serde_json::to_writer(&mut *out, &t)?;
                out.write_all(b"\n")?;
                report.triggers += 1;
            }
            Ok(())
        };
    let mut lines = crate::input::BoundedLines::new(input, limits.max_message_bytes);
    while let Some((number, line)) = lines.next_line()? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.events += 1;
        match sim.feed_line(line) {
            Ok(t) => emit(t, &mut out, &mut report)?,
            Err(reason) => {
                report.rejected += 1;
                writeln!(err, "line {number}: {reason}")?;
            }
        }
    }
    let rest = sim.fire_timers_until(None);
    emit(rest, &mut out, &mut report)?;
    out.flush()?;
    Ok(report)
}
