//! The chaos harness: real processes, injected faults, every outcome checked.
//!
//! It starts its own nats-server and Postgres (temp dirs, free ports), `workers` processes
//! of the real `runwatch` binary, publishes a seeded trace (every run completes, no
//! re-runs; duplicates, reordered neighbours and poison) and, while the pipeline works,
//! SIGKILLs a random worker every `kill_every` (and starts it again), restarts nats-server,
//! restarts Postgres in immediate mode and terminates the workers' backends. Then it waits
//! for quiescence and checks the triggers and dead-letter streams against the trace.
//!
//! Used by `examples/chaos.rs` (`make chaos`) and `tests/chaos_short.rs`; both declare
//! `procs` (tests/common/procs.rs) as a sibling module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use figment::Figment;
use figment::providers::{Format, Toml};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use runwatch::bus::Bus;
use runwatch::config::{Config, DEFAULT_TOML};
use runwatch::event::Provider;
use serde_json::{Value, json};
use sqlx::Row;

use super::procs::{NatsProc, PgProc, WorkerProc};

/// A boxed error for the harness.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The conclusions of the default rule that count as failing.
const FAILING: [&str; 3] = ["failure", "timed_out", "startup_failure"];
const PASSING: [&str; 4] = ["success", "skipped", "cancelled", "neutral"];

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

// ---------------------------------------------------------------------------------------
// The trace

/// One run of a group as the generator made it.
#[derive(Debug, Clone)]
pub struct RunTruth {
    pub workflow: String,
    pub conclusion: &'static str,
}

/// One group as the generator made it.
#[derive(Debug, Clone, Default)]
pub struct GroupTruth {
    pub has_pr: bool,
    pub runs: HashMap<String, RunTruth>,
}

impl GroupTruth {
    /// A group with a pull request and a failing run must fire exactly once.
    pub fn must_fire(&self) -> bool {
        self.has_pr && self.runs.values().any(|r| FAILING.contains(&r.conclusion))
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: String,
    pub body: Vec<u8>,
    pub poison: bool,
}

/// A generated trace and its truth.
#[derive(Debug)]
pub struct Trace {
    pub messages: Vec<Msg>,
    /// By commit sha (unique per group).
    pub groups: HashMap<String, GroupTruth>,
    pub valid: usize,
    pub duplicates: usize,
    pub poison: usize,
}

fn timestamp(seconds: i64) -> String {
    // 2026-01-01T00:00:00Z plus `seconds`.
    let base = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    (base + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A seeded trace: groups of 1..=6 runs (queued, sometimes in_progress, completed), 90%
/// with a pull request, 30% with one or two failing runs; arrival in event-time order with
/// groups interleaved; then duplicates (a copy arriving up to 300 s of trace time later),
/// poison at random places, and neighbours swapped.
pub fn generate(o: &Options) -> Trace {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let dup_n = (o.events as f64 * o.duplicates) as usize;
    let poison_n = (o.events as f64 * o.poison) as usize;
    let valid_target = o.events.saturating_sub(dup_n + poison_n).max(1);
    let mut keyed: Vec<(f64, Msg)> = Vec::with_capacity(o.events + 64);
    let mut groups = HashMap::new();
    let mut n = 0u64;
    let mut g = 0usize;
    loop {
        let done = match o.groups {
            Some(max) => g >= max,
            None => keyed.len() >= valid_target,
        };
        if done {
            break;
        }
        let sha = format!("{:016x}{:024x}", o.seed, g);
        let repo = rng.random_range(0..200u32);
        let has_pr = rng.random_bool(0.9);
        let runs = rng.random_range(1..=6usize);
        let fails = rng.random_bool(0.3);
        let mut failing = BTreeSet::new();
        if fails {
            let k = rng.random_range(1..=runs.min(2));
            while failing.len() < k {
                failing.insert(rng.random_range(0..runs));
            }
        }
        let t0 = g as i64 * 3;
        let mut truth = GroupTruth {
            has_pr,
            runs: HashMap::new(),
        };
        for r in 0..runs {
            let run_id = format!("{g}-{r}");
            let workflow = format!("wf-{r}");
            let conclusion = if failing.contains(&r) {
                FAILING[rng.random_range(0..FAILING.len())]
            } else {
                PASSING[rng.random_range(0..PASSING.len())]
            };
            truth.runs.insert(
                run_id.clone(),
                RunTruth {
                    workflow: workflow.clone(),
                    conclusion,
                },
            );
            let queued = t0 + r as i64 * 5;
            let done_at = queued + 20 + rng.random_range(0..200i64);
            let mut phases = vec![("queued", queued)];
            if rng.random_bool(0.5) {
                phases.push(("in_progress", queued + 10));
            }
            phases.push(("completed", done_at));
            for (status, at) in phases {
                n += 1;
                let mut run = json!({
                    "id": run_id, "attempt": 1, "workflow": workflow, "status": status,
                    "url": format!("https://ci.example/runs/{run_id}"),
                    "updated_at": timestamp(at),
                });
                if status == "completed" {
                    run["conclusion"] = json!(conclusion);
                }
                let id = format!("ev-{}-{n}", o.seed);
                let e = json!({
                    "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                    "repository": {"owner": "chaos", "name": format!("repo-{repo}"), "id": format!("{}", 5000 + repo)},
                    "commit_sha": sha, "branch": format!("feature-{g}"),
                    "pr_number": if has_pr { json!(g + 1) } else { Value::Null },
                    "run": run, "metadata": {"seq": n},
                });
                let key = at as f64 + (n % 1000) as f64 * 1e-4;
                keyed.push((
                    key,
                    Msg {
                        id,
                        body: e.to_string().into_bytes(),
                        poison: false,
                    },
                ));
            }
        }
        groups.insert(sha, truth);
        g += 1;
    }
    let valid = keyed.len();
    let span = keyed
        .iter()
        .map(|(k, _)| *k)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (dup_n, poison_n) = match o.groups {
        None => (dup_n, poison_n),
        // A fixed number of groups: the shares apply to what they produced.
        Some(_) => (
            (valid as f64 * o.duplicates) as usize,
            (valid as f64 * o.poison) as usize,
        ),
    };
    for _ in 0..dup_n {
        let i = rng.random_range(0..valid);
        let (k, m) = (keyed[i].0, keyed[i].1.clone());
        keyed.push((k + rng.random_range(1.0..300.0), m));
    }
    for i in 0..poison_n {
        let id = format!("poison-{}-{i}", o.seed);
        let sha = format!("{:016x}{:024x}", o.seed ^ 0xdead, i);
        // The valid-looking poison fails with a pull request: if a worker accepted it, its
        // trigger would count as invented.
        let body = match i % 3 {
            0 => format!("chaos poison {i}: this is not JSON {{").into_bytes(),
            1 => json!({
                "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                "repository": {"owner": "chaos", "name": "poison", "id": "4999"},
                "commit_sha": sha, "branch": "poison", "pr_number": "seven",
                "run": {"id": format!("p{i}"), "attempt": "one", "workflow": "wf", "status": "completed",
                        "conclusion": "failure", "updated_at": timestamp(0)},
            })
            .to_string()
            .into_bytes(),
            _ => json!({
                "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                "repository": {"owner": "chaos", "name": "poison", "id": "4999"},
                "commit_sha": sha, "branch": "poison", "pr_number": 1,
                "run": {"id": format!("p{i}"), "attempt": 1, "workflow": "wf", "status": "completed",
                        "conclusion": "failure", "updated_at": timestamp(0)},
                "metadata": {"padding": "x".repeat(70 * 1024)},
            })
            .to_string()
            .into_bytes(),
        };
        let key = rng.random_range(0.0..span);
        keyed.push((
            key,
            Msg {
                id,
                body,
                poison: true,
            },
        ));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut messages: Vec<Msg> = keyed.into_iter().map(|(_, m)| m).collect();
    let mut i = 0;
    while i + 1 < messages.len() {
        if rng.random_bool((o.reorder / 2.0).clamp(0.0, 1.0)) {
            messages.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    Trace {
        messages,
        groups,
        valid,
        duplicates: dup_n,
        poison: poison_n,
    }
}

// ---------------------------------------------------------------------------------------
// The run

fn log(started: Instant, msg: &str) {
    eprintln!("[{:7.1}s] {msg}", started.elapsed().as_secs_f64());
}

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

/// The harness's view of the pipeline, for the fault thread.
struct Progress {
    total: u64,
    acked: AtomicU64,
    pending: AtomicU64,
    publish_done: AtomicBool,
    drained: AtomicBool,
}

struct Procs {
    nats: NatsProc,
    pg: PgProc,
    workers: Vec<WorkerProc>,
}

/// Runs the harness. An `Err` is a harness failure (a process would not start, a stream
/// could not be read), not a verdict on runwatch.
pub async fn run(o: &Options) -> Result<Report, Error> {
    let started = Instant::now();
    let trace = generate(o);
    log(
        started,
        &format!(
            "trace: {} messages ({} valid events in {} groups, {} duplicates, {} poison), seed {}",
            trace.messages.len(),
            trace.valid,
            trace.groups.len(),
            trace.duplicates,
            trace.poison,
            o.seed
        ),
    );
    let dir = tempfile::Builder::new()
        .prefix("runwatch-chaos-")
        .tempdir()?;
    let dir_path = dir.path().to_path_buf();
    log(started, &format!("run directory {}", dir_path.display()));
    let nats = NatsProc::start(&dir_path.join("nats"))?;
    log(
        started,
        &format!(
            "nats-server on {} (sync_interval always: {})",
            nats.url(),
            nats.sync_always
        ),
    );
    let pg = PgProc::start(&dir_path.join("pg"))?;
    log(started, &format!("postgres on port {}", pg.port));
    let nats_url = nats.url();
    let db_url = pg.url("runwatch");
    let env = worker_env(&nats_url, &db_url, &o.worker_log);
    let mut workers = Vec::new();
    for i in 0..o.workers {
        workers.push(WorkerProc::start(
            &o.bin,
            env.clone(),
            &dir_path.join(format!("worker-{i}.log")),
        )?);
    }
    let procs = Arc::new(Mutex::new(Procs { nats, pg, workers }));

    let mut config: Config = Figment::new().merge(Toml::string(DEFAULT_TOML)).extract()?;
    config.nats.url = nats_url.clone();
    config.database.url = db_url.clone();
    let bus = Bus::connect(&config).await?;
    bus.ensure_streams().await?;

    let progress = Arc::new(Progress {
        total: trace.messages.len() as u64,
        acked: AtomicU64::new(0),
        pending: AtomicU64::new(u64::MAX),
        publish_done: AtomicBool::new(false),
        drained: AtomicBool::new(false),
    });
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));

    // The fault thread.
    let faults = {
        let (o, procs, progress, notes) =
            (o.clone(), procs.clone(), progress.clone(), notes.clone());
        std::thread::spawn(move || inject_faults(&o, &procs, &progress, &notes, started))
    };
    // Consumer pending, for the fault schedule.
    let watcher = {
        let (bus, progress) = (bus.clone(), progress.clone());
        tokio::spawn(async move {
            let mut zero = 0;
            loop {
                if let Ok(Ok(p)) =
                    tokio::time::timeout(Duration::from_secs(3), bus.consumer_pending()).await
                {
                    progress.pending.store(p, Ordering::Relaxed);
                    zero = if p == 0 && progress.publish_done.load(Ordering::Relaxed) {
                        zero + 1
                    } else {
                        0
                    };
                    if zero >= 3 {
                        progress.drained.store(true, Ordering::Relaxed);
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // Publish.
    let subject = bus.event_subject(Provider::Github);
    let stored_poison = Arc::new(AtomicU64::new(0));
    let results: Vec<Result<(), Error>> = futures::stream::iter(trace.messages.iter())
        .map(|m| {
            let (bus, subject, progress, stored_poison) = (
                bus.clone(),
                subject.clone(),
                progress.clone(),
                stored_poison.clone(),
            );
            async move {
                let deadline = Instant::now() + Duration::from_secs(180);
                let mut delay = Duration::from_millis(50);
                loop {
                    let msg = PublishMessage::build()
                        .payload(bytes::Bytes::from(m.body.clone()))
                        .message_id(m.id.as_str());
                    let sent = bus.jetstream().send_publish(subject.clone(), msg).await;
                    let acked = match sent {
                        Ok(ack) => ack.await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match acked {
                        Ok(ack) => {
                            if m.poison && !ack.duplicate {
                                stored_poison.fetch_add(1, Ordering::Relaxed);
                            }
                            progress.acked.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        Err(e) if Instant::now() > deadline => {
                            return Err(format!("publish {} failed for 180 s: {e}", m.id).into());
                        }
                        Err(_) => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            }
        })
        .buffered(64)
        .collect()
        .await;
    progress.publish_done.store(true, Ordering::Relaxed);
    for r in results {
        r?;
    }
    log(
        started,
        &format!("published {} messages", trace.messages.len()),
    );

    let fault_result = tokio::task::spawn_blocking(move || faults.join())
        .await?
        .map_err(|_| "the fault thread panicked")?;
    fault_result?;
    watcher.abort();
    log(started, "faults done; waiting for quiescence");
    wait_quiet(&bus, &procs, &db_url, o.quiet_timeout, started, &notes).await?;
    log(started, "quiet; reading the streams");

    let triggers = bus.read_all_triggers().await?;
    let dead = bus.read_all_dead().await?;
    let mut report = check(&trace, &triggers)?;
    report.poison = stored_poison.load(Ordering::Relaxed) as usize;
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

    // Graceful stop of the workers: they must exit 0.
    {
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
    }
    let mut n = notes.lock().map_err(|_| "notes lock poisoned")?.clone();
    n.append(&mut report.notes);
    report.notes = n;
    report.events = trace.messages.len();
    report
        .notes
        .push(format!("duration {:.1}s", started.elapsed().as_secs_f64()));
    if o.keep {
        let kept = dir.keep();
        report
            .notes
            .push(format!("run directory kept: {}", kept.display()));
    }
    Ok(report)
}

/// The fault schedule, by progress = (acked publishes - consumer pending) / total: backend
/// kills spread over 10%..90%, nats restarts from 25%, Postgres restarts from 55%, and a
/// worker SIGKILL every `kill_every` until the backlog is drained. Faults not yet done when
/// the backlog drains are done then. Workers that exit by themselves are noted and started
/// again.
fn inject_faults(
    o: &Options,
    procs: &Mutex<Procs>,
    progress: &Progress,
    notes: &Mutex<Vec<String>>,
    started: Instant,
) -> Result<(), Error> {
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x5eed);
    let spread = |n: u32, from: f64, to: f64| -> Vec<f64> {
        (0..n)
            .map(|i| from + (to - from) * (f64::from(i) + 0.5) / f64::from(n.max(1)))
            .collect()
    };
    let mut backend_at = spread(o.backend_kills, 0.10, 0.90);
    let mut nats_at = spread(o.nats_restarts, 0.25, 0.45);
    let mut pg_at = spread(o.pg_restarts, 0.55, 0.75);
    let mut next_kill = Instant::now() + o.kill_every;
    let note = |s: String| {
        log(started, &s);
        if let Ok(mut n) = notes.lock() {
            n.push(s);
        }
    };
    let mut kills = 0u32;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let drained = progress.drained.load(Ordering::Relaxed);
        let acked = progress.acked.load(Ordering::Relaxed);
        let pending = progress.pending.load(Ordering::Relaxed);
        let frac = if drained {
            1.0
        } else if pending == u64::MAX {
            0.0
        } else {
            acked.saturating_sub(pending) as f64 / progress.total.max(1) as f64
        };
        let mut p = procs.lock().map_err(|_| "procs lock poisoned")?;
        for (i, w) in p.workers.iter_mut().enumerate() {
            if let Some(code) = w.exited() {
                note(format!(
                    "worker {i} exited by itself (code {code:?}); starting it again"
                ));
                w.start_again()?;
            }
        }
        if !o.kill_every.is_zero() && Instant::now() >= next_kill && !drained {
            let i = rng.random_range(0..p.workers.len());
            p.workers[i].kill();
            p.workers[i].start_again()?;
            kills += 1;
            next_kill = Instant::now() + o.kill_every;
        }
        if backend_at.first().is_some_and(|&at| frac >= at) {
            backend_at.remove(0);
            let killed = terminate_backends(&p.pg)?;
            note(format!(
                "progress {:.0}%: terminated {killed} runwatch backends",
                frac * 100.0
            ));
        }
        if nats_at.first().is_some_and(|&at| frac >= at) {
            nats_at.remove(0);
            let t = Instant::now();
            p.nats.stop()?;
            std::thread::sleep(Duration::from_millis(500));
            p.nats.start_again()?;
            note(format!(
                "progress {:.0}%: nats-server restarted (SIGTERM, down {:.1}s)",
                frac * 100.0,
                t.elapsed().as_secs_f64()
            ));
        }
        if pg_at.first().is_some_and(|&at| frac >= at) {
            pg_at.remove(0);
            let t = Instant::now();
            p.pg.stop_immediate()?;
            std::thread::sleep(Duration::from_millis(1000));
            p.pg.start_again()?;
            note(format!(
                "progress {:.0}%: postgres restarted (immediate, down {:.1}s)",
                frac * 100.0,
                t.elapsed().as_secs_f64()
            ));
        }
        if drained && backend_at.is_empty() && nats_at.is_empty() && pg_at.is_empty() {
            note(format!("{kills} worker SIGKILLs"));
            return Ok(());
        }
    }
}

/// `pg_terminate_backend` of every connection named `runwatch`; how many.
fn terminate_backends(pg: &PgProc) -> Result<usize, Error> {
    let out = std::process::Command::new(super::procs::pg_bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-d"])
        .arg(pg.url("postgres"))
        .args([
            "-c",
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'runwatch'",
        ])
        .output()?;
    if !out.status.success() {
        return Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// Waits until the consumer has nothing pending, the outbox nothing unsent and no timer is
/// set, three times in a row; workers that exit by themselves are started again.
async fn wait_quiet(
    bus: &Bus,
    procs: &Mutex<Procs>,
    db_url: &str,
    limit: Duration,
    started: Instant,
    notes: &Mutex<Vec<String>>,
) -> Result<(), Error> {
    let options: sqlx::postgres::PgConnectOptions = db_url.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name("chaos-harness"));
    let begun = Instant::now();
    let mut calm = 0;
    let mut last = String::new();
    loop {
        {
            let mut p = procs.lock().map_err(|_| "procs lock poisoned")?;
            for (i, w) in p.workers.iter_mut().enumerate() {
                if let Some(code) = w.exited() {
                    let s =
                        format!("worker {i} exited by itself (code {code:?}); starting it again");
                    log(started, &s);
                    if let Ok(mut n) = notes.lock() {
                        n.push(s);
                    }
                    w.start_again()?;
                }
            }
        }
        let pending = bus.consumer_pending().await.ok();
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent,
                    (SELECT count(*) FROM groups WHERE due_wall_at IS NOT NULL) AS timers",
        )
        .fetch_one(&pool)
        .await;
        let (unsent, timers) = match &row {
            Ok(r) => (
                Some(r.get::<i64, _>("unsent")),
                Some(r.get::<i64, _>("timers")),
            ),
            Err(_) => (None, None),
        };
        if pending == Some(0) && unsent == Some(0) && timers == Some(0) {
            calm += 1;
            if calm >= 3 {
                pool.close().await;
                return Ok(());
            }
        } else {
            calm = 0;
        }
        let now = format!("pending={pending:?} unsent={unsent:?} timers={timers:?}");
        if now != last && begun.elapsed().as_secs().is_multiple_of(10) {
            log(started, &format!("waiting: {now}"));
            last = now.clone();
        }
        if begun.elapsed() > limit {
            pool.close().await;
            return Err(format!("not quiet after {limit:?}: {now}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Compares the triggers stream with the trace.
pub fn check(trace: &Trace, triggers: &[(u64, bytes::Bytes)]) -> Result<Report, Error> {
    let mut report = Report::default();
    let expected: BTreeSet<&String> = trace
        .groups
        .iter()
        .filter(|(_, g)| g.must_fire())
        .map(|(sha, _)| sha)
        .collect();
    report.expected = expected.len();
    report.published = triggers.len();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut per_group: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut invented_examples = Vec::new();
    for (seq, body) in triggers {
        let t: Value = serde_json::from_slice(body)?;
        let id = t["trigger_id"].as_str().unwrap_or_default().to_string();
        let sha = t["commit_sha"].as_str().unwrap_or_default().to_string();
        let seen = ids.entry(id.clone()).or_default();
        *seen += 1;
        if *seen > 1 {
            continue;
        }
        per_group.entry(sha.clone()).or_default().insert(id.clone());
        if let Some(why) = invention(trace, &expected, &sha, &t) {
            report.invented += 1;
            if invented_examples.len() < 5 {
                invented_examples.push(format!("seq {seq}: {why}"));
            }
        }
    }
    let twice: usize = ids.values().map(|n| n - 1).sum();
    let extra: usize = per_group.values().map(|s| s.len().saturating_sub(1)).sum();
    report.duplicated = twice + extra;
    let lost: Vec<&&String> = expected
        .iter()
        .filter(|s| !per_group.contains_key(**s))
        .collect();
    report.lost = lost.len();
    if !lost.is_empty() {
        report.notes.push(format!(
            "lost, e.g.: {:?}",
            lost.iter().take(5).collect::<Vec<_>>()
        ));
    }
    if twice + extra > 0 {
        report.notes.push(format!(
            "duplicated: {twice} trigger ids seen more than once, {extra} extra triggers for a group"
        ));
    }
    for e in invented_examples {
        report.notes.push(format!("invented: {e}"));
    }
    Ok(report)
}

/// Why a trigger is invented, if it is: its group must not fire, or it names a run the
/// group does not have, with another conclusion, or lists a workflow that did not fail.
fn invention(
    trace: &Trace,
    expected: &BTreeSet<&String>,
    sha: &String,
    t: &Value,
) -> Option<String> {
    if !expected.contains(sha) {
        return Some(format!("group {sha} must not fire"));
    }
    let Some(truth) = trace.groups.get(sha) else {
        return Some(format!("group {sha} does not exist"));
    };
    let Some(runs) = t["runs"].as_object() else {
        return Some(format!("group {sha}: trigger without runs"));
    };
    for (id, r) in runs {
        let Some(run) = truth.runs.get(id) else {
            return Some(format!("group {sha}: run {id} does not exist"));
        };
        if r["conclusion"].as_str() != Some(run.conclusion) {
            return Some(format!(
                "group {sha}: run {id} listed as {}, it is {}",
                r["conclusion"], run.conclusion
            ));
        }
    }
    let failed: Vec<&str> = t["failed_workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if failed.is_empty() {
        return Some(format!("group {sha}: no failed workflow listed"));
    }
    for w in failed {
        let ok = truth
            .runs
            .values()
            .any(|r| r.workflow == w && FAILING.contains(&r.conclusion));
        if !ok {
            return Some(format!("group {sha}: workflow {w} did not fail"));
        }
    }
    None
}
