//! Re-applying history: `runwatch replay` reads the events stream with an ephemeral
//! consumer, from a sequence or a time up to the stream's last sequence at its start.
//!
//! - **Live** ([`replay`]): the events go through the worker's store code in batches of
//!   `consumer.batch_size` ([`Store::record`]), due timers fire by the replay's event clock,
//!   and what is decided is published and marked sent ([`crate::outbox_publisher`]), exactly as the
//!   worker does. Trigger ids are deterministic, so a replay into the same database decides
//!   nothing new, and a replay into an empty database decides the same ids.
//! - **Dry run** ([`dry_run`]): "what would these rules have fired over these events?" The
//!   events go through the engine from an empty state, in memory, as `runwatch simulate`
//!   does (event time, every pending timer fired at the end), with the configured rules or
//!   others. It never opens the database, so it cannot lock or change a live row, and
//!   prints the triggers that would fire. Their ids are the ids the live pipeline gives the
//!   same decisions; `repository.internal_id` is the simulation's own numbering.
//!
//! Messages that are not valid events are counted and skipped: the worker dead-lettered them.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bus::{Bus, BusError, EventMessage, EventsFrom, StreamKind};
use crate::config::Config;
use crate::engine::{Clock, Engine};
use crate::outbox_publisher;
use crate::pull_request::{Input, decode_input};
use crate::simulate::Simulation;
use crate::store::{EventOutcome, Store, StoreError};
use crate::trigger::Trigger;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
    #[error(
        "no message of the events stream within {waited:?} (read up to sequence {read}, expected {last})"
    )]
    Stalled {
        waited: Duration,
        read: u64,
        last: u64,
    },
    #[error("encoding a trigger: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    pub from: EventsFrom,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Messages read from the events stream.
    pub read: u64,
    /// Valid events applied (live) or evaluated (dry run).
    pub applied: u64,
    /// Messages that are not valid events.
    pub invalid: u64,
    /// Valid events the store refused (too many runs in a group, a corrupt row).
    pub rejected: u64,
    /// Triggers decided (live) or that would fire (dry run).
    pub triggers: Vec<Trigger>,
    /// Triggers published and acknowledged (live).
    pub published: u64,
    /// Triggers whose publish failed: the worker's outbox relay publishes them.
    pub publish_failed: u64,
    /// First and last stream sequence read.
    pub sequences: Option<(u64, u64)>,
}

/// The events stream from `from` up to its last sequence when the replay started.
struct History {
    messages: Box<dyn Stream<Item = Result<EventMessage, BusError>> + Send + Unpin>,
    last: u64,
    read_up_to: u64,
    waited: Duration,
    bar: ProgressBar,
}

impl History {
    async fn open(
        config: &Config,
        bus: &Bus,
        options: ReplayOptions,
    ) -> Result<Option<History>, ReplayError> {
        let state = bus.stream_state(StreamKind::Events).await?;
        let last = state.last_sequence;
        if state.messages == 0 || matches!(options.from, EventsFrom::Sequence(s) if s > last) {
            return Ok(None);
        }
        let (pending, messages) = bus.event_messages_from(options.from).await?;
        if pending == 0 {
            return Ok(None);
        }
        let bar = if options.progress {
            ProgressBar::with_draw_target(Some(pending), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) =
            ProgressStyle::with_template("replay {bar:40} {pos}/{len} events, {per_sec}, eta {eta}")
        {
            bar.set_style(style);
        }
        Ok(Some(History {
            messages: Box::new(messages),
            last,
            read_up_to: 0,
            waited: config.nats.request_timeout.max(Duration::from_secs(5)),
            bar,
        }))
    }

    /// The next message up to the last sequence, or None at the end. The end comes early
    /// when nothing was pending after a message, or the stream holds nothing more up to the
    /// last sequence: deleted messages (the newest included) are never waited for.
    async fn next(
        &mut self,
        bus: &Bus,
        report: &mut ReplayReport,
    ) -> Result<Option<EventMessage>, ReplayError> {
        if self.read_up_to >= self.last {
            return Ok(None);
        }
        let quiet_since = tokio::time::Instant::now();
        let msg = loop {
            match tokio::time::timeout(self.waited.min(QUIET_CHECK), self.messages.next()).await {
                Ok(Some(m)) => break m?,
                Ok(None) => return Err(self.stalled()),
                Err(_) => {
                    let left = bus
                        .next_stored_sequence(StreamKind::Events, self.read_up_to.saturating_add(1))
                        .await?;
                    if left.is_none_or(|seq| seq > self.last) {
                        self.read_up_to = self.last;
                        return Ok(None);
                    }
                    if quiet_since.elapsed() >= self.waited {
                        return Err(self.stalled());
                    }
                }
            }
        };
        if msg.sequence > self.last {
            self.read_up_to = self.last;
            return Ok(None);
        }
        self.read_up_to = if msg.pending == 0 {
            self.last
        } else {
            msg.sequence
        };
        report.read += 1;
        report.sequences = Some(match report.sequences {
            Some((first, _)) => (first, msg.sequence),
            None => (msg.sequence, msg.sequence),
        });
        self.bar.inc(1);
        Ok(Some(msg))
    }

    fn stalled(&self) -> ReplayError {
        ReplayError::Stalled {
            waited: self.waited,
            read: self.read_up_to,
            last: self.last,
        }
    }
}

/// How long a replay waits for the next message before it asks the stream whether anything
/// is left to read.
const QUIET_CHECK: Duration = Duration::from_millis(500);

/// Replays into the database behind `store`, publishing what is decided.
pub async fn replay(
    config: &Config,
    store: &Store,
    bus: &Bus,
    options: ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let Some(mut history) = History::open(config, bus, options).await? else {
        return Ok(report);
    };
    let batch_size = config.consumer.batch_size.max(1);
    let mut clock = DateTime::<Utc>::MIN_UTC;
    let mut batch: Vec<Input> = Vec::with_capacity(batch_size);
    while let Some(msg) = history.next(bus, &mut report).await? {
        match decode_input(&msg.payload, &config.limits) {
            Ok(event) => batch.push(event),
            Err(_) => report.invalid += 1,
        }
        if batch.len() >= batch_size {
            clock = apply(config, store, bus, &mut batch, clock, &mut report).await?;
        }
    }
    apply(config, store, bus, &mut batch, clock, &mut report).await?;
    history.bar.finish_and_clear();
    Ok(report)
}

/// Records one batch, fires the timers due by then, publishes. Returns the event clock.
async fn apply(
    config: &Config,
    store: &Store,
    bus: &Bus,
    batch: &mut Vec<Input>,
    clock: DateTime<Utc>,
    report: &mut ReplayReport,
) -> Result<DateTime<Utc>, ReplayError> {
    if batch.is_empty() {
        return Ok(clock);
    }
    let outcome = store
        .record_inputs(
            batch,
            Clock {
                event: clock,
                wall: Utc::now(),
            },
        )
        .await?;
    batch.clear();
    for o in &outcome.outcomes {
        match o {
            EventOutcome::Applied => report.applied += 1,
            EventOutcome::Rejected(_) => report.rejected += 1,
        }
    }
    let batch_limit = config.timers.batch;
    let clock = outcome.clock.event;
    let mut decided = outcome.triggers;
    decided.extend(
        outbox_publisher::sweep_timers(batch_limit, || store.fire_due_timers(clock, batch_limit))
            .await?,
    );
    let delivered = outbox_publisher::publish(store, bus, &decided).await;
    report.published += delivered.sent.len() as u64;
    report.publish_failed += delivered.failed.len() as u64;
    report.triggers.extend(decided);
    Ok(clock)
}

/// Evaluates the history with `engine` from an empty state, in memory; prints each trigger
/// that would fire to `out` as a JSON line. Touches no database.
pub async fn dry_run(
    config: &Config,
    engine: Engine,
    bus: &Bus,
    options: ReplayOptions,
    out: &mut dyn Write,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let mut sim = Simulation::new(engine, config.limits);
    if let Some(mut history) = History::open(config, bus, options).await? {
        while let Some(msg) = history.next(bus, &mut report).await? {
            match sim.feed_line(&msg.payload) {
                Ok(fired) => {
                    report.applied += 1;
                    emit(out, &fired)?;
                    report.triggers.extend(fired);
                }
                Err(_) if decode_input(&msg.payload, &config.limits).is_err() => {
                    report.invalid += 1
                }
                Err(_) => report.rejected += 1,
            }
        }
        history.bar.finish_and_clear();
    }
    let last = sim.fire_timers_until(None);
    emit(out, &last)?;
    report.triggers.extend(last);
    Ok(report)
}

fn emit(out: &mut dyn Write, triggers: &[Trigger]) -> Result<(), ReplayError> {
    for t in triggers {
        serde_json::to_writer(&mut *out, t)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Parses `--since`: an RFC 3339 time (`2026-11-25T08:00:00Z`) or a duration meaning that
/// long ago (`2h`, `3d`). Either must be a time NATS JetStream holds
/// ([`crate::bus::check_nats_time`]: 1677-09-21 to 2262-04-11).
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else {
        match humantime::parse_duration(s) {
            Ok(d) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .ok_or_else(|| format!("{s:?} is too far back"))?,
            Err(_) => {
                return Err(format!(
                    "{s:?} is neither an RFC 3339 time (2026-11-25T08:00:00Z) nor a duration (2h)"
                ));
            }
        }
    };
    crate::bus::check_nats_time(t)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_nats_holds() {
        assert!(parse_since("2026-11-25T08:00:00Z").is_ok());
        assert!(parse_since("2h").is_ok());
        assert!(parse_since("2262-04-11T23:47:16Z").is_ok());
        let e = parse_since("9999-01-01T00:00:00Z").unwrap_err();
        assert!(e.contains("the latest time NATS JetStream holds"), "{e}");
        let e = parse_since("1000years").unwrap_err();
        assert!(e.contains("the earliest time NATS JetStream holds"), "{e}");
        assert!(parse_since("0000-01-01T00:00:00Z").is_err());
        assert!(parse_since("yesterday").is_err());
    }
}
