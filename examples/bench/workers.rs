//! The worker processes of a phase: migrate, start, measure (CPU, peak RSS), stop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// `runwatch migrate` with `env`.
pub async fn migrate(bin: &Path, env: &[(String, String)]) -> Result<()> {
    command(bin, &["migrate"], env).await
}

/// `runwatch ARGS…` with `env`, to its end; an error unless it succeeds.
pub async fn command(bin: &Path, args: &[&str], env: &[(String, String)]) -> Result<()> {
    let what = format!("runwatch {}", args.join(" "));
    let status = Command::new(bin)
        .args(args)
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .status()
        .await
        .with_context(|| what.clone())?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// Running `runwatch run --no-migrate` processes, each with its log file.
pub struct Workers {
    pub procs: Vec<(Child, PathBuf)>,
    callgrind: bool,
}

impl Workers {
    /// Starts `n` workers; their stderr goes to `<tmp>/<db>-w<i>.log`. With `callgrind`,
    /// each runs under `valgrind --tool=callgrind`, writing its counts to
    /// `<callgrind>.<i>` when it exits.
    pub fn start(
        bin: &Path,
        env: &[(String, String)],
        n: usize,
        db: &str,
        callgrind: Option<&Path>,
    ) -> Result<Workers> {
        let mut procs = Vec::new();
        for w in 0..n {
            let log = std::env::temp_dir().join(format!("{db}-w{w}.log"));
            let mut cmd = match callgrind {
                None => Command::new(bin),
                Some(out) => {
                    let mut c = Command::new("valgrind");
                    c.arg("--tool=callgrind")
                        .arg(format!("--callgrind-out-file={}.{w}", out.display()))
                        .arg(bin);
                    c
                }
            };
            let child = cmd
                .args(["run", "--no-migrate"])
                .envs(env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).context("worker log")?)
                .kill_on_drop(true)
                .spawn()
                .context("spawn runwatch run")?;
            procs.push((child, log));
        }
        Ok(Workers {
            procs,
            callgrind: callgrind.is_some(),
        })
    }

    /// The first worker's log, for error messages.
    pub fn log(&self) -> Option<&Path> {
        self.procs.first().map(|(_, l)| l.as_path())
    }

    /// CPU seconds used so far by all workers, and each one's peak RSS in KiB.
    pub fn measure(&self) -> (f64, Vec<u64>) {
        let pids = || self.procs.iter().filter_map(|(c, _)| c.id());
        (
            pids().filter_map(cpu_seconds).sum(),
            pids().filter_map(vm_hwm_kib).collect(),
        )
    }

    /// SIGTERM, then SIGKILL after 20 s (120 s under callgrind, which writes its counts at
    /// the end); the logs are removed unless `BENCH_KEEP_LOGS`.
    pub async fn stop(mut self) {
        let grace = if self.callgrind {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(20)
        };
        for (child, _) in &mut self.procs {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        for (_, log) in &self.procs {
            if std::env::var_os("BENCH_KEEP_LOGS").is_none() {
                let _ = std::fs::remove_file(log);
            } else {
                println!("worker log kept: {}", log.display());
            }
        }
    }
}

/// CPU seconds (user + system) the process used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The peak resident set (`VmHWM`) in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The total instructions (`Ir`) of a callgrind output file (its `summary:` or `totals:`
/// line).
pub fn callgrind_instructions(file: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", file.display()))
}
