//! One chaos run from start to verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use figment::Figment;
use figment::providers::{Format, Toml};
use runwatch::bus::Bus;
use runwatch::config::{Config, DEFAULT_TOML};

use super::faults::{Procs, Progress, inject_faults};
use super::procs::{NatsProc, PgProc, WorkerProc};
use super::publish::publish_all;
use super::quiet::wait_quiet;
use super::{Error, Options, Report, Trace, check, generate, log};

/// The environment of a worker process.
fn worker_env(nats_url: &str, db_url: &str, log: &str) -> Vec<(String, String)> {
    [
        ("NATS_URL", nats_url),
        ("DATABASE_URL", db_url),
        ("RUNWATCH_HTTP__LISTEN", "127.0.0.1:0"),
        ("RUNWATCH_OUTBOX__LEASE", "2s"),
        ("RUNWATCH_OUTBOX__RELAY_INTERVAL", "500ms"),
        ("RUNWATCH_CONSUMER__ACK_WAIT", "10s"),
        ("RUNWATCH_CONSUMER__HEARTBEAT", "2s"),
        ("RUNWATCH_PURGE__INTERVAL", "0s"),
        ("RUNWATCH_SHUTDOWN__TIMEOUT", "10s"),
        ("RUST_LOG", log),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// nats-server, Postgres and the workers in `dir`; the processes and the database URL.
fn start(o: &Options, dir: &Path, started: Instant) -> Result<(Procs, String), Error> {
    let nats = NatsProc::start(&dir.join("nats"))?;
    let sync = nats.sync_always;
    let msg = format!(
        "nats-server on {} (sync_interval always: {sync})",
        nats.url()
    );
    log(started, &msg);
    let pg = PgProc::start(&dir.join("pg"))?;
    log(started, &format!("postgres on port {}", pg.port));
    let db_url = pg.url("runwatch");
    let env = worker_env(&nats.url(), &db_url, &o.worker_log);
    let mut workers = Vec::new();
    for i in 0..o.workers {
        let log = dir.join(format!("worker-{i}.log"));
        workers.push(WorkerProc::start(&o.bin, env.clone(), &log)?);
    }
    Ok((Procs { nats, pg, workers }, db_url))
}

/// The harness's own connection to the bus, streams ensured.
async fn connect(nats_url: String, db_url: &str) -> Result<Bus, Error> {
    let mut config: Config = Figment::new().merge(Toml::string(DEFAULT_TOML)).extract()?;
    config.nats.url = nats_url;
    config.database.url = db_url.to_string();
    let bus = Bus::connect(&config).await?;
    bus.ensure_streams().await?;
    Ok(bus)
}

/// Reads the consumer's pending count into `progress` until it has been 0 three times
/// after the last publish (then the backlog is drained).
fn watch_pending(bus: Bus, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut zero = 0;
        loop {
            let read = tokio::time::timeout(Duration::from_secs(3), bus.consumer_pending()).await;
            if let Ok(Ok(p)) = read {
                progress.pending.store(p, Ordering::Relaxed);
                let done = progress.publish_done.load(Ordering::Relaxed);
                zero = if p == 0 && done { zero + 1 } else { 0 };
                if zero >= 3 {
                    progress.drained.store(true, Ordering::Relaxed);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// Runs the harness. An `Err` is a harness failure (a process would not start, a stream
/// could not be read), not a verdict on runwatch.
pub async fn run(o: &Options) -> Result<Report, Error> {
    let started = Instant::now();
    let trace = generate(o);
    log(started, &describe(&trace, o.seed));
    let dir = tempfile::Builder::new()
        .prefix("runwatch-chaos-")
        .tempdir()?;
    log(started, &format!("run directory {}", dir.path().display()));
    let (procs, db_url) = start(o, dir.path(), started)?;
    let bus = connect(procs.nats.url(), &db_url).await?;
    let procs = Arc::new(Mutex::new(procs));
    let progress = Arc::new(Progress::new(trace.messages.len()));
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let faults = {
        let (o, procs, progress, notes) =
            (o.clone(), procs.clone(), progress.clone(), notes.clone());
        std::thread::spawn(move || inject_faults(&o, &procs, &progress, &notes, started))
    };
    let watcher = watch_pending(bus.clone(), progress.clone());
    let stored_poison = publish_all(&bus, &trace.messages, &progress).await?;
    log(
        started,
        &format!("published {} messages", trace.messages.len()),
    );
    tokio::task::spawn_blocking(move || faults.join())
        .await?
        .map_err(|_| "the fault thread panicked")??;
    watcher.abort();
    log(started, "faults done; waiting for quiescence");
    wait_quiet(&bus, &procs, &db_url, o.quiet_timeout, started, &notes).await?;
    log(started, "quiet; reading the streams");
    let mut report = verdict(&trace, &bus, stored_poison).await?;
    stop(&procs, &mut report)?;
    let mut n = notes.lock().map_err(|_| "notes lock poisoned")?.clone();
    n.append(&mut report.notes);
    report.notes = n;
    report.events = trace.messages.len();
    let secs = started.elapsed().as_secs_f64();
    report.notes.push(format!("duration {secs:.1}s"));
    if o.keep {
        let kept = dir.keep();
        let msg = format!("run directory kept: {}", kept.display());
        report.notes.push(msg);
    }
    Ok(report)
}

fn describe(trace: &Trace, seed: u64) -> String {
    format!(
        "trace: {} messages ({} valid events in {} groups, {} duplicates, {} poison), seed {seed}",
        trace.messages.len(),
        trace.valid,
        trace.groups.len(),
        trace.duplicates,
        trace.poison,
    )
}

/// The triggers checked against the trace, and the dead letters counted by reason.
async fn verdict(trace: &Trace, bus: &Bus, stored_poison: usize) -> Result<Report, Error> {
    let triggers = bus.read_all_triggers().await?;
    let dead = bus.read_all_dead().await?;
    let mut report = check(trace, &triggers)?;
    report.poison = stored_poison;
    report.dead_lettered = dead.len();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in &dead {
        *reasons.entry(d.reason.clone()).or_default() += 1;
    }
    let distinct: BTreeSet<Option<u64>> = dead.iter().map(|d| d.original_seq).collect();
    report.notes.push(format!(
        "dead letters by reason: {reasons:?} ({} distinct inputs)",
        distinct.len()
    ));
    Ok(report)
}

/// Stops the workers gracefully (they must exit 0), then nats-server and Postgres.
fn stop(procs: &Mutex<Procs>, report: &mut Report) -> Result<(), Error> {
    let mut p = procs.lock().map_err(|_| "procs lock poisoned")?;
    let mut starts = Vec::new();
    for (i, w) in p.workers.iter_mut().enumerate() {
        starts.push(w.starts);
        match w.terminate(Duration::from_secs(20)) {
            Ok(Some(0)) => {}
            other => report
                .notes
                .push(format!("worker {i}: SIGTERM exit was {other:?}, not 0")),
        }
    }
    report.notes.push(format!("worker starts: {starts:?}"));
    let _ = p.nats.stop();
    let _ = p.pg.stop_fast();
    Ok(())
}
