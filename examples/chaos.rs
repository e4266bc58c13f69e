//! `make chaos`: the chaos harness over the release binary (see tests/api/helpers/chaos/ and
//! docs/reliability.md).
//!
//! ```sh
//! cargo build --release --bin runwatch --example chaos
//! target/release/examples/chaos --seed 7 --events 100000
//! ```
//!
//! Prints what it does on stderr and, last, one line:
//! `chaos: events=N expected_triggers=E published=P lost=L duplicated=D invented=I dead_lettered=X poison=Y`;
//! exits 1 unless L=0, D=0, I=0 and X=Y (2 when the harness itself failed).

#[path = "../tests/api/helpers/chaos/mod.rs"]
mod chaos;
#[path = "../tests/api/helpers/procs.rs"]
mod procs;
#[path = "../tests/api/helpers/trace.rs"]
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Chaos harness: real nats-server, Postgres and runwatch worker processes, injected
/// faults, every trigger and dead letter checked against a seeded trace.
#[derive(Debug, Parser)]
struct Args {
    /// Seed of the trace and of the fault choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages to publish (valid events, duplicates and poison together).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Number of groups (default: as many as --events needs, about 1 per 9 events).
    #[arg(long)]
    groups: Option<usize>,
    /// Share of duplicated events.
    #[arg(long, default_value_t = 0.05)]
    duplicates: f64,
    /// Share of events swapped with their neighbour.
    #[arg(long, default_value_t = 0.10)]
    reorder: f64,
    /// Share of poison messages (not JSON, wrong types, oversize).
    #[arg(long, default_value_t = 0.01)]
    poison: f64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// SIGKILL a random worker this often, then start it again (0s: never).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    kill_every: Duration,
    /// Graceful (SIGTERM) nats-server restarts.
    #[arg(long, default_value_t = 1)]
    nats_restarts: u32,
    /// Postgres restarts in immediate mode.
    #[arg(long, default_value_t = 1)]
    pg_restarts: u32,
    /// Rounds of pg_terminate_backend on the workers' connections.
    #[arg(long, default_value_t = 3)]
    backend_kills: u32,
    /// The runwatch binary (default: target/release/runwatch next to this example).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// How long to wait for quiescence after the faults.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    quiet_timeout: Duration,
    /// RUST_LOG of the workers.
    #[arg(long, default_value = "warn")]
    worker_log: String,
    /// Keep the run directory (worker logs, nats and Postgres stores and logs).
    #[arg(long)]
    keep: bool,
}

fn default_bin() -> PathBuf {
    // target/<profile>/examples/chaos -> target/<profile>/runwatch
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("runwatch")))
        .unwrap_or_else(|| PathBuf::from("target/release/runwatch"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let a = Args::parse();
    let bin = a.bin.unwrap_or_else(default_bin);
    if !bin.is_file() {
        eprintln!(
            "chaos: no runwatch binary at {} (build it, or pass --bin)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let mut o = chaos::Options::new(bin);
    o.seed = a.seed;
    o.events = a.events;
    o.groups = a.groups;
    o.duplicates = a.duplicates;
    o.reorder = a.reorder;
    o.poison = a.poison;
    o.workers = a.workers.max(1);
    o.kill_every = a.kill_every;
    o.nats_restarts = a.nats_restarts;
    o.pg_restarts = a.pg_restarts;
    o.backend_kills = a.backend_kills;
    o.quiet_timeout = a.quiet_timeout;
    o.worker_log = a.worker_log;
    o.keep = a.keep;
    match chaos::run(&o).await {
        Ok(report) => {
            for n in &report.notes {
                eprintln!("chaos: {n}");
            }
            println!("{}", report.line());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("chaos: harness failed: {e}");
            ExitCode::from(2)
        }
    }
}
