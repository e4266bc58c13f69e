//! The faults: a schedule by progress through the trace, and the processes they act on.
//!
//! By progress = (acked publishes - consumer pending) / total: backend kills spread over
//! 10%..90%, nats restarts over 25%..45%, Postgres restarts over 55%..75%, and a worker
//! SIGKILL every `kill_every` until the backlog is drained. Faults not yet done when the
//! backlog drains are done then. Workers that exit by themselves are noted and started
//! again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::procs::{NatsProc, PgProc, WorkerProc};
use super::{Error, Options, log};

/// The harness's view of the pipeline, for the fault thread.
pub struct Progress {
    pub total: u64,
    pub acked: AtomicU64,
    /// Consumer pending; `u64::MAX` until first read.
    pub pending: AtomicU64,
    pub publish_done: AtomicBool,
    pub drained: AtomicBool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total: total as u64,
            acked: AtomicU64::new(0),
            pending: AtomicU64::new(u64::MAX),
            publish_done: AtomicBool::new(false),
            drained: AtomicBool::new(false),
        }
    }

    /// How far the workers are, 0..=1 (1 once drained).
    fn fraction(&self) -> f64 {
        let acked = self.acked.load(Ordering::Relaxed);
        let pending = self.pending.load(Ordering::Relaxed);
        if self.drained.load(Ordering::Relaxed) {
            1.0
        } else if pending == u64::MAX {
            0.0
        } else {
            acked.saturating_sub(pending) as f64 / self.total.max(1) as f64
        }
    }
}

/// The processes of a run.
pub struct Procs {
    pub nats: NatsProc,
    pub pg: PgProc,
    pub workers: Vec<WorkerProc>,
}

impl Procs {
    /// Starts again every worker that exited by itself, each with a note.
    pub fn restart_exited(&mut self, note: &dyn Fn(String)) -> Result<(), Error> {
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Some(code) = w.exited() {
                note(format!(
                    "worker {i} exited by itself (code {code:?}); starting it again"
                ));
                w.start_again()?;
            }
        }
        Ok(())
    }
}

/// A note: logged now and kept for the report.
pub fn note(notes: &Mutex<Vec<String>>, started: Instant, s: String) {
    log(started, &s);
    if let Ok(mut n) = notes.lock() {
        n.push(s);
    }
}

/// The progress points still ahead of each kind of fault.
struct Schedule {
    rng: StdRng,
    backend_at: Vec<f64>,
    nats_at: Vec<f64>,
    pg_at: Vec<f64>,
    next_kill: Instant,
    kills: u32,
}

/// `n` points spread evenly over `from..to`.
fn spread(n: u32, from: f64, to: f64) -> Vec<f64> {
    (0..n)
        .map(|i| from + (to - from) * (f64::from(i) + 0.5) / f64::from(n.max(1)))
        .collect()
}

/// Whether the first point of `at` is reached (and then drops it).
fn due(at: &mut Vec<f64>, frac: f64) -> bool {
    let reached = at.first().is_some_and(|&a| frac >= a);
    if reached {
        at.remove(0);
    }
    reached
}

/// Runs the fault schedule until the backlog is drained and every fault is done.
pub fn inject_faults(
    o: &Options,
    procs: &Mutex<Procs>,
    progress: &Progress,
    notes: &Mutex<Vec<String>>,
    started: Instant,
) -> Result<(), Error> {
    let mut s = Schedule {
        rng: StdRng::seed_from_u64(o.seed ^ 0x5eed),
        backend_at: spread(o.backend_kills, 0.10, 0.90),
        nats_at: spread(o.nats_restarts, 0.25, 0.45),
        pg_at: spread(o.pg_restarts, 0.55, 0.75),
        next_kill: Instant::now() + o.kill_every,
        kills: 0,
    };
    let note = |s: String| note(notes, started, s);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let drained = progress.drained.load(Ordering::Relaxed);
        let frac = progress.fraction();
        let mut p = procs.lock().map_err(|_| "procs lock poisoned")?;
        p.restart_exited(&note)?;
        if !o.kill_every.is_zero() && Instant::now() >= s.next_kill && !drained {
            let i = s.rng.random_range(0..p.workers.len());
            p.workers[i].kill();
            p.workers[i].start_again()?;
            s.kills += 1;
            s.next_kill = Instant::now() + o.kill_every;
        }
        step(&mut s, &mut p, frac, &note)?;
        if drained && s.backend_at.is_empty() && s.nats_at.is_empty() && s.pg_at.is_empty() {
            note(format!("{} worker SIGKILLs", s.kills));
            return Ok(());
        }
    }
}

/// The backend kill, nats restart and Postgres restart that are due at `frac`.
fn step(s: &mut Schedule, p: &mut Procs, frac: f64, note: &dyn Fn(String)) -> Result<(), Error> {
    let pct = frac * 100.0;
    if due(&mut s.backend_at, frac) {
        let killed = terminate_backends(&p.pg)?;
        note(format!(
            "progress {pct:.0}%: terminated {killed} runwatch backends"
        ));
    }
    if due(&mut s.nats_at, frac) {
        let t = Instant::now();
        p.nats.stop()?;
        std::thread::sleep(Duration::from_millis(500));
        p.nats.start_again()?;
        let down = t.elapsed().as_secs_f64();
        note(format!(
            "progress {pct:.0}%: nats-server restarted (SIGTERM, down {down:.1}s)"
        ));
    }
    if due(&mut s.pg_at, frac) {
        let t = Instant::now();
        p.pg.stop_immediate()?;
        std::thread::sleep(Duration::from_millis(1000));
        p.pg.start_again()?;
        let down = t.elapsed().as_secs_f64();
        note(format!(
            "progress {pct:.0}%: postgres restarted (immediate, down {down:.1}s)"
        ));
    }
    Ok(())
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
