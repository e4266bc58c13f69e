//! `runwatch simulate`: the engine over a file of events, state in memory, event time.
//!
//! The clock is the largest `run.updated_at` seen so far. Before an event is applied, every
//! timer due at or before the new clock fires, in due-time order; at the end of the input
//! every pending timer fires. A malformed line is reported with its line number and skipped.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};

use crate::engine::{Clock, Engine, GroupCtx, GroupState, Ledger, RepoRef};
use crate::event::{Limits, decode};
use crate::repository::{MemoryRegistry, RepoClaim};
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
        }
    }

    /// Decodes and applies one line; returns its triggers, or why it was skipped.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<Vec<Trigger>, String> {
        let event = decode(line, &self.limits).map_err(|r| r.to_string())?;
        let t = event.run.updated_at;
        let now = self.clock.map_or(t, |c| c.max(t));
        let mut out = self.fire_timers_until(Some(now));
        self.clock = Some(now);
        let repo = self.registry.resolve(&RepoClaim::from_event(&event));
        let key: GroupKey = (repo.internal_id, event.pr_number, event.commit_sha.clone());
        let group = self.groups.entry(key.clone()).or_insert_with(|| SimGroup {
            repo: repo.clone(),
            branch: None,
            state: GroupState::default(),
        });
        group.repo = repo;
        let old_due = group.state.next_due().map(|d| d.event);
        let mut ctx = GroupCtx {
            repo: &group.repo,
            pr_number: event.pr_number,
            commit_sha: &event.commit_sha,
            branch: &mut group.branch,
            state: &mut group.state,
        };
        let fired = self
            .engine
            .apply(&mut ctx, &mut self.ledger, &event, Clock::event_time(now))
            .map_err(|r| r.to_string())?;
        out.extend(fired);
        self.reindex(&key, old_due);
        Ok(out)
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
            let mut ctx = GroupCtx {
                repo: &group.repo,
                pr_number: key.1,
                commit_sha: &key.2,
                branch: &mut group.branch,
                state: &mut group.state,
            };
            out.extend(self.engine.fire_due(&mut ctx, &mut self.ledger, Clock::event_time(at)));
            if let Some(next) = group.state.next_due() {
                self.timers.insert((next.event, key));
            }
        }
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
    let emit = |triggers: Vec<Trigger>, out: &mut dyn Write, report: &mut Report| -> std::io::Result<()> {
        for t in triggers {
            serde_json::to_writer(&mut *out, &t)?;
            out.write_all(b"\n")?;
            report.triggers += 1;
        }
        Ok(())
    };
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.events += 1;
        match sim.feed_line(&line) {
            Ok(t) => emit(t, &mut out, &mut report)?,
            Err(reason) => {
                report.rejected += 1;
                writeln!(err, "line {}: {reason}", i + 1)?;
            }
        }
    }
    let rest = sim.fire_timers_until(None);
    emit(rest, &mut out, &mut report)?;
    out.flush()?;
    Ok(report)
}
