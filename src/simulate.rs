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
use crate::engine::{
    Clock, Engine, GroupCtx, GroupState, JobBook, JobState, Ledger, PullInfo, PullStatus, RepoRef,
};
use crate::event::Limits;
use crate::pull_request::{Input, decode_input};
use crate::repository::MemoryRegistry;
use crate::trigger::Trigger;

type GroupKey = (i64, Option<u64>, String);

struct SimGroup {
    repo: RepoRef,
    branch: Option<String>,
    state: GroupState,
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
    commit_pulls: HashMap<(i64, String), BTreeSet<u64>>,
    /// Each pull request's head: (repository, pull request) → (updated_at, commit).
    heads: HashMap<(i64, u64), (DateTime<Utc>, String)>,
    /// Each pull request's state, the newest reported.
    statuses: HashMap<(i64, u64), PullStatus>,
    /// Each pull request's title, author, branches and url, the newest reported.
    infos: HashMap<(i64, u64), PullInfo>,
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
            commit_pulls: HashMap::new(),
            heads: HashMap::new(),
            statuses: HashMap::new(),
            infos: HashMap::new(),
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
        if let Input::PullRequest(p) = &input {
            self.learn_head(repo.internal_id, p.pr_number, p.updated_at, &sha);
            let k = (repo.internal_id, p.pr_number);
            let status = p.status().filter(|s| s.supersedes(self.statuses.get(&k)));
            let info = p.info().filter(|i| i.supersedes(self.infos.get(&k)));
            let changed = status.is_some() || info.is_some();
            if let Some(st) = status {
                self.statuses.insert(k, st);
            }
            if let Some(i) = info {
                self.infos.insert(k, i);
            }
            if changed {
                // Closed, merged, reopened, ready for review, its author known: the head
                // commit's group is judged again (as the worker does).
                let key: GroupKey = (repo.internal_id, Some(p.pr_number), sha.clone());
                if self.groups.contains_key(&key) {
                    let old_due = self
                        .groups
                        .get(&key)
                        .and_then(|g| g.state.next_due())
                        .map(|d| d.event);
                    let (head, status, info) = self.pull_of(repo.internal_id, Some(p.pr_number));
                    let group = group_entry(&mut self.groups, &key, &repo);
                    group.state.pr_head = head;
                    group.state.pr_status = status;
                    group.state.pr_info = info;
                    let mut ctx = GroupCtx {
                        repo: &group.repo,
                        pr_number: Some(p.pr_number),
                        commit_sha: &sha,
                        branch: &mut group.branch,
                        state: &mut group.state,
                    };
                    out.extend(self.engine.reconsider(&mut ctx, &mut self.ledger, clock));
                    self.reindex(&key, old_due);
                }
            }
        }
        if let Input::Run(event) = &input {
            let key: GroupKey = (repo.internal_id, event.pr_number, sha.clone());
            let old_due = self
                .groups
                .get(&key)
                .and_then(|g| g.state.next_due())
                .map(|d| d.event);
            let (head, status, info) = self.pull_of(repo.internal_id, event.pr_number);
            let in_pull = event.pr_number.is_none() && self.in_pull(repo.internal_id, &sha);
            let group = group_entry(&mut self.groups, &key, &repo);
            group.state.pr_head = head;
            group.state.pr_status = status;
            group.state.pr_info = info;
            group.state.commit_in_pull = in_pull;
            let mut ctx = GroupCtx {
                repo: &group.repo,
                pr_number: event.pr_number,
                commit_sha: &event.commit_sha,
                branch: &mut group.branch,
                state: &mut group.state,
            };
            let fired = self
                .engine
                .apply(&mut ctx, &mut self.ledger, event, clock)
                .map_err(|r| r.to_string())?;
            out.extend(fired);
            self.reindex(&key, old_due);
            if event.pr_number.is_none() {
                // Also in every pull request the commit is known to belong to.
                let run = (
                    event.run.id.clone(),
                    crate::engine::RunState::from_event(event),
                );
                let prs: Vec<u64> = self
                    .commit_pulls
                    .get(&(repo.internal_id, sha.clone()))
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                for n in prs {
                    out.extend(self.absorb(
                        &repo,
                        n,
                        &sha,
                        std::iter::once((&run.0, &run.1)),
                        clock,
                    ));
                }
                return Ok((out, false));
            }
        }
        // A pull request carried by the input: learn the association; the first time, the
        // runs the commit had without a pull request join the pull request's group.
        if let Some(n) = input.pr_number()
            && self
                .commit_pulls
                .entry((repo.internal_id, sha.clone()))
                .or_default()
                .insert(n)
        {
            let pr_less: GroupState = self
                .groups
                .get(&(repo.internal_id, None, sha.clone()))
                .map(|g| g.state.clone())
                .unwrap_or_default();
            let key: GroupKey = (repo.internal_id, Some(n), sha.clone());
            let group = group_entry(&mut self.groups, &key, &repo);
            let mut ctx = GroupCtx {
                repo: &group.repo,
                pr_number: Some(n),
                commit_sha: &sha,
                branch: &mut group.branch,
                state: &mut group.state,
            };
            self.engine.inherit_fired(&mut ctx, &pr_less);
            out.extend(self.absorb(&repo, n, &sha, pr_less.runs.iter(), clock));
        }
        Ok((out, false))
    }

    /// Merges runs into the group of pull request `n` of the commit.
    fn absorb<'r>(
        &mut self,
        repo: &RepoRef,
        n: u64,
        sha: &str,
        runs: impl IntoIterator<Item = (&'r String, &'r crate::engine::RunState)>,
        clock: Clock,
    ) -> Vec<Trigger> {
        let key: GroupKey = (repo.internal_id, Some(n), sha.to_string());
        let old_due = self
            .groups
            .get(&key)
            .and_then(|g| g.state.next_due())
            .map(|d| d.event);
        let (head, status, info) = self.pull_of(repo.internal_id, Some(n));
        let group = group_entry(&mut self.groups, &key, repo);
        group.state.pr_head = head;
        group.state.pr_status = status;
        group.state.pr_info = info;
        let mut ctx = GroupCtx {
            repo: &group.repo,
            pr_number: Some(n),
            commit_sha: sha,
            branch: &mut group.branch,
            state: &mut group.state,
        };
        let (fired, _) = self.engine.absorb(&mut ctx, &mut self.ledger, runs, clock);
        self.reindex(&key, old_due);
        fired
    }

    /// Records a pull request's head if it is the latest seen (by `updated_at`, then commit).
    fn learn_head(&mut self, repo: i64, n: u64, at: DateTime<Utc>, sha: &str) {
        let candidate = (at, sha.to_string());
        let e = self
            .heads
            .entry((repo, n))
            .or_insert_with(|| candidate.clone());
        if candidate > *e {
            *e = candidate;
        }
    }

    /// Whether the commit is known to belong to a pull request.
    fn in_pull(&self, repo: i64, sha: &str) -> bool {
        self.commit_pulls
            .get(&(repo, sha.to_string()))
            .is_some_and(|s| !s.is_empty())
    }

    /// The head, the state and the info of a pull request, as the engine reads them.
    fn pull_of(
        &self,
        repo: i64,
        pr: Option<u64>,
    ) -> (Option<String>, Option<PullStatus>, Option<PullInfo>) {
        let head = pr
            .and_then(|n| self.heads.get(&(repo, n)))
            .map(|(_, sha)| sha.clone());
        (
            head,
            pr.and_then(|n| self.statuses.get(&(repo, n)).copied()),
            pr.and_then(|n| self.infos.get(&(repo, n)).cloned()),
        )
    }

    /// What the simulation knows of a pull request (title, author, branches, url): what
    /// the property tests compare with the worker's.
    pub fn pull_info(&self, repository_internal_id: i64, pr: u64) -> Option<PullInfo> {
        self.infos.get(&(repository_internal_id, pr)).cloned()
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
            group.state.pr_head = key
                .1
                .and_then(|n| self.heads.get(&(key.0, n)))
                .map(|(_, sha)| sha.clone());
            group.state.pr_status = key.1.and_then(|n| self.statuses.get(&(key.0, n)).copied());
            group.state.pr_info = key.1.and_then(|n| self.infos.get(&(key.0, n)).cloned());
            group.state.commit_in_pull = key.1.is_none()
                && self
                    .commit_pulls
                    .get(&(key.0, key.2.clone()))
                    .is_some_and(|s| !s.is_empty());
            let mut ctx = GroupCtx {
                repo: &group.repo,
                pr_number: key.1,
                commit_sha: &key.2,
                branch: &mut group.branch,
                state: &mut group.state,
            };
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
