//! The state of `repeated_failure`: per (repository, rule, branch, workflow), the failures
//! since the most recent non-failure, ordered by (run `updated_at`, run id).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::merge::RunState;

/// Identifies a streak: one per repository, rule, branch and workflow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreakKey {
    pub repository_id: i64,
    pub rule: String,
    pub branch: String,
    pub workflow: String,
}

/// Where a run stands in the streak order: (updated_at, run id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreakPos {
    pub updated_at: DateTime<Utc>,
    pub run_id: String,
}

impl StreakPos {
    /// A stable text form, used in trigger ids.
    pub fn id(&self) -> String {
        format!("{}/{}", self.updated_at.to_rfc3339(), self.run_id)
    }
}

/// A failed run kept in the streak, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreakRun {
    pub run_id: String,
    pub run: RunState,
    pub commit_sha: String,
    #[serde(default)]
    pub pr_number: Option<u64>,
}

impl StreakRun {
    pub fn pos(&self) -> StreakPos {
        StreakPos {
            updated_at: self.run.updated_at,
            run_id: self.run_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreakState {
    /// Failures after `last_break`, oldest first, at most `threshold` of them (the newest).
    #[serde(default)]
    pub failures: Vec<StreakRun>,
    /// The newest completed run that did not fail: a streak starts after it.
    #[serde(default)]
    pub last_break: Option<StreakPos>,
    /// The newest failure when the rule last fired; a new streak needs a break after it.
    #[serde(default)]
    pub fired_through: Option<StreakPos>,
}

impl StreakState {
    /// Records a completed run. Returns true when the state changed.
    pub fn record(&mut self, entry: StreakRun, failed: bool, threshold: usize) -> bool {
        let pos = entry.pos();
        // One state per run id: an older copy of this run leaves, unless it is newer.
        if let Some(i) = self.failures.iter().position(|f| f.run_id == entry.run_id) {
            if entry.run.order(&self.failures[i].run) != Ordering::Greater {
                return false;
            }
            self.failures.remove(i);
        }
        if !failed {
            if self.last_break.as_ref().is_some_and(|b| *b >= pos) {
                return false;
            }
            self.failures.retain(|f| f.pos() > pos);
            self.last_break = Some(pos);
            return true;
        }
        if self.last_break.as_ref().is_some_and(|b| *b >= pos) {
            // A failure older than the streak's start does not belong to it.
            return false;
        }
        let at = self
            .failures
            .iter()
            .position(|f| f.pos() > pos)
            .unwrap_or(self.failures.len());
        self.failures.insert(at, entry);
        if self.failures.len() > threshold {
            let excess = self.failures.len() - threshold;
            self.failures.drain(..excess);
        }
        true
    }

    /// Whether the newest `threshold` completed runs all failed in a streak that has not
    /// fired yet.
    pub fn should_fire(&self, threshold: usize) -> bool {
        if self.failures.len() < threshold {
            return false;
        }
        match (&self.fired_through, &self.last_break) {
            (None, _) => true,
            (Some(through), Some(brk)) => brk > through,
            (Some(_), None) => false,
        }
    }

    /// The streak's identity: the break it started after.
    pub fn streak_id(&self) -> String {
        self.last_break
            .as_ref()
            .map_or_else(|| "start".to_string(), StreakPos::id)
    }

    pub fn mark_fired(&mut self) {
        self.fired_through = self.failures.last().map(StreakRun::pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Conclusion, Status};

    fn run(id: &str, secs: i64, failed: bool) -> (StreakRun, bool) {
        let run = RunState {
            attempt: 1,
            workflow: "nightly".into(),
            status: Status::Completed,
            conclusion: Some(if failed { Conclusion::Failure } else { Conclusion::Success }),
            url: None,
            updated_at: DateTime::from_timestamp(secs, 0).unwrap(),
            event_id: format!("e{id}"),
            branch: Some("main".into()),
        };
        (
            StreakRun {
                run_id: id.into(),
                run,
                commit_sha: "c".into(),
                pr_number: None,
            },
            failed,
        )
    }

    fn feed(s: &mut StreakState, runs: &[(&str, i64, bool)]) -> usize {
        let mut fired = 0;
        for (id, t, f) in runs {
            let (e, failed) = run(id, *t, *f);
            if s.record(e, failed, 3) && s.should_fire(3) {
                s.mark_fired();
                fired += 1;
            }
        }
        fired
    }

    #[test]
    fn fires_once_per_streak_and_success_ends_it() {
        let mut s = StreakState::default();
        let n = feed(
            &mut s,
            &[("1", 1, true), ("2", 2, true), ("3", 3, false), ("4", 4, true), ("5", 5, true), ("6", 6, true), ("7", 7, true)],
        );
        assert_eq!(n, 1);
        assert_eq!(feed(&mut s, &[("8", 8, false), ("9", 9, true), ("10", 10, true), ("11", 11, true)]), 1);
    }

    #[test]
    fn late_old_success_inside_a_fired_streak_does_not_refire() {
        let mut s = StreakState::default();
        assert_eq!(feed(&mut s, &[("1", 1, true), ("2", 2, true), ("3", 3, true), ("4", 4, true)]), 1);
        assert_eq!(feed(&mut s, &[("0", 2, false), ("5", 5, true)]), 0);
    }

    #[test]
    fn order_does_not_matter_for_the_final_decision() {
        let mut a = StreakState::default();
        let mut b = StreakState::default();
        let na = feed(&mut a, &[("1", 1, true), ("2", 2, true), ("3", 3, true)]);
        let nb = feed(&mut b, &[("3", 3, true), ("1", 1, true), ("2", 2, true)]);
        assert_eq!((na, nb), (1, 1));
        assert_eq!(a.failures, b.failures);
    }
}
