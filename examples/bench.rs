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

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sqlx::{Connection, Row};

#[derive(Parser, Debug, Clone)]
#[command(about = "runwatch benchmark (see examples/bench.rs)")]
struct Opts {
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
    /// Events of the half-load (paced) run; groups scale with it. 0 skips it.
    #[arg(long, default_value_t = 60_000)]
    half_load_events: usize,
    /// Workers of the scale-out run (same trace as the main one). 0 skips it.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Groups (with completed runs) written into the database before the main run.
    #[arg(long, default_value_t = 0)]
    prefill: u64,
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
    set: Vec<String>,
    /// The runwatch binary (default: next to this example, `target/release/runwatch`).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Serve the worker metrics of the main and half-load runs on this port and print their
    /// timing summaries.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Seed of the traces.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/runwatch".into())
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Replaces the database name of a Postgres URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{prefix}_{}_{}", std::process::id(), t % 1_000_000_000)
}

/// A generated trace: events in publish order, and for each failing group the index of
/// its last event (the one that makes it fire).
struct Trace {
    events: Vec<(String, Bytes)>,
    /// commit sha → index in `events` of the group's last event; failing groups only.
    last_of_failing: HashMap<String, usize>,
}

/// Groups of `runs` workflow runs each: every run is queued, then completes (all queued
/// events of a group come before its completions, so the group fires on its last
/// event); a `fail_share` of the groups has one failing run. Groups are interleaved in
/// windows of 1,000, so one group's events are spread over the trace and a batch touches
/// many groups, as with real webhooks.
fn generate(seed: u64, events: usize, groups: usize, fail_share: f64) -> Trace {
    let groups = groups.max(1);
    let runs = (events / groups / 2).max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let base: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).single().unwrap_or_default();
    let mut out = Vec::with_capacity(groups * runs * 2);
    let mut last_of_failing = HashMap::new();
    const WINDOW: usize = 1000;
    let mut n = 0u64;
    for start in (0..groups).step_by(WINDOW) {
        let block: Vec<(usize, Option<usize>)> = (start..(start + WINDOW).min(groups))
            .map(|g| (g, rng.random_bool(fail_share).then(|| rng.random_range(0..runs))))
            .collect();
        for step in 0..runs * 2 {
            for &(g, bad) in &block {
                let sha = format!("{:040x}", (seed << 40) ^ g as u64);
                let r = step % runs;
                let completed = step >= runs;
                let t = base + chrono::Duration::seconds((g * 10 + step) as i64);
                let mut run = serde_json::json!({
                    "id": format!("{g}-{r}"), "attempt": 1, "workflow": format!("wf-{r}"),
                    "status": if completed { "completed" } else { "queued" },
                    "url": format!("https://ci.example/acme/runs/{g}-{r}"),
                    "updated_at": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                });
                if completed {
                    run["conclusion"] = serde_json::json!(if bad == Some(r) { "failure" } else { "success" });
                }
                n += 1;
                let id = format!("ev-{seed}-{n}");
                let repo = g % 50;
                let e = serde_json::json!({
                    "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                    "repository": {"owner": "acme", "name": format!("repo-{repo}"), "id": format!("{}", 1000 + repo)},
                    "commit_sha": sha, "branch": format!("feature-{g}"), "pr_number": g + 1, "run": run,
                });
                if completed && step == runs * 2 - 1 && bad.is_some() {
                    last_of_failing.insert(sha.clone(), out.len());
                }
                out.push((id, Bytes::from(e.to_string())));
            }
        }
    }
    Trace {
        events: out,
        last_of_failing,
    }
}

/// What one phase measured.
#[derive(Debug, Default)]
struct PhaseResult {
    events: usize,
    seconds: f64,
    events_per_s: f64,
    publish_per_s: f64,
    latencies_ms: Vec<f64>,
    triggers: usize,
    expected: usize,
    rss_kib: Vec<u64>,
    /// CPU seconds the worker process(es) used, start-up included.
    worker_cpu_s: f64,
}

impl PhaseResult {
    fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Phase<'a> {
    name: &'a str,
    workers: usize,
    batch_size: Option<usize>,
    /// Events per second to publish at; `None` = as fast as possible.
    pace: Option<f64>,
    prefill: u64,
    explain: bool,
}

struct Names {
    db: String,
    url: String,
    events: String,
    triggers: String,
    dead: String,
    events_prefix: String,
    triggers_prefix: String,
    dead_prefix: String,
    durable: String,
}

impl Names {
    fn new() -> Names {
        let tag = unique("b");
        let db = format!("rwbench_{tag}");
        let subj = tag.to_lowercase();
        let up = tag.to_uppercase();
        Names {
            url: with_database(&database_url(), &db),
            db,
            events: format!("BEV_{up}"),
            triggers: format!("BTR_{up}"),
            dead: format!("BDL_{up}"),
            events_prefix: format!("bench.{subj}.events"),
            triggers_prefix: format!("bench.{subj}.triggers"),
            dead_prefix: format!("bench.{subj}.dead"),
            durable: format!("bench_{subj}"),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.url.clone()),
            ("NATS_URL".into(), nats_url()),
            ("RUNWATCH_STREAMS__EVENTS".into(), self.events.clone()),
            ("RUNWATCH_STREAMS__TRIGGERS".into(), self.triggers.clone()),
            ("RUNWATCH_STREAMS__DEAD".into(), self.dead.clone()),
            ("RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX".into(), self.events_prefix.clone()),
            ("RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX".into(), self.triggers_prefix.clone()),
            ("RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX".into(), self.dead_prefix.clone()),
            ("RUNWATCH_CONSUMER__DURABLE".into(), self.durable.clone()),
            ("RUNWATCH_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("RUNWATCH_PURGE__INTERVAL".into(), "0s".into()),
            ("RUNWATCH_LOG__LEVEL".into(), "warn".into()),
            ("RUST_LOG".into(), "warn".into()),
        ]
    }

    async fn remove(&self, js: &jetstream::Context) {
        for s in [&self.events, &self.triggers, &self.dead] {
            let _ = js.delete_stream(s).await;
        }
        if let Ok(mut admin) = sqlx::PgConnection::connect(&with_database(&database_url(), "postgres")).await {
            let _ = sqlx::query(&(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db)))
                .execute(&mut admin)
                .await;
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

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Bench {
    opts: Opts,
    bin: PathBuf,
    js: jetstream::Context,
    client: async_nats::Client,
}

impl Bench {
    async fn run_phase(&self, phase: &Phase<'_>, trace: &Trace) -> Result<PhaseResult> {
        let names = Names::new();
        let out = self.run_phase_in(phase, trace, &names).await;
        names.remove(&self.js).await;
        out
    }

    fn worker_env(&self, names: &Names, phase: &Phase<'_>) -> Vec<(String, String)> {
        let mut env = names.env();
        if let (Some(port), "main" | "half") = (self.opts.metrics_port, phase.name) {
            env.push(("RUNWATCH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
        }
        if let Some(b) = phase.batch_size {
            env.push(("RUNWATCH_CONSUMER__BATCH_SIZE".into(), b.to_string()));
        }
        for kv in &self.opts.set {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.to_string(), v.to_string()));
            }
        }
        env
    }

    async fn run_phase_in(&self, phase: &Phase<'_>, trace: &Trace, names: &Names) -> Result<PhaseResult> {
        let env = self.worker_env(names, phase);
        let status = tokio::process::Command::new(&self.bin)
            .arg("migrate")
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .status()
            .await
            .context("runwatch migrate")?;
        if !status.success() {
            bail!("runwatch migrate failed: {status}");
        }
        if phase.prefill > 0 {
            prefill(&names.url, phase.prefill).await?;
        }
        let mut workers = Vec::new();
        let log_dir = std::env::temp_dir();
        for w in 0..phase.workers {
            let log = log_dir.join(format!("{}-w{w}.log", names.db));
            let child = tokio::process::Command::new(&self.bin)
                .args(["run", "--no-migrate"])
                .envs(env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).context("worker log")?)
                .kill_on_drop(true)
                .spawn()
                .context("spawn runwatch run")?;
            workers.push((child, log));
        }
        // The worker creates the streams and the durable consumer.
        let started = Instant::now();
        loop {
            if self.js.get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(&names.durable, &names.events).await.is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the worker did not create its consumer within 60s (log: {:?})", workers[0].1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Triggers: commit sha → when the harness received it.
        let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut sub = self.client.subscribe(format!("{}.>", names.triggers_prefix)).await?;
        self.client.flush().await?;
        let rx = received.clone();
        let collector = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let now = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    && let Some(sha) = v["commit_sha"].as_str()
                    && let Ok(mut m) = rx.lock()
                {
                    m.entry(sha.to_string()).or_insert(now);
                }
            }
        });

        // Publish, pipelined: at most 4,096 PubAcks outstanding.
        let subject = format!("{}.github", names.events_prefix);
        let mut sent_at: HashMap<usize, Instant> = HashMap::with_capacity(trace.last_of_failing.len());
        let wanted: std::collections::HashSet<usize> = trace.last_of_failing.values().copied().collect();
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::new();
        let t0 = Instant::now();
        let mut publish_errors = 0usize;
        for (i, (id, payload)) in trace.events.iter().enumerate() {
            if let Some(rate) = phase.pace
                && i % 16 == 0
            {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate)).into()).await;
            }
            if wanted.contains(&i) {
                sent_at.insert(i, Instant::now());
            }
            let msg = PublishMessage::build().payload(payload.clone()).message_id(id.as_str());
            acks.push_back(self.js.send_publish(subject.clone(), msg).await?);
            while acks.len() > 4096 {
                if let Some(a) = acks.pop_front()
                    && a.await.is_err()
                {
                    publish_errors += 1;
                }
            }
        }
        for a in acks {
            if a.await.is_err() {
                publish_errors += 1;
            }
        }
        let published = t0.elapsed();
        if publish_errors > 0 {
            bail!("{publish_errors} events were not acknowledged by JetStream");
        }

        // Until the consumer has nothing pending and nothing unacknowledged.
        let n = trace.events.len();
        let limit = Duration::from_secs(120 + (n / 200) as u64);
        let done = loop {
            let mut c = self
                .js
                .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(&names.durable, &names.events)
                .await?;
            let info = c.info().await?;
            if info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence >= n as u64 {
                break Instant::now();
            }
            if t0.elapsed() > limit {
                bail!(
                    "{}: not done after {limit:?}: pending {} unacked {} (logs: {:?})",
                    phase.name,
                    info.num_pending,
                    info.num_ack_pending,
                    workers[0].1
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seconds = done.duration_since(t0).as_secs_f64();
        // Triggers trail the last ack by a publish at most; give them a moment.
        let expected = trace.last_of_failing.len();
        let wait_from = Instant::now();
        while received.lock().map(|m| m.len()).unwrap_or(0) < expected && wait_from.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        collector.abort();

        if let (Some(port), "main" | "half") = (self.opts.metrics_port, phase.name) {
            print_metrics(port).await;
        }
        let cpu: f64 = workers.iter().filter_map(|(c, _)| c.id().and_then(cpu_seconds)).sum();
        let rss_kib = workers.iter().filter_map(|(c, _)| c.id().and_then(vm_hwm_kib)).collect();
        if phase.explain {
            explain(&names.url).await?;
        }
        for (child, _) in &mut workers {
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        let received = received.lock().map(|m| m.clone()).unwrap_or_default();
        let mut latencies: Vec<f64> = trace
            .last_of_failing
            .iter()
            .filter_map(|(sha, i)| {
                let r = received.get(sha)?;
                let s = sent_at.get(i)?;
                Some(r.saturating_duration_since(*s).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        for (_, log) in &workers {
            if std::env::var_os("BENCH_KEEP_LOGS").is_none() {
                let _ = std::fs::remove_file(log);
            } else {
                println!("worker log kept: {}", log.display());
            }
        }
        Ok(PhaseResult {
            events: n,
            seconds,
            events_per_s: n as f64 / seconds,
            publish_per_s: n as f64 / published.as_secs_f64(),
            latencies_ms: latencies,
            triggers: received.len(),
            expected,
            rss_kib,
            worker_cpu_s: cpu,
        })
    }
}

/// A group state with five completed runs, made by the engine itself, so the pre-filled
/// rows look like real ones.
fn completed_state() -> Result<String> {
    let config = runwatch::config::Config::load(None)?;
    let engine = runwatch::engine::Engine::new(config.rule_set()?, config.limits);
    let repo = runwatch::engine::RepoRef {
        internal_id: 1,
        stable_key: "github:id:1000".into(),
        provider: runwatch::event::Provider::Github,
        owner: "acme".into(),
        name: "repo-0".into(),
        external_id: Some("1000".into()),
    };
    let mut state = runwatch::engine::GroupState::default();
    let mut branch = None;
    let mut ledger = runwatch::engine::Ledger::default();
    for r in 0..5 {
        let e = serde_json::json!({
            "schema": "runwatch.workflow_run.v1", "event_id": format!("p{r}"), "provider": "github",
            "repository": {"owner": "acme", "name": "repo-0", "id": "1000"},
            "commit_sha": "0", "branch": "old", "pr_number": 1,
            "run": {"id": format!("old-{r}"), "attempt": 1, "workflow": format!("wf-{r}"), "status": "completed",
                    "conclusion": "success", "url": "https://ci.example/acme/runs/old",
                    "updated_at": "2026-01-01T00:00:00Z"},
        });
        let event = runwatch::event::decode(e.to_string().as_bytes(), &config.limits)
            .map_err(|r| anyhow::anyhow!("prefill event: {}", r.detail))?;
        let clock = runwatch::engine::Clock::event_time(event.run.updated_at);
        let mut ctx = runwatch::engine::GroupCtx {
            repo: &repo,
            pr_number: Some(1),
            commit_sha: "0",
            branch: &mut branch,
            state: &mut state,
        };
        engine
            .apply(&mut ctx, &mut ledger, &event, clock)
            .map_err(|r| anyhow::anyhow!("prefill apply: {}", r.detail))?;
    }
    Ok(serde_json::to_string(&state)?)
}

/// Writes `n` old groups with five completed runs each, spread over the trace's 50
/// repositories (registered here as the worker would), with commits the trace never uses.
async fn prefill(url: &str, n: u64) -> Result<()> {
    let started = Instant::now();
    let state = completed_state()?;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(
        "INSERT INTO repositories (provider, external_id, owner, name, stable_key)
         SELECT 'github', (1000 + i)::text, 'acme', 'repo-' || i, 'github:id:' || (1000 + i)
         FROM generate_series(0, 49) AS i ON CONFLICT DO NOTHING",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO groups (repository_id, pr_number, commit_sha, branch, state, created_at, updated_at)
         SELECT r.id, 1000000 + i, md5(i::text) || 'prefill', 'old', $2::jsonb,
                now() - interval '1 day', now() - interval '1 day'
         FROM generate_series(1, $1) AS i
         JOIN repositories r ON r.external_id = (1000 + i % 50)::text",
    )
    .bind(n as i64)
    .bind(&state)
    .execute(&mut conn)
    .await?;
    sqlx::query("VACUUM ANALYZE groups").execute(&mut conn).await?;
    let size: String = sqlx::query("SELECT pg_size_pretty(pg_total_relation_size('groups')) AS s")
        .fetch_one(&mut conn)
        .await?
        .get("s");
    conn.close().await?;
    println!("prefill: {n} groups in {:.1}s (groups table with indexes: {size})", started.elapsed().as_secs_f64());
    Ok(())
}

/// EXPLAIN ANALYZE of the decision transaction's statements for 64 existing groups (the two
/// statements of `runwatch_lock_groups` one by one: EXPLAIN does not look inside a function).
async fn explain(url: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let keys = sqlx::query(
        "SELECT array_agg(repository_id) AS r, array_agg(COALESCE(pr_number, 0)) AS p, array_agg(commit_sha) AS s,
                array_agg(id) AS ids
         FROM (SELECT * FROM groups ORDER BY random() LIMIT 64) g",
    )
    .fetch_one(&mut conn)
    .await?;
    let r: Vec<i64> = keys.get("r");
    let p: Vec<i64> = keys.get("p");
    let s: Vec<String> = keys.get("s");
    let ids: Vec<i64> = keys.get("ids");
    let count: i64 = sqlx::query("SELECT count(*) AS n FROM groups").fetch_one(&mut conn).await?.get("n");
    println!("explain: groups table holds {count} rows; 64 random keys");
    let mut tx = conn.begin().await?;
    let statements = [
        (
            "insert absent groups",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) INSERT INTO groups (repository_id, pr_number, commit_sha)
             SELECT u.r, NULLIF(u.p, 0), u.s FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS u(r, p, s)
             ON CONFLICT DO NOTHING",
        ),
        (
            "lock groups",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT g.id, g.repository_id, g.pr_number, g.commit_sha, g.branch, g.state
             FROM groups g
             JOIN UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS u(r, p, s)
               ON g.repository_id = u.r AND COALESCE(g.pr_number, 0) = u.p AND g.commit_sha = u.s
             ORDER BY g.repository_id, COALESCE(g.pr_number, 0), g.commit_sha COLLATE \"C\"
             FOR UPDATE OF g",
        ),
    ];
    for (what, sql) in statements {
        let rows = sqlx::query(sql).bind(&r).bind(&p).bind(&s).fetch_all(&mut *tx).await?;
        println!("explain: {what}");
        for row in rows {
            let line: String = row.get(0);
            println!("  {line}");
        }
    }
    let rows = sqlx::query(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) UPDATE groups SET branch = u.b, state = u.st,
                updated_at = now(), touched_on = (now() AT TIME ZONE 'UTC')::date
         FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[]) AS u(id, b, st) WHERE groups.id = u.id",
    )
    .bind(&ids)
    .bind(vec!["x".to_string(); ids.len()])
    .bind(vec![serde_json::json!({}); ids.len()])
    .fetch_all(&mut *tx)
    .await?;
    println!("explain: update groups");
    for row in rows {
        let line: String = row.get(0);
        println!("  {line}");
    }
    tx.rollback().await?;
    conn.close().await?;
    Ok(())
}

/// Sums and counts of the worker's histograms (mean time per transaction, batch size...).
async fn print_metrics(port: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        println!("metrics: cannot connect to 127.0.0.1:{port}");
        return;
    };
    let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body).await;
    let mut sums: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        if let Some(base) = name.strip_suffix("_sum").or_else(|| name.split_once("_sum{").map(|(b, _)| b)) {
            let key = format!("{base}{}", name.split_once('{').map_or(String::new(), |(_, l)| format!("{{{l}")));
            sums.entry(key).or_default().0 = v;
        } else if let Some(base) = name.strip_suffix("_count").or_else(|| name.split_once("_count{").map(|(b, _)| b)) {
            let key = format!("{base}{}", name.split_once('{').map_or(String::new(), |(_, l)| format!("{{{l}")));
            sums.entry(key).or_default().1 = v;
        }
    }
    for (k, (sum, count)) in sums {
        if count > 0.0 {
            println!("metrics: {k} count={count} mean={:.6}", sum / count);
        }
    }
    // The distribution of the decision transaction and of the end-to-end decision time.
    for metric in ["runwatch_transaction_seconds_bucket{op=\"record\"", "runwatch_decision_seconds_bucket{"] {
        let buckets: Vec<String> = body
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let n = l.rsplit_once(' ')?.1;
                Some(format!("<={le}:{n}"))
            })
            .collect();
        if !buckets.is_empty() {
            println!("metrics: {} cumulative {}", metric.trim_end_matches('{'), buckets.join(" "));
        }
    }
}

/// `pgbench -i` into a scratch database, `pgbench -N -c 8 -T 10`, drop it; the tps.
async fn pgbench() -> Result<f64> {
    let db = unique("rwbench_pgbench");
    let admin = with_database(&database_url(), "postgres");
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&(format!("CREATE DATABASE {db}"))).execute(&mut conn).await?;
    let url = with_database(&database_url(), &db);
    let result = async {
        let init = tokio::process::Command::new("pgbench").args(["-i", "-q", &url]).output().await?;
        if !init.status.success() {
            bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        }
        let run = tokio::process::Command::new("pgbench")
            .args(["-N", "-c", "8", "-T", "10", &url])
            .output()
            .await?;
        let text = String::from_utf8_lossy(&run.stdout);
        if !run.status.success() {
            bail!("pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("tps = "))
            .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .next_back()
            .context("no `tps = ` line in pgbench's output")
    }
    .await;
    sqlx::query(&(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    result
}

fn describe(name: &str, r: &PhaseResult) {
    let rss = r.rss_kib.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(",");
    println!(
        "{name}: events={} seconds={:.2} events_per_s={:.0} publish_per_s={:.0} triggers={}/{} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} rss_mib={rss} worker_cpu_s={:.1}",
        r.events,
        r.seconds,
        r.events_per_s,
        r.publish_per_s,
        r.triggers,
        r.expected,
        r.pct(50.0),
        r.pct(99.0),
        r.latencies_ms.last().copied().unwrap_or(f64::NAN),
        r.worker_cpu_s,
    );
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = Opts::parse();
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
    let client = async_nats::connect(nats_url()).await?;
    let js = jetstream::new(client.clone());
    let bench = Bench {
        opts: opts.clone(),
        bin,
        js,
        client,
    };
    println!("bench: load average {} at start; {} cores", load(), std::thread::available_parallelism().map_or(0, |n| n.get()));

    let pg_tps = if opts.skip_pgbench {
        0.0
    } else {
        let tps = pgbench().await?;
        println!("pgbench -N -c 8 -T 10: tps={tps:.0}");
        tps
    };

    let trace = generate(opts.seed, opts.events, opts.groups, opts.fail_share);
    let per_group = opts.events as f64 / opts.groups.max(1) as f64;
    if opts.prefill > 0 && opts.compare_empty {
        let empty = Phase {
            name: "empty",
            workers: 1,
            batch_size: opts.batch_size,
            pace: None,
            prefill: 0,
            explain: false,
        };
        let r = bench.run_phase(&empty, &trace).await?;
        describe("main, empty database", &r);
    }
    let main_phase = Phase {
        name: "main",
        workers: 1,
        batch_size: opts.batch_size,
        pace: None,
        prefill: opts.prefill,
        explain: opts.explain,
    };
    let main = bench.run_phase(&main_phase, &trace).await?;
    describe(&format!("main (1 worker, prefill {})", opts.prefill), &main);

    let half = if opts.half_load_events > 0 {
        let rate = main.events_per_s / 2.0;
        let groups = ((opts.half_load_events as f64 / per_group) as usize).max(1);
        let t = generate(opts.seed + 1, opts.half_load_events, groups, opts.fail_share);
        let phase = Phase {
            name: "half",
            workers: 1,
            batch_size: opts.batch_size,
            pace: Some(rate),
            prefill: 0,
            explain: false,
        };
        let r = bench.run_phase(&phase, &t).await?;
        describe(&format!("half load (paced at {rate:.0} events/s)"), &r);
        Some(r)
    } else {
        None
    };

    let naive = if opts.naive_events > 0 {
        let groups = ((opts.naive_events as f64 / per_group) as usize).max(1);
        let t = generate(opts.seed + 2, opts.naive_events, groups, opts.fail_share);
        let phase = Phase {
            name: "naive",
            workers: 1,
            batch_size: Some(1),
            pace: None,
            prefill: 0,
            explain: false,
        };
        let r = bench.run_phase(&phase, &t).await?;
        describe("naive (batch_size = 1)", &r);
        Some(r)
    } else {
        None
    };

    if opts.replicas > 0 {
        let phase = Phase {
            name: "replicas",
            workers: opts.replicas,
            batch_size: opts.batch_size,
            pace: None,
            prefill: 0,
            explain: false,
        };
        let r = bench.run_phase(&phase, &trace).await?;
        describe(&format!("{} workers", opts.replicas), &r);
    }

    println!("bench: load average {} at end", load());
    let a = main.events_per_s;
    let c = naive.as_ref().map_or(0.0, |r| r.events_per_s);
    let ratio = if pg_tps > 0.0 { a / pg_tps } else { 0.0 };
    let speedup = if c > 0.0 { a / c } else { 0.0 };
    let rss = main.rss_kib.first().map_or(0.0, |k| *k as f64 / 1024.0);
    println!(
        "bench: events_per_s={a:.0} pgbench_tps={pg_tps:.0} ratio={ratio:.2} naive_events_per_s={c:.0} speedup={speedup:.2} p50_ms={:.1} p99_ms={:.1} p99_half_load_ms={:.1} rss_mib={rss:.1}",
        main.pct(50.0),
        main.pct(99.0),
        half.as_ref().map_or(f64::NAN, |r| r.pct(99.0)),
    );
    Ok(())
}
