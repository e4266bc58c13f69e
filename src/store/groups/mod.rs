//! Recording events (the seed's `store_workflow_information`) and firing due timers: one
//! transaction each, under the groups' row locks.
//!
//! - [`record`]: the record transaction (which groups an input joins is the engine's
//!   [`crate::engine::routing`]);
//! - [`timers`]: the timer sweep;
//! - [`rows`]: the group rows (lock, decode, write);
//! - [`ledger`]: the streaks, cooldowns and flips the decisions share;
//! - [`decisions`]: the decided triggers, written to the outbox.

mod decisions;
mod ledger;
mod record;
mod rows;
mod timers;

use crate::engine::Clock;
use crate::event::Rejection;
use crate::trigger::Trigger;

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
