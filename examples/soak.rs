//! `make soak`: does a worker's memory stay flat under a steady load that nobody scrapes?
//!
//! ```sh
//! cargo build --release --bin runwatch --example soak
//! target/release/examples/soak [--minutes 10 --rate 1000 ...]   # --help for the options
//! ```
//!
//! Against the configured NATS and Postgres (`NATS_URL`, `DATABASE_URL`), with a database
//! (`rwsoak_*`) and stream, subject and consumer names of its own, dropped at the end:
//! `runwatch migrate`, then one `runwatch run --no-migrate` process of the given binary;
//! events are published at a steady rate (new groups all the time, two runs each, a share
//! of them failing so triggers fire), and nothing reads `/metrics` unless `--scrape` asks.
//! Every `--sample` seconds the worker's resident set (`VmRSS` of /proc/PID/status) is
//! read. After `--warmup`, the growth per hour is the Theil-Sen slope of RSS over time
//! (the least-squares slope is printed too); the run fails (exit status 1) when it is
//! above `--max-growth-mib-per-hour`, when
//! the worker falls behind (more than `--max-behind-secs` of load not yet acknowledged
//! at any sample, or more than `--max-pending` messages at the end), or when the worker
//! exits.

#[path = "../tests/api/helpers/services.rs"]
mod services;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use sqlx::Connection;

use services::{database_url, nats_url, with_database};

#[derive(Parser, Debug, Clone)]
#[command(about = "runwatch memory soak (see examples/soak.rs)")]
struct Opts {
    /// Total duration of the load, in minutes (warm-up included).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Events per second, published steadily.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of warm-up excluded from the growth figure.
    #[arg(long, default_value_t = 120.0)]
    warmup: f64,
    /// Seconds between two RSS samples.
    #[arg(long, default_value_t = 5.0)]
    sample: f64,
    /// The run fails when RSS grows faster than this after warm-up.
    #[arg(long, default_value_t = 8.0)]
    max_growth_mib_per_hour: f64,
    /// The run fails when more messages than this are unacknowledged at the end.
    #[arg(long, default_value_t = 20_000)]
    max_pending: u64,
    /// The run fails when, at any sample, the messages not yet acknowledged are more than
    /// this many seconds of load (pending / rate).
    #[arg(long, default_value_t = 5.0)]
    max_behind_secs: f64,
    /// Share of groups with a failing run (they fire a trigger).
    #[arg(long, default_value_t = 0.1)]
    fail_share: f64,
    /// Read /metrics every N seconds (0: never, the case the soak is for).
    #[arg(long, default_value_t = 0.0)]
    scrape: f64,
    /// Extra `RUNWATCH_…=value` settings for the worker (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// The runwatch binary (default: next to this example's directory, `../runwatch`).
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// Database, streams, subjects and durable of this run.
struct Names {
    db: String,
    url: String,
    events: String,
    triggers: String,
    dead: String,
    prefix: String,
    durable: String,
}

impl Names {
    fn new() -> Names {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let tag = format!("{}_{}", std::process::id(), t % 1_000_000_000);
        let db = format!("rwsoak_{tag}");
        Names {
            url: with_database(&database_url(), &db),
            db,
            events: format!("SOAKEV_{tag}"),
            triggers: format!("SOAKTR_{tag}"),
            dead: format!("SOAKDL_{tag}"),
            prefix: format!("soak.{tag}"),
            durable: format!("soak_{tag}"),
        }
    }

    fn env(&self, port: u16) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.url.clone()),
            ("NATS_URL".into(), nats_url()),
            ("RUNWATCH_DATABASE__CREATE_IF_MISSING".into(), "true".into()),
            ("RUNWATCH_STREAMS__EVENTS".into(), self.events.clone()),
            ("RUNWATCH_STREAMS__TRIGGERS".into(), self.triggers.clone()),
            ("RUNWATCH_STREAMS__DEAD".into(), self.dead.clone()),
            (
                "RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX".into(),
                format!("{}.events", self.prefix),
            ),
            (
                "RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX".into(),
                format!("{}.triggers", self.prefix),
            ),
            (
                "RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX".into(),
                format!("{}.dead", self.prefix),
            ),
            ("RUNWATCH_CONSUMER__DURABLE".into(), self.durable.clone()),
            ("RUNWATCH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")),
            ("RUNWATCH_LOG__LEVEL".into(), "warn".into()),
            ("RUST_LOG".into(), "warn".into()),
        ]
    }

    async fn remove(&self, js: &jetstream::Context) {
        for s in [&self.events, &self.triggers, &self.dead] {
            let _ = js.delete_stream(s).await;
        }
        if let Ok(mut admin) =
            sqlx::PgConnection::connect(&with_database(&database_url(), "postgres")).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
                .execute(&mut admin)
                .await;
        }
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Event `i` of an endless trace: groups of two runs, in windows of 1,000 groups (all
/// queued events of a window, then all completions), so a batch touches many groups and
/// every group completes and is decided. A `fail_share` of the groups has a failing run.
fn event(i: u64, fail_share: f64, tag: &str) -> (String, Bytes) {
    const WINDOW: u64 = 1000;
    const RUNS: u64 = 2;
    let block = i / (WINDOW * RUNS * 2);
    let within = i % (WINDOW * RUNS * 2);
    let step = within / WINDOW;
    let g = block * WINDOW + within % WINDOW;
    let r = step % RUNS;
    let completed = step >= RUNS;
    // A deterministic share of failing groups (a multiplicative hash of g).
    let unit = (g.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    let failing = unit < fail_share;
    let mut run = serde_json::json!({
        "id": format!("{g}-{r}"), "attempt": 1, "workflow": format!("wf-{r}"),
        "status": if completed { "completed" } else { "queued" },
        "url": format!("https://ci.example/acme/runs/{g}-{r}"),
        "updated_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if completed {
        run["conclusion"] = serde_json::json!(if failing && r == 0 {
            "failure"
        } else {
            "success"
        });
    }
    let id = format!("soak-{tag}-{i}");
    let repo = g % 50;
    let e = serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "acme", "name": format!("repo-{repo}"), "id": format!("{}", 1000 + repo)},
        "commit_sha": format!("{:040x}", g), "branch": format!("feature-{g}"), "pr_number": g + 1, "run": run,
    });
    (id, Bytes::from(e.to_string()))
}

/// Theil-Sen slope of (seconds, KiB) points (the median of the slopes between every two
/// points), in MiB per hour: a steady growth shows in full, a transient spike of the
/// allocator (RSS up for a few samples, then back) does not tilt it as it tilts a
/// least-squares fit.
fn median_slope_mib_per_hour(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 > a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    let m = if slopes.len() % 2 == 0 {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    } else {
        slopes[mid]
    };
    m * 3600.0 / 1024.0
}

/// Least-squares slope of (seconds, KiB) points, in MiB per hour.
fn slope_mib_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    sxy / sxx * 3600.0 / 1024.0
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `GET /metrics`, body discarded (the scrape drains the histogram buffers).
async fn scrape(port: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        let req =
            format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_ok() {
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }
    }
}

async fn soak(opts: &Opts, bin: &PathBuf, names: &Names, js: &jetstream::Context) -> Result<bool> {
    let port = free_port()?;
    let mut env = names.env(port);
    for kv in &opts.set {
        if let Some((k, v)) = kv.split_once('=') {
            env.push((k.to_string(), v.to_string()));
        }
    }
    let status = tokio::process::Command::new(bin)
        .arg("migrate")
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .status()
        .await
        .context("runwatch migrate")?;
    if !status.success() {
        bail!("runwatch migrate failed: {status}");
    }
    let log = std::env::temp_dir().join(format!("{}.log", names.db));
    let mut worker = tokio::process::Command::new(bin)
        .args(["run", "--no-migrate"])
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).context("worker log")?)
        .kill_on_drop(true)
        .spawn()
        .context("spawn runwatch run")?;
    let pid = worker.id().context("worker pid")?;
    let started = Instant::now();
    loop {
        if js
            .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                &names.durable,
                &names.events,
            )
            .await
            .is_ok()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the worker did not create its consumer within 60s (log: {})",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "soak: worker pid {pid}, {} events/s for {} min (warm-up {} s), RSS every {} s, {}; log {}",
        opts.rate,
        opts.minutes,
        opts.warmup,
        opts.sample,
        if opts.scrape > 0.0 {
            format!("/metrics read every {} s", opts.scrape)
        } else {
            "/metrics never read".into()
        },
        log.display()
    );

    // The publisher: paced, pipelined (at most 4,096 PubAcks outstanding).
    let total = Duration::from_secs_f64(opts.minutes * 60.0);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let js = js.clone();
        let subject = format!("{}.events.github", names.prefix);
        let published = published.clone();
        let (rate, fail_share) = (opts.rate, opts.fail_share);
        let tag = names.db.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut acks: VecDeque<PublishAckFuture> = VecDeque::new();
            let mut i = 0u64;
            while t0.elapsed() < total {
                if i.is_multiple_of(16) {
                    tokio::time::sleep_until(
                        (t0 + Duration::from_secs_f64(i as f64 / rate)).into(),
                    )
                    .await;
                }
                let (id, payload) = event(i, fail_share, &tag);
                let msg = PublishMessage::build()
                    .payload(payload)
                    .message_id(id.as_str());
                acks.push_back(js.send_publish(subject.clone(), msg).await?);
                while acks.len() > 4096 {
                    if let Some(a) = acks.pop_front() {
                        a.await?;
                    }
                }
                i += 1;
                published.store(i, Ordering::Relaxed);
            }
            for a in acks {
                a.await?;
            }
            anyhow::Ok(i)
        })
    };

    let mut samples: Vec<(f64, f64)> = Vec::new();
    let t0 = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut next_scrape = Duration::ZERO;
    let mut worker_died = None;
    // The most the worker was behind, in seconds of load, and when.
    let mut max_behind = (0.0_f64, 0.0_f64);
    while t0.elapsed() < total {
        if let Ok(Some(status)) = worker.try_wait() {
            worker_died = Some(status);
            break;
        }
        let now = t0.elapsed();
        if opts.scrape > 0.0 && now >= next_scrape {
            scrape(port).await;
            next_scrape = now + Duration::from_secs_f64(opts.scrape);
        }
        if now >= next_sample {
            if let Some(kib) = rss_kib(pid) {
                samples.push((now.as_secs_f64(), kib as f64));
                let pending = match js
                    .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                        &names.durable,
                        &names.events,
                    )
                    .await
                {
                    Ok(mut c) => c
                        .info()
                        .await
                        .map(|i| i.num_pending + i.num_ack_pending as u64)
                        .unwrap_or(0),
                    Err(_) => 0,
                };
                let behind = pending as f64 / opts.rate;
                if behind > max_behind.0 {
                    max_behind = (behind, now.as_secs_f64());
                }
                println!(
                    "t={:>6.0}s rss={:>7.1} MiB published={} pending={}",
                    now.as_secs_f64(),
                    kib as f64 / 1024.0,
                    published.load(Ordering::Relaxed),
                    pending
                );
            }
            next_sample += Duration::from_secs_f64(opts.sample);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = match publisher.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => bail!("publishing failed: {e:#}"),
        Err(e) => bail!("the publisher panicked: {e}"),
    };
    if let Some(status) = worker_died {
        bail!(
            "the worker exited during the soak: {status} (log: {})",
            log.display()
        );
    }
    let mut c = js
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
            &names.durable,
            &names.events,
        )
        .await?;
    let info = c.info().await?;
    let pending = info.num_pending + info.num_ack_pending as u64;
    let mut stored = Vec::new();
    for stream in [&names.triggers, &names.dead] {
        let n = match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        stored.push(n);
    }
    let (triggers, dead) = (stored[0], stored[1]);
    if let Err(e) = postgres_report(&names.url).await {
        println!("postgres: cannot read the statistics: {e:#}");
    }
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .is_err()
    {
        let _ = worker.kill().await;
    }

    let warm: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|p| p.0 >= opts.warmup)
        .collect();
    if warm.len() < 10 {
        bail!(
            "only {} samples after warm-up: run longer or sample more often",
            warm.len()
        );
    }
    let mib = |kib: f64| kib / 1024.0;
    let first = warm.first().map_or(0.0, |p| p.1);
    let last = warm.last().map_or(0.0, |p| p.1);
    let max = warm.iter().map(|p| p.1).fold(0.0, f64::max);
    let min = warm.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let growth = median_slope_mib_per_hour(&warm);
    let least_squares = slope_mib_per_hour(&warm);
    let per_event = if opts.rate > 0.0 {
        growth * 1024.0 * 1024.0 / (opts.rate * 3600.0)
    } else {
        0.0
    };
    println!(
        "soak: events={sent} rate={:.0}/s after_warmup: samples={} rss_first={:.1}MiB rss_last={:.1}MiB rss_min={:.1}MiB rss_max={:.1}MiB growth={:.2}MiB/h ({:.3} bytes/event; least squares {:.2}MiB/h) max_behind={:.2}s (at t={:.0}s) pending_at_end={pending} triggers={triggers} dead_letters={dead}",
        opts.rate,
        warm.len(),
        mib(first),
        mib(last),
        mib(min),
        mib(max),
        growth,
        per_event,
        least_squares,
        max_behind.0,
        max_behind.1
    );
    let mut ok = true;
    if growth > opts.max_growth_mib_per_hour {
        println!(
            "FAIL: RSS grows {growth:.2} MiB/h after warm-up, above {} MiB/h",
            opts.max_growth_mib_per_hour
        );
        ok = false;
    }
    if pending > opts.max_pending {
        println!(
            "FAIL: the worker fell behind: {pending} messages unacknowledged at the end (max {})",
            opts.max_pending
        );
        ok = false;
    }
    if max_behind.0 > opts.max_behind_secs {
        println!(
            "FAIL: the worker was {:.2} s behind at t={:.0}s (max {} s)",
            max_behind.0, max_behind.1, opts.max_behind_secs
        );
        ok = false;
    }
    if dead > 0 {
        println!("FAIL: {dead} events were dead-lettered (see the worker log)");
        ok = false;
    }
    if ok {
        println!(
            "PASS: growth {growth:.2} MiB/h <= {} MiB/h",
            opts.max_growth_mib_per_hour
        );
    }
    Ok(ok)
}

/// What Postgres saw of the soak's tables: whether autovacuum ran (it is a server setting;
/// a server with it off never vacuums or analyzes on its own), and how each table was read.
async fn postgres_report(url: &str) -> Result<()> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&mut c)
        .await?;
    println!("postgres: autovacuum={autovacuum}");
    #[derive(sqlx::FromRow)]
    struct TableStats {
        relname: String,
        n_live_tup: i64,
        n_dead_tup: i64,
        seq_scan: i64,
        idx_scan: i64,
        n_tup_upd: i64,
        n_tup_hot_upd: i64,
        autovacuum_count: i64,
        autoanalyze_count: i64,
    }
    let rows: Vec<TableStats> = sqlx::query_as(
        "SELECT relname::text AS relname, n_live_tup, n_dead_tup, seq_scan,
                COALESCE(idx_scan, 0) AS idx_scan, n_tup_upd, n_tup_hot_upd, autovacuum_count,
                autoanalyze_count
         FROM pg_stat_user_tables
         WHERE relname IN ('groups', 'outbox', 'commit_pulls', 'pull_heads', 'flips', 'jobs')
         ORDER BY relname",
    )
    .fetch_all(&mut c)
    .await?;
    for t in rows {
        println!(
            "postgres: table={} live={} dead={} seq_scan={} idx_scan={} updates={} hot_updates={} autovacuums={} autoanalyzes={}",
            t.relname,
            t.n_live_tup,
            t.n_dead_tup,
            t.seq_scan,
            t.idx_scan,
            t.n_tup_upd,
            t.n_tup_hot_upd,
            t.autovacuum_count,
            t.autoanalyze_count
        );
    }
    let size: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('groups')")
        .fetch_one(&mut c)
        .await?;
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM groups")
        .fetch_one(&mut c)
        .await?;
    println!(
        "postgres: groups={groups} groups_total_bytes={size} bytes_per_group={:.0}",
        size as f64 / groups.max(1) as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let opts = Opts::parse();
    if !(opts.rate > 0.0 && opts.minutes > 0.0 && opts.sample > 0.0) {
        bail!("--rate, --minutes and --sample must be above 0");
    }
    let bin = match &opts.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("runwatch"))
            .context("locate the runwatch binary")?,
    };
    if !bin.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release --bin runwatch) or give --bin",
            bin.display()
        );
    }
    let client = async_nats::connect(nats_url())
        .await
        .context("connect to NATS")?;
    let js = jetstream::new(client);
    let names = Names::new();
    let out = soak(&opts, &bin, &names, &js).await;
    names.remove(&js).await;
    Ok(if out? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
