//! The two clocks of a decision: event time and wall time.

use chrono::{DateTime, Utc};

use super::group::{Due, GroupState};
use super::rules::Rule;
use super::time::{plus, to_chrono};

/// The two clocks a decision sees. `event` is the largest `run.updated_at` seen (event
/// time); `wall` is the real time in the worker and equals `event` in `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub event: DateTime<Utc>,
    pub wall: DateTime<Utc>,
}

impl Clock {
    pub fn event_time(t: DateTime<Utc>) -> Clock {
        Clock { event: t, wall: t }
    }

    /// The clock after seeing an event that happened at `t`, at wall time `wall`. Event time
    /// never moves back, and never past `wall + max_lead`: an event dated further ahead (a
    /// producer bug, milliseconds read as seconds) still merges, but cannot make every other
    /// group's timers due.
    pub fn advance(
        self,
        t: DateTime<Utc>,
        wall: DateTime<Utc>,
        max_lead: std::time::Duration,
    ) -> Clock {
        Clock {
            event: self.event.max(t.min(lead_bound(wall, max_lead))),
            wall,
        }
    }

    /// Whether `t` is further ahead of `wall` than `max_lead` (see [`Clock::advance`]).
    pub fn is_skewed(t: DateTime<Utc>, wall: DateTime<Utc>, max_lead: std::time::Duration) -> bool {
        t > lead_bound(wall, max_lead)
    }

    pub(super) fn is_due(&self, due: &Due) -> bool {
        due.event <= self.event || due.wall <= self.wall
    }

    pub(super) fn due_after(&self, d: chrono::Duration) -> Due {
        Due {
            event: plus(self.event, d),
            wall: plus(self.wall, d),
        }
    }
}

/// `wall + max_lead`, saturating at the end of time.
fn lead_bound(wall: DateTime<Utc>, max_lead: std::time::Duration) -> DateTime<Utc> {
    wall.checked_add_signed(to_chrono(max_lead))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether the rule's timer in the group is due at `clock`; a due timer is cleared (the
/// caller judges the rule as its timer firing).
pub(super) fn take_due(rule: &Rule, state: &mut GroupState, clock: Clock) -> bool {
    match state.rules.get_mut(&rule.name) {
        Some(s) if s.due.is_some_and(|d| clock.is_due(&d)) => {
            s.due = None;
            true
        }
        _ => false,
    }
}
