//! The monotone merge of one run's state (DESIGN.md "Groups and the merge rule").
//!
//! A run keeps one state; an incoming event replaces it only if it is newer by the order
//! (attempt, phase, updated_at, event_id), phase being queued < in_progress < completed,
//! and, when a producer reuses an event id for different content, by the rest of the run's
//! content (workflow, conclusion, url, branch). The order is total over everything a run
//! state holds, so the merge is commutative, associative and idempotent: any order and any
//! number of copies of the same events end in the same state.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Conclusion, Event, Status};

/// What a group remembers of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub attempt: u32,
    pub workflow: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<Conclusion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
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
        }
    }

    /// The merge order: (attempt, phase, updated_at, event_id), then the rest of the
    /// content as the last tie-break. `Equal` only for identical states, so two events that
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

/// Merges `incoming` into `slot`; returns true when the slot changed.
pub fn merge_into(slot: &mut Option<RunState>, incoming: RunState) -> bool {
    match slot {
        Some(current) if incoming.order(current) != Ordering::Greater => false,
        _ => {
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
    fn duplicate_changes_nothing() {
        let mut slot = None;
        merge_into(&mut slot, rs(1, Status::Queued, 10, "a"));
        assert!(!merge_into(&mut slot, rs(1, Status::Queued, 10, "a")));
    }
}
