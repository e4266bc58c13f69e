//! What the worker's tasks share: the configuration, the store, the bus, the event clock
//! and the options of `runwatch run`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

use crate::bus::Bus;
use crate::config::Config;
use crate::store::Store;

/// Test-only faults, switched on by environment variables the binary reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Exit the process right after a decision that fired committed, before publishing
    /// (`RUNWATCH_CRASH_AFTER_COMMIT=1`).
    CrashAfterCommit,
    /// The consume task returns an error after its first batch (`RUNWATCH_FAULT=consume_exit`).
    ConsumeExit,
    /// The consume task panics after its first batch (`RUNWATCH_FAULT=consume_panic`).
    ConsumePanic,
}

/// Options of `runwatch run` that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Skip migrations (the database role then needs no DDL rights); the schema is checked
    /// instead, and a missing migration is an error naming it.
    pub no_migrate: bool,
    pub fault: Option<Fault>,
}

/// The event clock: the largest `run.updated_at` this process has applied, as bounded by
/// `limits.max_clock_skew` (microseconds). Written by `consume`, read by `timers`.
#[derive(Debug)]
pub(super) struct EventClock(AtomicI64);

impl EventClock {
    pub(super) fn new() -> EventClock {
        EventClock(AtomicI64::new(DateTime::<Utc>::MIN_UTC.timestamp_micros()))
    }

    pub(super) fn get(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0.load(Ordering::Relaxed))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub(super) fn advance(&self, t: DateTime<Utc>) {
        self.0.fetch_max(t.timestamp_micros(), Ordering::Relaxed);
    }
}

/// What every task shares.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) store: Store,
    pub(super) bus: Bus,
    pub(super) clock: EventClock,
    // Read only by the fault injection of the tests (`fault-injection` feature).
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(super) options: RunOptions,
}

/// A cheap handle on [`Shared`].
#[derive(Clone)]
pub(super) struct Ctx(pub(super) Arc<Shared>);

impl std::ops::Deref for Ctx {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
