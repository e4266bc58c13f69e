//! The chaos harness: real processes, injected faults, every outcome checked.
//!
//! It starts its own nats-server and Postgres (temp dirs, free ports), `workers` processes
//! of the real `runwatch` binary, publishes a seeded trace (every run completes, no
//! re-runs; duplicates, reordered neighbours and poison) and, while the pipeline works,
//! SIGKILLs a random worker every `kill_every` (and starts it again), restarts nats-server,
//! restarts Postgres in immediate mode and terminates the workers' backends. Then it waits
//! for quiescence and checks the triggers and dead-letter streams against the trace.
//!
//! - [`run`] (run.rs): the sequence: processes, publish, faults, quiet, verdict, stop;
//! - `publish.rs`: publishing the trace through the restarts;
//! - `faults.rs`: the fault schedule and the processes it acts on;
//! - `quiet.rs`: waiting until nothing is pending, unsent or due;
//! - [`check`] (check.rs): the triggers against the trace's truth.
//!
//! Used by `examples/chaos.rs` (`make chaos`) and `tests/api/chaos_short.rs`; both declare
//! `procs` (tests/api/helpers/procs.rs) and `trace` (tests/api/helpers/trace.rs) beside it.
#![allow(dead_code)]

mod check;
mod faults;
mod publish;
mod quiet;
mod run;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{procs, trace};
pub use check::check;
pub use run::run;
pub use trace::Trace;
use trace::{Arrival, Shape};

/// A boxed error for the harness.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What to run and which faults to inject.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed of the trace and of the fault choices.
    pub seed: u64,
    /// Events to publish (valid events, duplicates and poison together).
    pub events: usize,
    /// Number of groups; `None`: as many as `events` needs.
    pub groups: Option<usize>,
    /// Share of duplicated events (a later redelivery with the same event id).
    pub duplicates: f64,
    /// Share of events swapped with their neighbour.
    pub reorder: f64,
    /// Share of poison messages (not JSON, wrong types, oversize).
    pub poison: f64,
    /// Worker processes.
    pub workers: usize,
    /// SIGKILL a random worker this often (zero: never).
    pub kill_every: Duration,
    /// Graceful nats-server restarts.
    pub nats_restarts: u32,
    /// Postgres restarts in immediate mode.
    pub pg_restarts: u32,
    /// Rounds of `pg_terminate_backend` on the workers' connections.
    pub backend_kills: u32,
    /// The `runwatch` binary.
    pub bin: PathBuf,
    /// How long to wait for quiescence after the faults.
    pub quiet_timeout: Duration,
    /// `RUST_LOG` of the workers (their stderr goes to `worker-N.log` in the run dir).
    pub worker_log: String,
    /// Keep the run directory (logs, stores) instead of deleting it.
    pub keep: bool,
}

impl Options {
    /// The defaults of `make chaos` with the given binary.
    pub fn new(bin: PathBuf) -> Options {
        Options {
            seed: 1,
            events: 100_000,
            groups: None,
            duplicates: 0.05,
            reorder: 0.10,
            poison: 0.01,
            workers: 3,
            kill_every: Duration::from_secs(2),
            nats_restarts: 1,
            pg_restarts: 1,
            backend_kills: 3,
            bin,
            quiet_timeout: Duration::from_secs(900),
            worker_log: "warn".into(),
            keep: false,
        }
    }

    /// The trace: groups of 1..=6 runs (queued, half of them in progress, completed), 90%
    /// with a pull request, 30% with one or two failing runs of varied conclusions, in
    /// event-time order with groups interleaved; then duplicates (a copy arriving up to
    /// 300 s of trace time later), poison at random places, and neighbours swapped.
    pub fn shape(&self) -> Shape {
        Shape {
            seed: self.seed,
            groups: self.groups,
            events: self.events,
            runs: 1..=6,
            fail_share: 0.3,
            max_failing_runs: 2,
            varied_conclusions: true,
            pr_share: 0.9,
            in_progress_share: 0.5,
            repos: 200,
            duplicates: self.duplicates,
            poison: self.poison,
            swaps: self.reorder,
            arrival: Arrival::Timeline,
        }
    }
}

/// The trace of a run with these options.
pub fn generate(o: &Options) -> Trace {
    trace::generate(&o.shape())
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub events: usize,
    pub expected: usize,
    pub published: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub invented: usize,
    pub dead_lettered: usize,
    pub poison: usize,
    /// Human-readable facts and problems (printed before the last line).
    pub notes: Vec<String>,
}

impl Report {
    /// The last line, in the exact format of the issue.
    pub fn line(&self) -> String {
        format!(
            "chaos: events={} expected_triggers={} published={} lost={} duplicated={} invented={} dead_lettered={} poison={}",
            self.events,
            self.expected,
            self.published,
            self.lost,
            self.duplicated,
            self.invented,
            self.dead_lettered,
            self.poison
        )
    }

    /// Nothing lost, duplicated or invented, and exactly the poison dead-lettered.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.invented == 0
            && self.dead_lettered == self.poison
    }
}

/// A line on stderr with the time since the start.
fn log(started: Instant, msg: &str) {
    eprintln!("[{:7.1}s] {msg}", started.elapsed().as_secs_f64());
}
