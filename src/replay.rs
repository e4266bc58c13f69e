//! Re-applying history: `runwatch replay` (events from the inbound stream through the
//! worker's store code) and the dead-letter commands `runwatch dead list` / `dead redrive`.
//!
//! A replay reads the events stream with an ephemeral consumer from a sequence or a time up
//! to the stream's last sequence at its start, decodes each message (messages that are not
//! valid events are counted and skipped: the worker dead-lettered them), records them in
//! batches of `consumer.batch_size` with [`Store::record`], fires due timers by the
//! replay's event clock with [`Store::fire_due_timers`], publishes the triggers decided and
//! marks them sent, exactly as the worker does. Trigger ids are deterministic, so a replay
//! into the same database decides nothing new, and a replay into an empty database decides
//! the same ids. `--dry-run` runs the same code in one transaction that is rolled back
//! ([`crate::store::DryRun`]) and prints the triggers that would fire.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bus::{Bus, BusError, DeadMessage, EventsFrom, StreamKind};
use crate::config::Config;
use crate::engine::Clock;
use crate::event::{Event, decode};
use crate::store::{DryRun, EventOutcome, Store, StoreError};
use crate::trigger::Trigger;

/// What can stop a replay or a dead-letter command.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
    /// The stream stopped delivering before the last sequence was reached.
    #[error(
        "no message of the events stream within {waited:?} (read up to sequence {read}, expected {last})"
    )]
    Stalled {
        /// How long it waited.
        waited: Duration,
        /// The last sequence read.
        read: u64,
        /// The last sequence at the start.
        last: u64,
    },
    /// `dead redrive --seq N` names no stored dead letter.
    #[error("no dead letter with sequence {0}")]
    NoSuchDeadLetter(u64),
    /// A trigger could not be encoded as JSON.
    #[error("encoding a trigger: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Options of `runwatch replay`.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Where to start.
    pub from: EventsFrom,
    /// Print what would fire; write and publish nothing.
    pub dry_run: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Messages read from the stream.
    pub read: u64,
    /// Events recorded (merged, possibly as no-ops).
    pub applied: u64,
    /// Messages that are not valid events (skipped).
    pub invalid: u64,
    /// Events the engine refused (e.g. a full group).
    pub rejected: u64,
    /// Triggers decided (new in the outbox), or that would fire in a dry run.
    pub triggers: Vec<Trigger>,
    /// Triggers published and marked sent (0 in a dry run).
    pub published: u64,
    /// Triggers whose publish failed (left in the outbox for the worker's relay).
    pub publish_failed: u64,
    /// The first and last stream sequence read.
    pub sequences: Option<(u64, u64)>,
}

enum Sink<'a> {
    Live,
    Dry(DryRun<'a>),
}

/// Replays events from the inbound stream (see the module documentation). In a dry run the
/// triggers that would fire are written to `out` as JSON lines.
pub async fn replay(
    config: &Config,
    store: &Store,
    bus: &Bus,
    options: ReplayOptions,
    out: &mut dyn Write,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let state = bus.stream_state(StreamKind::Events).await?;
    let last = state.last_sequence;
    if state.messages == 0 || matches!(options.from, EventsFrom::Sequence(s) if s > last) {
        return Ok(report);
    }
    let (pending, mut messages) = bus.event_messages_from(options.from).await?;
    if pending == 0 {
        return Ok(report);
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

    let mut sink = if options.dry_run {
        Sink::Dry(store.begin_dry_run().await?)
    } else {
        Sink::Live
    };
    let batch_size = config.consumer.batch_size;
    let waited = config.nats.request_timeout.max(Duration::from_secs(5));
    let mut clock_event: DateTime<Utc> = DateTime::<Utc>::MIN_UTC;
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    let mut read_up_to = 0u64;
    loop {
        let msg = match tokio::time::timeout(waited, messages.next()).await {
            Ok(Some(m)) => m?,
            Ok(None) | Err(_) => {
                return Err(ReplayError::Stalled {
                    waited,
                    read: read_up_to,
                    last,
                });
            }
        };
        if msg.sequence > last {
            break;
        }
        read_up_to = msg.sequence;
        report.read += 1;
        report.sequences = Some(match report.sequences {
            Some((first, _)) => (first, msg.sequence),
            None => (msg.sequence, msg.sequence),
        });
        bar.inc(1);
        match decode(&msg.payload, &config.limits) {
            Ok(event) => batch.push(event),
            Err(_) => report.invalid += 1,
        }
        if batch.len() >= batch_size {
            clock_event = flush(
                config,
                store,
                bus,
                &mut sink,
                &mut batch,
                clock_event,
                &mut report,
                out,
            )
            .await?;
        }
        if msg.sequence >= last {
            break;
        }
    }
    flush(
        config,
        store,
        bus,
        &mut sink,
        &mut batch,
        clock_event,
        &mut report,
        out,
    )
    .await?;
    bar.finish_and_clear();
    if let Sink::Dry(dry) = sink {
        dry.rollback().await?;
    }
    Ok(report)
}

/// Records a batch, fires timers due by the event clock, and publishes (or, in a dry run,
/// prints) what fired. Returns the event clock after the batch.
#[allow(clippy::too_many_arguments)]
async fn flush(
    config: &Config,
    store: &Store,
    bus: &Bus,
    sink: &mut Sink<'_>,
    batch: &mut Vec<Event>,
    clock_event: DateTime<Utc>,
    report: &mut ReplayReport,
    out: &mut dyn Write,
) -> Result<DateTime<Utc>, ReplayError> {
    if batch.is_empty() {
        return Ok(clock_event);
    }
    let clock = Clock {
        event: clock_event,
        wall: Utc::now(),
    };
    let outcome = match sink {
        Sink::Live => store.record(batch, clock).await?,
        Sink::Dry(dry) => dry.record(batch, clock).await?,
    };
    for o in &outcome.outcomes {
        match o {
            EventOutcome::Applied => report.applied += 1,
            EventOutcome::Rejected(_) => report.rejected += 1,
        }
    }
    batch.clear();
    let mut decided = outcome.triggers;
    let limit = config.timers.batch.max(1);
    loop {
        let fired = match sink {
            Sink::Live => store.fire_due_timers(outcome.clock.event, limit).await?,
            Sink::Dry(dry) => dry.fire_due_timers(outcome.clock.event, limit).await?,
        };
        let n = fired.len() as i64;
        decided.extend(fired);
        if n < limit {
            break;
        }
    }
    match sink {
        Sink::Dry(_) => {
            for t in &decided {
                serde_json::to_writer(&mut *out, t)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Sink::Live => {
            let results = bus.publish_triggers(&decided).await;
            let mut sent = Vec::new();
            for (t, r) in decided.iter().zip(results) {
                match r {
                    Ok(()) => sent.push(t.trigger_id),
                    Err(e) => {
                        report.publish_failed += 1;
                        tracing::warn!(trigger_id = %t.trigger_id, error = %e,
                            "trigger publish failed; the worker's outbox relay will publish it");
                        let _ = store
                            .record_publish_error(t.trigger_id, &e.to_string())
                            .await;
                    }
                }
            }
            store.mark_sent(&sent).await?;
            report.published += sent.len() as u64;
        }
    }
    report.triggers.extend(decided);
    Ok(outcome.clock.event)
}

/// Writes one line per stored dead letter: its sequence, reason, original subject and
/// sequence, deliveries, detail and a payload excerpt. Returns how many.
pub async fn dead_list(
    bus: &Bus,
    excerpt: usize,
    out: &mut dyn Write,
) -> Result<usize, ReplayError> {
    let dead = bus.read_all_dead().await?;
    for d in &dead {
        writeln!(out, "{}", dead_line(d, excerpt)?)?;
    }
    Ok(dead.len())
}

/// One `dead list` line.
pub fn dead_line(d: &DeadMessage, excerpt: usize) -> Result<String, ReplayError> {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut line = format!(
        "seq={} reason={} subject={} original_seq={} deliveries={} detail={} payload={}",
        d.sequence,
        d.reason,
        d.original_subject,
        opt(d.original_seq),
        opt(d.deliveries),
        serde_json::to_string(&d.detail)?,
        serde_json::to_string(&d.excerpt(excerpt))?,
    );
    if let Some(n) = d.truncated_from {
        line.push_str(&format!(" truncated_from={n}"));
    }
    Ok(line)
}

/// Which dead letters `dead redrive` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveSelection {
    /// The one with this dead-letter stream sequence.
    Sequence(u64),
    /// Every stored dead letter.
    All,
}

/// What `dead redrive` did.
#[derive(Debug, Clone, Default)]
pub struct RedriveReport {
    /// (dead-letter sequence, new events-stream sequence) of each redriven letter.
    pub redriven: Vec<(u64, u64)>,
    /// (dead-letter sequence, why) of each letter that was refused.
    pub refused: Vec<(u64, String)>,
}

/// Republishes the selected dead letters to their original subjects and deletes them from
/// the dead-letter stream (see [`Bus::redrive`]).
pub async fn redrive(bus: &Bus, selection: RedriveSelection) -> Result<RedriveReport, ReplayError> {
    let dead = bus.read_all_dead().await?;
    let chosen: Vec<&DeadMessage> = match selection {
        RedriveSelection::All => dead.iter().collect(),
        RedriveSelection::Sequence(seq) => {
            let found: Vec<&DeadMessage> = dead.iter().filter(|d| d.sequence == seq).collect();
            if found.is_empty() {
                return Err(ReplayError::NoSuchDeadLetter(seq));
            }
            found
        }
    };
    let mut report = RedriveReport::default();
    for d in chosen {
        match bus.redrive(d).await {
            Ok(ack) => report.redriven.push((d.sequence, ack.sequence)),
            Err(e @ BusError::Invalid { .. }) => report.refused.push((d.sequence, e.to_string())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Parses `--since`: an RFC 3339 time (`2026-11-25T08:00:00Z`) or a duration meaning that
/// long ago (`2h`, `3d`).
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| format!("{s:?} is too far back")),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-25T08:00:00Z) nor a duration (2h)"
        )),
    }
}
