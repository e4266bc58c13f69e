//! The state of `repeated_failure`: per (repository, rule, branch, workflow), the newest
//! completed runs, ordered by (run `updated_at`, run id), and where the current streak began.

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

/// A completed run kept in the streak window, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreakRun {
    pub run_id: String,
    pub run: RunState,
    pub commit_sha: String,
    #[serde(default)]
    pub pr_number: Option<u64>,
    /// Whether this attempt's conclusion is a failure for the rule. States written before
    /// the window kept successes held only failures, hence the default.
    #[serde(default = "yes")]
    pub failed: bool,
}

fn yes() -> bool {
    true
}

impl StreakRun {
    pub fn pos(&self) -> StreakPos {
        StreakPos {
            updated_at: self.run.updated_at,
            run_id: self.run_id.clone(),
        }
    }
}

/// The streak bookkeeping of one key.
///
/// `window` holds the newest `threshold` completed runs, each by its latest completed
/// attempt (merge order), oldest first. A run's position only moves forward (a re-run
/// completes later than the attempt it repeats), so a run that left the window can never be
/// among the newest `threshold` again, and the window is the same whatever order the events
/// came in. Successes that leave it are remembered as `last_break`: the newest success older
/// than the window, i.e. where the current streak started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreakState {
    /// The newest `threshold` completed runs, oldest first.
    #[serde(default, alias = "failures")]
    pub window: Vec<StreakRun>,
    /// The newest success older than the window.
    #[serde(default)]
    pub last_break: Option<StreakPos>,
    /// The newest run of the window when the rule last fired.
    #[serde(default)]
    pub fired_through: Option<StreakPos>,
}

impl StreakState {
    /// Records a completed run (by its attempt in `entry`). Returns true when the state
    /// changed. Idempotent, and the same set of entries gives the same window in any order.
    pub fn record(&mut self, mut entry: StreakRun, failed: bool, threshold: usize) -> bool {
        entry.failed = failed;
        let pos = entry.pos();
        if let Some(i) = self.window.iter().position(|f| f.run_id == entry.run_id) {
            // One state per run: only a newer attempt (merge order) replaces it.
            if entry.run.order(&self.window[i].run) != Ordering::Greater {
                return false;
            }
            self.window.remove(i);
        } else if self.window.len() >= threshold
            && self.window.first().is_some_and(|f| pos <= f.pos())
        {
            // Older than every run of a full window: it is not among the newest, but a
            // success there still bounds where the current streak starts.
            return !failed && self.note_break(pos);
        }
        let at = self
            .window
            .iter()
            .position(|f| f.pos() > pos)
            .unwrap_or(self.window.len());
        self.window.insert(at, entry);
        while self.window.len() > threshold {
            let old = self.window.remove(0);
            if !old.failed {
                self.note_break(old.pos());
            }
        }
        true
    }

    fn note_break(&mut self, pos: StreakPos) -> bool {
        if self.last_break.as_ref().is_some_and(|b| *b >= pos) {
            return false;
        }
        self.last_break = Some(pos);
        true
    }

    /// Whether the newest `threshold` completed runs all failed, in a streak that has not
    /// fired yet. The streak that fired is this one when no success lies between the run it
    /// fired through and the newest run: inside the window (all failures) or before it
    /// (`last_break`).
    pub fn should_fire(&self, threshold: usize) -> bool {
        if threshold == 0 || self.window.len() < threshold || !self.window.iter().all(|f| f.failed)
        {
            return false;
        }
        let Some(through) = &self.fired_through else {
            return true;
        };
        let oldest = self.window.first().map(StreakRun::pos);
        if oldest.is_some_and(|o| o <= *through) {
            return false;
        }
        self.last_break.as_ref().is_some_and(|b| b > through)
    }

    /// The failed runs of the window (all of it when the rule fires).
    pub fn failures(&self) -> impl Iterator<Item = &StreakRun> {
        self.window.iter().filter(|f| f.failed)
    }

    /// The streak's identity: the break it started after.
    pub fn streak_id(&self) -> String {
        self.last_break
            .as_ref()
            .map_or_else(|| "start".to_string(), StreakPos::id)
    }

    /// Whether the window is a full run of failures that has already fired (or was
    /// suppressed by a cooldown).
    pub fn has_fired(&self, threshold: u32) -> bool {
        let t = threshold as usize;
        self.window.len() >= t && self.window.iter().all(|r| r.failed) && !self.should_fire(t)
    }

    pub fn mark_fired(&mut self) {
        self.fired_through = self.window.last().map(StreakRun::pos);
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
            conclusion: Some(if failed {
                Conclusion::Failure
            } else {
                Conclusion::Success
            }),
            url: None,
            updated_at: DateTime::from_timestamp(secs, 0).unwrap(),
            event_id: format!("e{id}"),
            branch: Some("main".into()),
            failed_attempt: None,
            passed: None,
        };
        (
            StreakRun {
                run_id: id.into(),
                run,
                commit_sha: "c".into(),
                pr_number: None,
                failed,
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
            &[
                ("1", 1, true),
                ("2", 2, true),
                ("3", 3, false),
                ("4", 4, true),
                ("5", 5, true),
                ("6", 6, true),
                ("7", 7, true),
            ],
        );
        assert_eq!(n, 1);
        assert_eq!(
            feed(
                &mut s,
                &[
                    ("8", 8, false),
                    ("9", 9, true),
                    ("10", 10, true),
                    ("11", 11, true)
                ]
            ),
            1
        );
    }

    #[test]
    fn late_old_success_inside_a_fired_streak_does_not_refire() {
        let mut s = StreakState::default();
        assert_eq!(
            feed(
                &mut s,
                &[
                    ("1", 1, true),
                    ("2", 2, true),
                    ("3", 3, true),
                    ("4", 4, true)
                ]
            ),
            1
        );
        assert_eq!(feed(&mut s, &[("0", 2, false), ("5", 5, true)]), 0);
    }

    #[test]
    fn order_does_not_matter_for_the_final_decision() {
        let mut a = StreakState::default();
        let mut b = StreakState::default();
        let na = feed(&mut a, &[("1", 1, true), ("2", 2, true), ("3", 3, true)]);
        let nb = feed(&mut b, &[("3", 3, true), ("1", 1, true), ("2", 2, true)]);
        assert_eq!((na, nb), (1, 1));
        assert_eq!(a.window, b.window);
    }
}
