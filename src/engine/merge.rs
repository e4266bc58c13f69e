//! The monotone merge of one run's state (DESIGN.md "Groups and the merge rule").
//!
//! A run keeps one state; an incoming event replaces it only if it is newer by the order
//! (attempt, phase, updated_at, event_id), phase being queued < in_progress < completed,
//! and, when a producer reuses an event id for different content, by the rest of the run's
//! content (workflow, conclusion, url, branch). The order is total over everything a run
//! state holds, so the merge is commutative, associative and idempotent: any order and any
//! number of copies of the same events end in the same state.
//!
//! Besides the newest attempt's state, a run remembers the lowest attempt that failed and
//! the highest that passed (for flips, `flaky.rs`), taken from every attempt merged, by min
//! and max: commutative, associative and idempotent too. Each is stored only when the kept
//! attempt does not say it already, so a run that never failed, or whose only failure is
//! the kept attempt, stores nothing more.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::flaky::Flip;
use super::rules::{DEFAULT_FAILURE_CONCLUSIONS, PASSING_CONCLUSIONS};
use crate::event::{Conclusion, Event, Status};

/// What a group remembers of one run. Stored in every group's `state` (and a streak's
/// window) as a JSON array, not an object (`stored_run.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub attempt: u32,
    pub workflow: String,
    pub status: Status,
    pub conclusion: Option<Conclusion>,
    pub url: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub event_id: String,
    pub branch: Option<String>,
    /// The lowest attempt of the run that completed with `failure`, `timed_out` or
    /// `startup_failure`, of every attempt merged, when it is not the kept attempt (see
    /// [`RunState::lowest_failed`]).
    pub failed_attempt: Option<u32>,
    /// The highest attempt of the run that completed passing (`success`, `neutral`,
    /// `skipped`), and its `updated_at`, of every attempt merged, when it is not the kept
    /// attempt (see [`RunState::highest_passed`]).
    pub passed: Option<Flip>,
}

impl RunState {
    pub fn from_event(e: &Event) -> RunState {
        RunState {
            attempt: e.run.attempt,
            workflow: e.run.workflow.clone(),
            status: e.run.status,
            conclusion: e.run.conclusion,
            url: e.run.url.clone(),
            updated_at: e.run.updated_at,
            event_id: e.event_id.clone(),
            branch: e.branch.clone(),
            failed_attempt: None,
            passed: None,
        }
    }

    /// The kept attempt, if it completed with a failure (for flips).
    fn own_failed(&self) -> Option<u32> {
        (self.status == Status::Completed
            && self
                .conclusion
                .is_some_and(|c| DEFAULT_FAILURE_CONCLUSIONS.contains(&c)))
        .then_some(self.attempt)
    }

    /// The kept attempt, if it completed passing.
    fn own_passed(&self) -> Option<Flip> {
        (self.status == Status::Completed
            && self
                .conclusion
                .is_some_and(|c| PASSING_CONCLUSIONS.contains(&c)))
        .then_some(Flip {
            attempt: self.attempt,
            at: self.updated_at,
        })
    }

    /// The lowest attempt of every attempt merged that completed with a failure.
    pub fn lowest_failed(&self) -> Option<u32> {
        match (self.failed_attempt, self.own_failed()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The highest attempt of every attempt merged that completed passing, and its time.
    pub fn highest_passed(&self) -> Option<Flip> {
        self.passed.max(self.own_passed())
    }

    /// The run's flip: its highest passing attempt, when a lower attempt failed.
    pub fn flip(&self) -> Option<Flip> {
        match (self.lowest_failed(), self.highest_passed()) {
            (Some(f), Some(p)) if f < p.attempt => Some(p),
            _ => None,
        }
    }

    /// Takes `other`'s attempt history into this state's, keeping only what the kept
    /// attempt does not say itself (so the stored fields are the same in every order).
    fn absorb_history(&mut self, other: &RunState) {
        let failed = match (self.lowest_failed(), other.lowest_failed()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let passed = self.highest_passed().max(other.highest_passed());
        let (own_failed, own_passed) = (self.own_failed(), self.own_passed());
        self.failed_attempt = failed.filter(|f| Some(*f) != own_failed);
        self.passed = passed.filter(|p| Some(*p) != own_passed);
    }

    /// The merge order: (attempt, phase, updated_at, event_id), then the rest of the
    /// content as the last tie-break. `Equal` only for identical states (but for the attempt history, which the merge takes
    /// from both), so two events that
    /// share an id but differ converge to the same winner in every order.
    pub fn order(&self, other: &RunState) -> Ordering {
        (
            self.attempt,
            self.status,
            self.updated_at,
            self.event_id.as_str(),
        )
            .cmp(&(
                other.attempt,
                other.status,
                other.updated_at,
                other.event_id.as_str(),
            ))
            .then_with(|| self.content_key().cmp(&other.content_key()))
    }

    /// The fields the four order keys do not cover.
    fn content_key(&self) -> (&str, Option<Conclusion>, Option<&str>, Option<&str>) {
        (
            self.workflow.as_str(),
            self.conclusion,
            self.url.as_deref(),
            self.branch.as_deref(),
        )
    }
}

/// Merges `incoming` into `slot`; returns true when the kept attempt's state changed (the
/// attempt history, `failed_attempt` and `passed`, is merged in either way: see
/// [`RunState::flip`]).
pub fn merge_into(slot: &mut Option<RunState>, mut incoming: RunState) -> bool {
    match slot {
        Some(current) if incoming.order(current) != Ordering::Greater => {
            current.absorb_history(&incoming);
            false
        }
        Some(current) => {
            incoming.absorb_history(current);
            *current = incoming;
            true
        }
        None => {
            *slot = Some(incoming);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(attempt: u32, status: Status, secs: i64, id: &str) -> RunState {
        RunState {
            attempt,
            workflow: "w".into(),
            status,
            conclusion: (status == Status::Completed).then_some(Conclusion::Failure),
            url: None,
            updated_at: DateTime::from_timestamp(secs, 0).unwrap(),
            event_id: id.into(),
            branch: None,
            failed_attempt: None,
            passed: None,
        }
    }

    /// States written with the field names (runs as objects) read as the same states, and
    /// are written back with runs as arrays.
    #[test]
    fn states_written_with_field_names_still_read() {
        let old = serde_json::json!({"runs": {"7": {"attempt": 2, "workflow": "ci", "status": "completed",
            "conclusion": "failure", "url": "https://ci.example/7", "updated_at": "2026-01-01T00:00:00Z",
            "event_id": "e7", "branch": "main", "failed_attempt": 1,
            "passed": {"attempt": 1, "at": "2025-12-31T00:00:00Z"}}},
            "rules": {"r": {"episode": 1, "fired": true, "fired_max_attempt": 2}, "q": {"episode": 0, "fired": false, "fired_max_attempt": 0}}});
        let state: crate::engine::GroupState = serde_json::from_value(old).unwrap();
        let run = &state.runs["7"];
        assert_eq!((run.attempt, run.failed_attempt), (2, Some(1)));
        assert_eq!(run.workflow, "ci");
        assert_eq!(run.status, Status::Completed);
        assert_eq!(run.conclusion, Some(Conclusion::Failure));
        assert_eq!(run.url.as_deref(), Some("https://ci.example/7"));
        assert_eq!(run.event_id, "e7");
        assert_eq!(run.branch.as_deref(), Some("main"));
        assert_eq!(run.passed.map(|p| p.attempt), Some(1));
        assert_eq!(
            (
                state.rules["r"].episode,
                state.rules["r"].fired,
                state.rules["r"].fired_max_attempt
            ),
            (1, true, 2)
        );
        let new = serde_json::to_value(&state).unwrap();
        assert_eq!(
            new,
            serde_json::json!({"runs": {"7": [2, "ci", "completed", "failure", "https://ci.example/7",
                1767225600, "e7", "main", 1, {"attempt": 1, "at": "2025-12-31T00:00:00Z"}]},
                "rules": {"r": {"episode": 1, "fired": true, "fired_max_attempt": 2}, "q": {}}})
        );
        let again: crate::engine::GroupState = serde_json::from_value(new).unwrap();
        assert_eq!(again, state);
    }

    /// `updated_at` is stored as whole seconds; a timestamp with a fraction is stored as
    /// text, and text in the array form (written before) reads as well: each reads back the
    /// same instant.
    #[test]
    fn run_timestamps_are_stored_as_seconds_or_text() {
        let whole = rs(1, Status::Completed, 1_767_225_600, "a");
        let mut fraction = whole.clone();
        fraction.updated_at += chrono::Duration::milliseconds(250);
        assert_eq!(serde_json::to_value(&whole).unwrap()[5], 1_767_225_600);
        assert_eq!(
            serde_json::to_value(&fraction).unwrap()[5],
            "2026-01-01T00:00:00.250Z"
        );
        for run in [&whole, &fraction] {
            let back: RunState =
                serde_json::from_value(serde_json::to_value(run).unwrap()).unwrap();
            assert_eq!(&back, run);
        }
        let text = serde_json::json!([
            1,
            "w",
            "completed",
            "failure",
            null,
            "2026-01-01T00:00:00Z",
            "a",
            null
        ]);
        assert_eq!(serde_json::from_value::<RunState>(text).unwrap(), whole);
        let far = serde_json::json!([1, "w", "completed", "failure", null, u64::MAX, "a", null]);
        assert!(serde_json::from_value::<RunState>(far).is_err());
    }

    fn pass(attempt: u32, secs: i64, id: &str) -> RunState {
        RunState {
            conclusion: Some(Conclusion::Success),
            ..rs(attempt, Status::Completed, secs, id)
        }
    }

    #[test]
    fn late_in_progress_does_not_regress_completed() {
        let mut slot = None;
        assert!(merge_into(&mut slot, rs(1, Status::Completed, 10, "b")));
        assert!(!merge_into(&mut slot, rs(1, Status::InProgress, 20, "c")));
        assert_eq!(slot.unwrap().status, Status::Completed);
    }

    #[test]
    fn higher_attempt_replaces_completed() {
        let mut slot = None;
        merge_into(&mut slot, rs(1, Status::Completed, 10, "b"));
        assert!(merge_into(&mut slot, rs(2, Status::Queued, 5, "c")));
        assert_eq!(slot.unwrap().attempt, 2);
    }

    #[test]
    fn a_reused_event_id_converges_whatever_comes_first() {
        let a = rs(1, Status::Completed, 10, "same");
        let mut b = a.clone();
        b.conclusion = Some(Conclusion::Success);
        let mut c = a.clone();
        c.url = Some("https://ci.example/1".into());
        for order in [[&a, &b, &c], [&b, &c, &a], [&c, &a, &b], [&c, &b, &a]] {
            let mut slot = None;
            for r in order {
                merge_into(&mut slot, r.clone());
            }
            let mut first = None;
            for r in [&a, &b, &c] {
                merge_into(&mut first, r.clone());
            }
            assert_eq!(slot, first);
        }
        assert_ne!(a.order(&b), Ordering::Equal);
    }

    #[test]
    fn a_failed_attempt_then_a_passing_one_is_a_flip_in_every_order() {
        let failed = rs(1, Status::Completed, 10, "a");
        let passed = pass(2, 20, "b");
        let queued = rs(3, Status::Queued, 30, "c");
        let events = [&failed, &passed, &queued];
        let mut reference = None;
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let mut slot = None;
            for i in order {
                merge_into(&mut slot, events[i].clone());
                // A duplicate changes nothing.
                let before = slot.clone();
                merge_into(&mut slot, events[i].clone());
                assert_eq!(slot, before);
            }
            let s = slot.unwrap();
            assert_eq!(s.attempt, 3, "the newest attempt is kept");
            assert_eq!(s.flip().map(|f| f.attempt), Some(2));
            assert_eq!(*reference.get_or_insert_with(|| s.clone()), s);
        }
        // A pass before the failure, or a failure alone, is no flip.
        let mut slot = None;
        merge_into(&mut slot, pass(1, 10, "a"));
        merge_into(&mut slot, rs(2, Status::Completed, 20, "b"));
        assert_eq!(slot.unwrap().flip(), None);
        // What the kept attempt says is not stored again: a run that never failed, or
        // whose only failure is the kept attempt, stores nothing more.
        let mut slot = None;
        merge_into(&mut slot, pass(1, 10, "a"));
        assert_eq!(
            serde_json::to_value(slot.unwrap())
                .unwrap()
                .as_array()
                .map(Vec::len),
            Some(8),
            "no failed attempt, no passed attempt stored"
        );
        let mut slot = None;
        merge_into(&mut slot, failed.clone());
        assert_eq!(
            serde_json::to_value(slot.unwrap())
                .unwrap()
                .as_array()
                .map(Vec::len),
            Some(8),
            "no failed attempt, no passed attempt stored"
        );
        // A failure before the kept attempt is stored.
        let mut slot = None;
        merge_into(&mut slot, queued.clone());
        merge_into(&mut slot, failed.clone());
        let s = slot.unwrap();
        assert_eq!((s.failed_attempt, s.passed), (Some(1), None));
    }

    #[test]
    fn duplicate_changes_nothing() {
        let mut slot = None;
        merge_into(&mut slot, rs(1, Status::Queued, 10, "a"));
        assert!(!merge_into(&mut slot, rs(1, Status::Queued, 10, "a")));
    }
}
