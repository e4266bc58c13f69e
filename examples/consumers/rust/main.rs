//! Consume runwatch triggers exactly once: a durable JetStream pull consumer with explicit
//! acks, and a SQLite file that remembers which trigger ids were handled.
//!
//! JetStream delivers at least once (a message whose ack is lost, or whose consumer crashed
//! before acking, is delivered again), and its `Nats-Msg-Id` deduplication only covers
//! `streams.duplicate_window`; a trigger republished later (a replay into an empty database,
//! a relay after a long outage) arrives as a new message with the same `trigger_id`. So the
//! consumer dedupes on `trigger_id` itself: for each message, one SQLite transaction inserts
//! the id into `handled` and, only when it was new, does the work (here: queue a row in
//! `tasks`); then the message is acked. A crash before the commit undoes both and the
//! message is redelivered; a crash after the commit and before the ack redelivers a message
//! whose id is already in `handled`, which is skipped and acked. Replace `handle` with your
//! own work; if that work leaves the database (an HTTP call to an agent), pass `trigger_id`
//! along as an idempotency key.
//!
//! ```sh
//! cargo run -q --example consumer -- --stream RUNWATCH_TRIGGERS --durable my-agent --db my-agent.sqlite
//! ```
//!
//! Prints `handled <trigger_id> <rule> <owner>/<name> pr=<n> failed=<workflows>` for each
//! trigger handled and `skipped <trigger_id>` for one seen before.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{
    self, AckKind, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull,
};
use clap::Parser;
use futures::StreamExt;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(about = "Consume runwatch triggers exactly once.")]
struct Args {
    /// NATS server (default: $NATS_URL, else nats://127.0.0.1:4222).
    #[arg(long)]
    url: Option<String>,
    /// The triggers stream (default: $TRIGGERS_STREAM, else RUNWATCH_TRIGGERS).
    #[arg(long)]
    stream: Option<String>,
    /// Durable consumer name, one per application (default: $CONSUMER_DURABLE, else
    /// trigger-consumer).
    #[arg(long)]
    durable: Option<String>,
    /// SQLite file of handled trigger ids (default: $CONSUMER_DB, else trigger-consumer.sqlite).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Seconds before JetStream redelivers an unacked message, when this creates the consumer.
    #[arg(long, default_value_t = 30.0)]
    ack_wait: f64,
    /// Messages per fetch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Exit 0 once no message arrived for this many seconds (default: run forever).
    #[arg(long, value_name = "SECONDS")]
    exit_when_idle: Option<f64>,
    /// For tests: exit with status 3 right after handling the N-th message, before acking it.
    #[arg(long, value_name = "N")]
    crash_after: Option<u64>,
}

fn or_env(value: Option<String>, var: &str, default: &str) -> String {
    value
        .or_else(|| std::env::var(var).ok())
        .unwrap_or_else(|| default.to_string())
}

/// ` flaky=ci:3,lint:2` (workflow:flips), or nothing when no failure is known flaky.
fn flaky_words(known: &[KnownFlaky]) -> String {
    if known.is_empty() {
        return String::new();
    }
    let list: Vec<String> = known
        .iter()
        .map(|k| format!("{}:{}", k.workflow, k.flips))
        .collect();
    format!(" flaky={}", list.join(","))
}

/// The fields of a `runwatch.trigger.v1` message this consumer reads; the rest is kept as
/// the raw body.
#[derive(Deserialize)]
struct Trigger {
    trigger_id: String,
    rule: String,
    repository: Repository,
    pr_number: Option<u64>,
    #[serde(default)]
    failed_workflows: Vec<String>,
    /// By run id; a failed run lists its failed jobs (`jobs`) when runwatch knows them.
    #[serde(default)]
    runs: std::collections::BTreeMap<String, Run>,
    /// What runwatch knew of the pull request (title, author, branches, url, draft, state);
    /// absent before any `pull_request` delivery.
    #[serde(default)]
    pull_request: Option<PullRequest>,
    /// The failed workflows that are known flaky, with their flips (absent when none is).
    #[serde(default)]
    known_flaky: Vec<KnownFlaky>,
}

#[derive(Deserialize)]
struct PullRequest {
    #[serde(default)]
    author: Option<String>,
}

#[derive(Deserialize)]
struct KnownFlaky {
    workflow: String,
    flips: u32,
}

#[derive(Deserialize)]
struct Run {
    #[serde(default)]
    jobs: Vec<Job>,
}

/// A failed job: its name and failed steps are what an agent looks at first.
#[derive(Deserialize)]
struct Job {
    name: String,
    #[serde(default)]
    failed_steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    name: String,
}

impl Trigger {
    /// `job[: step; step]` for each failed job, comma-separated.
    fn failed_jobs(&self) -> String {
        self.runs
            .values()
            .flat_map(|r| &r.jobs)
            .map(|j| {
                let steps: Vec<&str> = j.failed_steps.iter().map(|s| s.name.as_str()).collect();
                if steps.is_empty() {
                    j.name.clone()
                } else {
                    format!("{}: {}", j.name, steps.join("; "))
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Deserialize)]
struct Repository {
    owner: String,
    name: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS handled (
    trigger_id TEXT PRIMARY KEY,
    stream_seq INTEGER NOT NULL,
    handled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS tasks (
    trigger_id TEXT PRIMARY KEY REFERENCES handled (trigger_id),
    repository TEXT NOT NULL,
    pr_number INTEGER,
    failed_workflows TEXT NOT NULL,
    body TEXT NOT NULL
);";

fn open_store(path: &PathBuf) -> Result<Connection> {
    let db = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(SCHEMA)?;
    Ok(db)
}

/// The work a trigger causes, inside the dedupe transaction: here, queue a task.
fn handle(tx: &rusqlite::Transaction<'_>, trigger: &Trigger, body: &str) -> Result<()> {
    let failed = serde_json::to_string(&trigger.failed_workflows)?;
    let pr = trigger.pr_number.and_then(|n| i64::try_from(n).ok());
    tx.execute(
        "INSERT INTO tasks (trigger_id, repository, pr_number, failed_workflows, body) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            trigger.trigger_id,
            format!("{}/{}", trigger.repository.owner, trigger.repository.name),
            pr,
            failed,
            body
        ],
    )?;
    Ok(())
}

/// Handles `trigger` unless its id was handled before; true when it was new.
fn record(db: &mut Connection, trigger: &Trigger, body: &str, stream_seq: u64) -> Result<bool> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seq = i64::try_from(stream_seq).unwrap_or(i64::MAX);
    let inserted = tx.execute(
        "INSERT INTO handled (trigger_id, stream_seq) VALUES (?1, ?2) \
         ON CONFLICT (trigger_id) DO NOTHING",
        params![trigger.trigger_id, seq],
    )?;
    let new = inserted == 1;
    if new {
        handle(&tx, trigger, body)?;
    }
    tx.commit()?; // dropping an uncommitted transaction rolls it back
    Ok(new)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = or_env(args.url, "NATS_URL", "nats://127.0.0.1:4222");
    let stream_name = or_env(args.stream, "TRIGGERS_STREAM", "RUNWATCH_TRIGGERS");
    let durable = or_env(args.durable, "CONSUMER_DURABLE", "trigger-consumer");
    let db_path = args
        .db
        .or_else(|| std::env::var_os("CONSUMER_DB").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("trigger-consumer.sqlite"));
    let ack_wait = Duration::try_from_secs_f64(args.ack_wait).context("--ack-wait")?;
    let idle_limit = args
        .exit_when_idle
        .map(Duration::try_from_secs_f64)
        .transpose()
        .context("--exit-when-idle")?;

    let mut db = open_store(&db_path)?;
    let client = async_nats::connect(&url)
        .await
        .with_context(|| format!("connect to {url}"))?;
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(&stream_name)
        .await
        .with_context(|| format!("stream {stream_name}"))?;
    // Created with this configuration when absent; an existing durable is used as it is.
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1, // never give up on a trigger
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("consumer {durable} on {stream_name}"))?;

    let fetch_wait = Duration::from_secs(1);
    let mut idle = Duration::ZERO;
    let mut handled: u64 = 0;
    let mut out = std::io::stdout();
    while idle_limit.is_none_or(|limit| idle < limit) {
        let mut batch = consumer
            .fetch()
            .max_messages(args.batch)
            .expires(fetch_wait)
            .messages()
            .await
            .context("fetch")?;
        let mut got = false;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
            got = true;
            let seq = msg
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            let body = String::from_utf8_lossy(&msg.payload).into_owned();
            let trigger: Trigger = match serde_json::from_str(&body) {
                Ok(t) => t,
                Err(e) => {
                    // Not a trigger: nothing will ever handle it; say so and stop redelivery.
                    eprintln!("not a trigger at stream sequence {seq}: {e}");
                    msg.ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("term: {e}"))?;
                    continue;
                }
            };
            if record(&mut db, &trigger, &body, seq)? {
                writeln!(
                    out,
                    "handled {} {} {}/{} pr={} failed={} author={} jobs={}{}",
                    trigger.trigger_id,
                    trigger.rule,
                    trigger.repository.owner,
                    trigger.repository.name,
                    trigger
                        .pr_number
                        .map_or("None".to_string(), |n| n.to_string()),
                    trigger.failed_workflows.join(","),
                    trigger
                        .pull_request
                        .as_ref()
                        .and_then(|p| p.author.as_deref())
                        .unwrap_or("-"),
                    trigger.failed_jobs(),
                    flaky_words(&trigger.known_flaky)
                )?;
                out.flush()?;
                handled += 1;
                if args.crash_after.is_some_and(|n| handled >= n) {
                    std::process::exit(3); // committed, not acked: JetStream will redeliver it
                }
            } else {
                writeln!(out, "skipped {}", trigger.trigger_id)?;
                out.flush()?;
            }
            msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        if got {
            idle = Duration::ZERO;
        } else {
            idle += fetch_wait;
        }
    }
    client.flush().await.context("flush the last acks")?;
    Ok(())
}
