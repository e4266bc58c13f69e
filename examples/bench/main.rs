//! `make bench`: runwatch's throughput, latency and memory against the configured NATS and
//! Postgres, next to Postgres' own ceiling (`pgbench -N -c 8 -T 10`) and to the naive
//! one-transaction-per-event mode (`consumer.batch_size = 1`).
//!
//! ```sh
//! cargo build --release --bin runwatch --example bench
//! target/release/examples/bench [--events N --groups G ...]   # --help for the options
//! ```
//!
//! Every phase gets its own database (`rwbench_*`) and its own stream, subject and consumer
//! names, and drops them at the end. A phase: `runwatch migrate`, optionally pre-fill
//! groups, start the worker process(es) of the release binary (configured by environment
//! variables), wait for the durable consumer, subscribe to the triggers subject, publish
//! the trace (pipelined PubAcks; paced when asked), and poll the consumer until every
//! event is acknowledged.
//!
//! * events/s: trace length / (first publish → consumer has nothing pending or unacked).
//!   The worker runs while the trace is published, so at full speed the publisher shares
//!   the two cores with it, as real producers would.
//! * latency: for each failing group, from the moment the harness hands the group's last
//!   event (the one that completes it, so the one that makes it fire) to the NATS client,
//!   to the moment the harness receives the trigger on its core-NATS subscription to the
//!   triggers subject; the server delivers it there when the worker's publish reaches the
//!   stream, just before the PubAck goes back to the worker.
//! * RSS: the worker's peak resident set (`VmHWM` in /proc/<pid>/status) after the run.
//!
//! The tracing phase (`tracing_cost`) works one trace off with span export off and on,
//! alternately, and prints their ratios; `--tracing` runs every phase with export on.
//!
//! Modules: `phase` (one measured run), `names` (its database and streams), `workers` (the
//! worker processes), `database` (pre-fill, EXPLAIN), `references` (pgbench), `report`
//! (figures and lines), `otlp_sink`, `tracing_cost`; the trace comes from tests/api/helpers/trace.rs.

mod database;
mod drain;
mod names;
mod otlp_sink;
mod phase;
mod references;
mod report;
#[path = "../../tests/api/helpers/services.rs"]
mod services;
#[path = "../../tests/api/helpers/trace.rs"]
mod trace;
mod tracing_cost;
mod workers;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use clap::Parser;

use phase::{Bench, Phase};
use report::{PhaseResult, describe, load};
use trace::{Arrival, Shape, Trace};

#[derive(Parser, Debug, Clone)]
#[command(about = "runwatch benchmark (see examples/bench/main.rs)")]
pub struct Opts {
    /// Events in the main trace.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Groups (pull-request commits) in the main trace; events per group = events / groups.
    #[arg(long, default_value_t = 20_000)]
    groups: usize,
    /// Share of groups with a failing run (they must fire).
    #[arg(long, default_value_t = 0.10)]
    fail_share: f64,
    /// Events of the naive (`batch_size = 1`) run; groups scale with it. 0 skips it.
    #[arg(long, default_value_t = 5_000)]
    naive_events: usize,
    /// Events of the half-load (paced) run; groups scale with it (200,000 events: 2,000
    /// triggers). 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    half_load_events: usize,
    /// Events of the low-load run, paced at --low-load-rate; 0 skips it.
    #[arg(long, default_value_t = 6_000)]
    low_load_events: usize,
    /// Events per second of the low-load run.
    #[arg(long, default_value_t = 200.0)]
    low_load_rate: f64,
    /// Share of failing groups in the low-load trace (more triggers, so more latency
    /// samples, from a short run).
    #[arg(long, default_value_t = 0.5)]
    low_load_fail_share: f64,
    /// Skip the drain phase (the main trace published before the worker starts, against a
    /// raw JetStream consumer on the same stream).
    #[arg(long)]
    skip_drain: bool,
    /// Workers of the scale-out run (same trace as the main one). 0 skips it.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Groups (with completed runs) written into the database before the main run.
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// Groups pre-filled (with the mix of a live table) for the size phase: the half-load
    /// trace again, at the same pace, on that database (`prefill_ratio`,
    /// `prefill_p99_ratio`, `bytes_per_group`). 0 skips it.
    #[arg(long, default_value_t = 10_000_000)]
    size_prefill: u64,
    /// Skip the retention run of the size phase: the half-load trace again on the pre-filled
    /// database while `runwatch purge --older-than 30d` deletes its oldest day of groups
    /// (`retention_p99_ratio`).
    #[arg(long)]
    skip_retention: bool,
    /// With --prefill: also run the main trace on an empty database and compare.
    #[arg(long)]
    compare_empty: bool,
    /// `consumer.batch_size` of the main, half-load and replica runs (default: the
    /// configured default).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Skip `pgbench` (the line then shows pgbench_tps=0).
    #[arg(long)]
    skip_pgbench: bool,
    /// Print EXPLAIN ANALYZE of the hot-path statements on the main run's database.
    #[arg(long)]
    explain: bool,
    /// Extra `RUNWATCH_…=value` settings for every worker (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// The runwatch binary (default: next to this example, `target/release/runwatch`).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Serve the worker metrics of the main and half-load runs on this port and print their
    /// timing summaries.
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Seed of the traces.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Tracing on: every worker exports its spans over OTLP/HTTP (to --otlp-endpoint, or
    /// to a sink this harness serves on 127.0.0.1 that answers and counts). Compare a run
    /// with and without it for the cost of tracing.
    #[arg(long)]
    tracing: bool,
    /// A real collector's OTLP/HTTP base URL instead of the sink (for --tracing and the
    /// tracing phase).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Events of the tracing phase: this trace worked off with span export off and on,
    /// alternately, at full speed and at half load, for each of --tracing-ratios. 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    tracing_events: usize,
    /// Sample ratios (`telemetry.trace_sample_ratio`) of the tracing phase.
    #[arg(long, value_delimiter = ',', default_value = "1,0.1")]
    tracing_ratios: Vec<f64>,
    /// Events of the tracing phase's instruction count: a worker under
    /// `valgrind --tool=callgrind` works them off with export off, then on at each ratio
    /// (load-independent; about a minute per run). 0, or no valgrind, skips it.
    #[arg(long, default_value_t = 10_000)]
    tracing_callgrind_events: usize,
}

/// Groups of `events / groups / 2` runs each: every run is queued, then completes (all
/// queued events of a group come before its completions, so the group fires on its last
/// event); a `fail_share` of the groups has one failing run. Groups are interleaved in
/// windows of 1,000, so one group's events are spread over the trace and a batch touches
/// many groups, as with real webhooks.
fn bench_trace(seed: u64, events: usize, groups: usize, fail_share: f64) -> Trace {
    let groups = groups.max(1);
    let mut shape = Shape::groups(seed, groups, events / groups / 2, fail_share);
    shape.arrival = Arrival::Waves { window: 1000 };
    trace::generate(&shape)
}

/// The runwatch binary: `--bin`, or next to this example.
fn locate_bin(opts: &Opts) -> Result<PathBuf> {
    let bin = match &opts.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("runwatch"))
            .context("locating the runwatch binary")?,
    };
    if !bin.exists() {
        bail!("{bin:?} not found: `cargo build --release --bin runwatch` first, or pass --bin");
    }
    Ok(bin)
}

/// A phase with groups of the main trace's size, a trace of `events` with a
/// `fail_share` of failing groups, paced or not.
async fn scaled(
    bench: &Bench,
    (events, fail_share): (usize, f64),
    seed: u64,
    phase: &Phase<'_>,
) -> Result<PhaseResult> {
    let o = &bench.opts;
    let per_group = o.events as f64 / o.groups.max(1) as f64;
    let groups = ((events as f64 / per_group) as usize).max(1);
    let t = bench_trace(seed, events, groups, fail_share);
    bench.run_phase(phase, &t).await
}

/// A paced phase of `events` (none when 0): "half" or "low" load at `rate` events/s.
async fn paced(
    bench: &Bench,
    name: &str,
    rate: f64,
    (events, fail_share): (usize, f64),
    seed: u64,
) -> Result<Option<PhaseResult>> {
    if events == 0 {
        return Ok(None);
    }
    let phase = Phase {
        pace: Some(rate),
        ..Phase::new(name, bench.opts.batch_size)
    };
    let r = scaled(bench, (events, fail_share), seed, &phase).await?;
    describe(&format!("{name} load (paced at {rate:.0} events/s)"), &r);
    Ok(Some(r))
}

/// The low-load phase unless skipped.
async fn low_load(bench: &Bench) -> Result<Option<PhaseResult>> {
    let o = &bench.opts;
    let events = (o.low_load_events, o.low_load_fail_share);
    paced(bench, "low", o.low_load_rate, events, o.seed + 3).await
}

/// The half-load, naive and replica phases, each unless skipped; half load and naive.
async fn after_main(
    bench: &Bench,
    main: &PhaseResult,
    trace: &Trace,
) -> Result<(Option<PhaseResult>, Option<PhaseResult>)> {
    let o = &bench.opts;
    let events = (o.half_load_events, o.fail_share);
    let half = paced(bench, "half", main.events_per_s / 2.0, events, o.seed + 1).await?;
    let naive = if o.naive_events > 0 {
        let r = scaled(
            bench,
            (o.naive_events, o.fail_share),
            o.seed + 2,
            &Phase::new("naive", Some(1)),
        )
        .await?;
        describe("naive (batch_size = 1)", &r);
        Some(r)
    } else {
        None
    };
    if o.replicas > 0 {
        let phase = Phase {
            workers: o.replicas,
            ..Phase::new("replicas", o.batch_size)
        };
        let r = bench.run_phase(&phase, trace).await?;
        describe(&format!("{} workers", o.replicas), &r);
    }
    Ok((half, naive))
}

/// The half-load trace again, at the same pace, on a database pre-filled with
/// `--size-prefill` groups (none when that or the half-load phase is 0).
async fn size_phase(
    bench: &Bench,
    main: &PhaseResult,
) -> Result<(Option<PhaseResult>, Option<PhaseResult>)> {
    let o = &bench.opts;
    if o.size_prefill == 0 || o.half_load_events == 0 {
        return Ok((None, None));
    }
    let rate = main.events_per_s / 2.0;
    let phase = Phase {
        pace: Some(rate),
        prefill: o.size_prefill,
        ..Phase::new("size", o.batch_size)
    };
    let per_group = o.events as f64 / o.groups.max(1) as f64;
    let groups = ((o.half_load_events as f64 / per_group) as usize).max(1);
    let trace = bench_trace(o.seed + 1, o.half_load_events, groups, o.fail_share);
    let title = format!(
        "half load on {} pre-filled groups (paced at {rate:.0} events/s)",
        o.size_prefill
    );
    if o.skip_retention {
        let r = bench.run_phase(&phase, &trace).await?;
        describe(&title, &r);
        return Ok((Some(r), None));
    }
    // The pre-fill's groups were last written 0.5 to 30.5 days ago, a day's worth each:
    // the purge takes the oldest day.
    let retention = Phase {
        pace: Some(rate),
        during: Some(vec!["purge", "--older-than", "30d"]),
        ..Phase::new("retention", o.batch_size)
    };
    let again = bench_trace(o.seed + 8, o.half_load_events, groups, o.fail_share);
    let (r, p) = bench
        .run_phase_pair((&phase, &trace), (&retention, &again))
        .await?;
    describe(&title, &r);
    describe(
        "the same, again, while runwatch purge --older-than 30d runs",
        &p,
    );
    if let Some(d) = &p.during {
        println!(
            "retention: purge deleted {} groups in {:.1}s, beside the half-load run of {:.1}s",
            d.stdout, d.seconds, p.seconds
        );
    }
    Ok((Some(r), Some(p)))
}

/// The tracing phase (none when `--tracing-events` is 0): its trace at full speed and at
/// half the main run's rate, export off and on.
async fn tracing_phase(
    bench: &Bench,
    main: &PhaseResult,
    endpoint: &str,
) -> Result<(Vec<tracing_cost::TracingCost>, Vec<String>)> {
    let o = &bench.opts;
    if o.tracing_ratios.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let per_group = o.events as f64 / o.groups.max(1) as f64;
    let rate = main.events_per_s / 2.0;
    let costs = if o.tracing_events == 0 {
        Vec::new()
    } else {
        let groups = ((o.tracing_events as f64 / per_group) as usize).max(1);
        let full = bench_trace(o.seed + 5, o.tracing_events, groups, o.fail_share);
        let half = bench_trace(o.seed + 6, o.tracing_events, groups, o.fail_share);
        tracing_cost::compare(bench, endpoint, &o.tracing_ratios, (&full, &half, rate)).await?
    };
    let mut instructions = Vec::new();
    if o.tracing_callgrind_events > 0 {
        let valgrind = std::process::Command::new("valgrind")
            .arg("--version")
            .output();
        if valgrind.is_ok_and(|o| o.status.success()) {
            let groups = ((o.tracing_callgrind_events as f64 / per_group) as usize).max(1);
            let trace = bench_trace(o.seed + 7, o.tracing_callgrind_events, groups, o.fail_share);
            instructions =
                tracing_cost::instructions(bench, endpoint, &o.tracing_ratios, &trace).await?;
        } else {
            println!("tracing_instructions: skipped, valgrind not found");
        }
    }
    Ok((costs, instructions))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut opts = Opts::parse();
    let bin = locate_bin(&opts)?;
    let (otlp_url, sink) = match &opts.otlp_endpoint {
        Some(url) => (url.clone(), None),
        None => {
            let (url, counts) = otlp_sink::start().await?;
            (url, Some(counts))
        }
    };
    if opts.tracing {
        println!("bench: tracing on, spans exported to {otlp_url}");
        opts.set
            .push(format!("RUNWATCH_TELEMETRY__OTLP_ENDPOINT={otlp_url}"));
    } else {
        println!("bench: tracing off");
    }
    let client = async_nats::connect(services::nats_url()).await?;
    let js = jetstream::new(client.clone());
    let bench = Bench {
        opts: opts.clone(),
        bin,
        js,
        client,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("bench: load average {} at start; {cores} cores", load());
    let (pg_tps, pg_c1_tps) = if opts.skip_pgbench {
        (0.0, 0.0)
    } else {
        let tps = references::pgbench(&[8, 1]).await?;
        let (c8, c1) = (tps[0], tps[1]);
        println!("pgbench -N -c 8 -T 10: tps={c8:.0}");
        println!("pgbench -N -c 1 -T 10: tps={c1:.0}");
        (c8, c1)
    };
    let trace = bench_trace(opts.seed, opts.events, opts.groups, opts.fail_share);
    if opts.prefill > 0 && opts.compare_empty {
        let r = bench
            .run_phase(&Phase::new("empty", opts.batch_size), &trace)
            .await?;
        describe("main, empty database", &r);
    }
    let main_phase = Phase {
        prefill: opts.prefill,
        explain: opts.explain,
        ..Phase::new("main", opts.batch_size)
    };
    let main = bench.run_phase(&main_phase, &trace).await?;
    describe(&format!("main (1 worker, prefill {})", opts.prefill), &main);
    let (half, naive) = after_main(&bench, &main, &trace).await?;
    let (size, retention) = size_phase(&bench, &main).await?;
    let low = low_load(&bench).await?;
    let drain = if opts.skip_drain {
        None
    } else {
        let d = bench.run_drain(&trace).await?;
        println!(
            "drain (trace published before the worker started): raw_bus_per_s={:.0} drain_events_per_s={:.0} triggers={}/{}",
            d.raw_per_s, d.drain_per_s, d.triggers, d.expected
        );
        Some(d)
    };
    let (tracing, instructions) = tracing_phase(&bench, &main, &otlp_url).await?;
    println!("bench: load average {} at end", load());
    let figures = report::Figures {
        main: &main,
        half: half.as_ref(),
        low: low.as_ref(),
        naive: naive.as_ref(),
        drain: drain.as_ref(),
        size: size.as_ref(),
        retention: retention.as_ref(),
        pg_tps,
        pg_c1_tps,
    };
    println!("{}", report::summary(&figures));
    for t in &tracing {
        println!("{}", t.line());
    }
    for line in &instructions {
        println!("{line}");
    }
    if let Some(counts) = sink {
        println!("{}", counts.line());
    }
    Ok(())
}
