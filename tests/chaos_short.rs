//! The short chaos run of `make test`: about 10,000 events through 3 worker processes of
//! the debug binary, with the same faults as `make chaos` (a worker SIGKILLed every 2 s, a
//! nats-server restart, a Postgres restart in immediate mode, killed backends), each on its
//! own nats-server and Postgres. Nothing may be lost, duplicated or invented, and exactly
//! the poison is dead-lettered.

#[path = "common/chaos.rs"]
mod chaos;
#[path = "common/procs.rs"]
mod procs;

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_chaos_run_loses_duplicates_and_invents_nothing() {
    let mut o = chaos::Options::new(PathBuf::from(env!("CARGO_BIN_EXE_runwatch")));
    o.seed = std::env::var("RUNWATCH_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(11);
    o.events = 10_000;
    o.quiet_timeout = Duration::from_secs(150);
    let started = Instant::now();
    let report = chaos::run(&o).await.expect("the harness ran");
    for n in &report.notes {
        eprintln!("chaos: {n}");
    }
    eprintln!("{}", report.line());
    eprintln!("short chaos run took {:?}", started.elapsed());
    // The faults happened and the check had something to check.
    assert!(report.expected > 100, "{}", report.line());
    assert!(report.poison > 50, "{}", report.line());
    assert!(report.notes.iter().any(|n| n.contains("nats-server restarted")), "{:?}", report.notes);
    assert!(report.notes.iter().any(|n| n.contains("postgres restarted")), "{:?}", report.notes);
    assert!(report.ok(), "{}", report.line());
}
