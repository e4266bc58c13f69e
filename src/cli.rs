//! The `runwatch` command line (clap) and its dispatch. `anyhow` lives here, at the
//! binary's edge; the library returns typed errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, load_rules_file};
use crate::engine::{Engine, RuleSet};
use crate::event::{Limits, Provider, decode};
use crate::store::{self, Store, StoreOptions};
use crate::{bus, simulate, telemetry, worker};

/// runwatch decides, exactly once, when a pull request's CI has finished badly enough that
/// someone should step in. It consumes workflow-run events from NATS JetStream, merges and
/// judges them in Postgres under row locks, and publishes WorkflowRunGroup triggers.
#[derive(Debug, Parser)]
#[command(name = "runwatch", version, about)]
pub struct Cli {
    /// Configuration file (TOML) layered over the defaults; RUNWATCH_<SECTION>__<KEY>,
    /// DATABASE_URL and NATS_URL override it.
    #[arg(long, global = true, value_name = "FILE", env = "RUNWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: create/update the streams and the durable consumer, apply
    /// migrations, then consume, decide and publish until SIGTERM/SIGINT. Serves /healthz,
    /// /readyz and /metrics on http.listen.
    Run {
        /// Do not apply migrations (the database role needs no DDL rights).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply the database migrations (creating the database if missing) and exit.
    Migrate,
    /// Validate events (JSON lines) and publish them to the inbound stream with
    /// Nats-Msg-Id = event_id, awaiting every PubAck. Invalid lines are reported and skipped
    /// (exit status 3).
    Publish {
        /// A JSON-lines file, or - for standard input.
        file: PathBuf,
    },
    /// Read triggers from the outbound stream.
    Triggers {
        #[command(subcommand)]
        command: TriggersCommand,
    },
    /// Run the rule engine over a file of events with no NATS and no database, and print
    /// every trigger that would fire, one JSON object per line. Time is event time. A
    /// malformed line is reported on stderr with its line number and skipped (exit status 3).
    Simulate {
        /// A rules file ([[rules]] array) replacing the configured rules.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        /// A JSON-lines file of events, or - for standard input.
        events: PathBuf,
    },
    /// Delete groups not updated for the given time (never one whose trigger is unsent or
    /// whose timer is pending), in batches; print the number of groups deleted.
    Purge {
        /// e.g. 30d, 12h.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Duration,
    },
    /// Print a repository's internal id; exit status 1 when it is unknown.
    RepoId {
        /// github, gitlab, bitbucket, azure_devops or generic.
        provider: String,
        /// owner/name (case-insensitive).
        repository: String,
    },
    /// Serve the webhook ingest on ingest.listen: POST /webhooks/github (X-Hub-Signature-256)
    /// and /webhooks/gitlab (X-Gitlab-Token), /healthz, /readyz, /metrics. Deliveries are
    /// normalized and published to the inbound stream; 2xx only after the PubAck.
    Ingest,
    /// Print the events a webhook delivery normalizes to, as JSON lines (nothing for ping or
    /// an event type that is not published).
    Normalize {
        /// The X-GitHub-Event value (workflow_run, ping, ...).
        #[arg(long, value_name = "NAME", required_unless_present = "gitlab_event", conflicts_with = "gitlab_event")]
        github_event: Option<String>,
        /// The X-Gitlab-Event value ("Pipeline Hook", ...).
        #[arg(long, value_name = "NAME")]
        gitlab_event: Option<String>,
        /// The delivery id (X-GitHub-Delivery / X-Gitlab-Event-UUID); default: derived from
        /// the file's SHA-256.
        #[arg(long, value_name = "ID")]
        delivery: Option<String>,
        /// The delivery body (JSON), or - for standard input.
        file: PathBuf,
    },
    /// Re-apply events from the inbound stream (from a sequence or a time up to the last
    /// sequence at start) through the worker's store code, publishing what fires; a
    /// progress bar goes to stderr. Trigger ids are deterministic, so a replay into the same
    /// database publishes nothing new.
    Replay {
        /// First stream sequence to replay.
        #[arg(long, value_name = "N", required_unless_present = "since", conflicts_with = "since")]
        from_seq: Option<u64>,
        /// Replay messages stored since this time: RFC 3339, or a duration ago (e.g. 2h).
        #[arg(long, value_name = "TIME", value_parser = crate::replay::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Print the triggers that would fire (JSON lines); write and publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Inspect and redrive the dead-letter stream.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters: sequence, reason, original subject and sequence, detail, and a
    /// payload excerpt.
    List {
        /// Characters of the payload to show.
        #[arg(long, value_name = "N", default_value_t = 120)]
        excerpt: usize,
    },
    /// Republish dead letters' original payloads to their original subjects (with a fresh
    /// Nats-Msg-Id `redrive-<dead stream>-<seq>`), then delete them from the dead stream.
    Redrive {
        /// The dead letter's sequence (as `dead list` shows it).
        #[arg(long, value_name = "N", required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// Print triggers as JSON lines as they are published.
    Tail {
        /// Start from the first trigger in the stream instead of new ones only.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many triggers.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop when no trigger arrives for this long (e.g. 5s); default: wait forever.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
}

/// Parses the command line and runs it.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            telemetry::report_fatal(&format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// One-shot commands log warnings and errors only (RUST_LOG still wins).
fn init_quiet_tracing(config: &Config) -> anyhow::Result<()> {
    let mut log = config.log.clone();
    log.level = "warn".into();
    telemetry::init_tracing(&log)?;
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Simulate { rules, events } => {
            // simulate needs no services; the configuration is read only for rules/limits.
            let config = load_config(cli.config.as_deref())?;
            let rule_set = match rules {
                Some(path) => load_rules_file(&path)?,
                None => config.rule_set()?,
            };
            run_simulate(rule_set, config.limits, &events)
        }
        Command::Run { no_migrate } => {
            let config = load_config(cli.config.as_deref())?;
            telemetry::init_tracing(&config.log)?;
            let metrics = telemetry::init_metrics()?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_watch(shutdown.clone()));
            let options = worker::RunOptions {
                no_migrate,
                crash_after_commit: std::env::var("RUNWATCH_CRASH_AFTER_COMMIT").is_ok_and(|v| v == "1"),
            };
            worker::run(config, options, Some(metrics), shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            if config.database.create_if_missing {
                store::create_database_if_missing(&config.database.url).await?;
            }
            let pool = store::connect(&config.database).await?;
            store::migrate(&pool).await?;
            pool.close().await;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish { file } => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            run_publish(&config, &file).await
        }
        Command::Triggers {
            command: TriggersCommand::Tail { from_start, count, timeout },
        } => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            run_tail(&config, from_start, count, timeout).await
        }
        Command::Purge { older_than } => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            crate::config::check_duration("--older-than", &crate::config::PURGE_OLDER_THAN, older_than)?;
            let store = open_store(&config).await?;
            let n = store.purge(older_than, config.purge.batch).await?;
            println!("{n}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest => {
            let config = load_config(cli.config.as_deref())?;
            telemetry::init_tracing(&config.log)?;
            let metrics = telemetry::init_metrics()?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_watch(shutdown.clone()));
            crate::ingest::run(config, Some(metrics), shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Normalize { github_event, gitlab_event, delivery, file } => {
            let config = load_config(cli.config.as_deref())?;
            let (source, name) = match (github_event, gitlab_event) {
                (Some(n), _) => (crate::ingest::Source::Github, n),
                (None, Some(n)) => (crate::ingest::Source::Gitlab, n),
                (None, None) => bail!("give --github-event or --gitlab-event"),
            };
            let mut body = Vec::new();
            open_input(&file)?.read_to_end(&mut body)?;
            let normalized =
                crate::ingest::normalize_delivery(source, &name, delivery.as_deref(), &body, &config.limits)
                    .with_context(|| format!("{}", file.display()))?;
            match normalized {
                crate::ingest::Normalized::Events(events) => {
                    let mut out = std::io::stdout().lock();
                    for e in events {
                        serde_json::to_writer(&mut out, &e)?;
                        out.write_all(b"\n")?;
                    }
                }
                crate::ingest::Normalized::Ping => eprintln!("ping: answered 200, nothing published"),
                crate::ingest::Normalized::Ignored { kind } => {
                    eprintln!("{kind}: accepted (202) and counted, not published")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { from_seq, since, dry_run } => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            let from = match (from_seq, since) {
                (Some(n), _) => bus::EventsFrom::Sequence(n),
                (None, Some(t)) => bus::EventsFrom::Time(t),
                (None, None) => bail!("give --from-seq or --since"),
            };
            let store = open_store(&config).await?;
            let bus = bus::Bus::connect(&config).await?;
            bus.ensure_streams().await?;
            let options = crate::replay::ReplayOptions { from, dry_run, progress: true };
            let mut out = std::io::stdout().lock();
            let r = crate::replay::replay(&config, &store, &bus, options, &mut out).await?;
            let range = r.sequences.map_or_else(|| "-".to_string(), |(a, b)| format!("{a}..={b}"));
            eprintln!(
                "replayed sequences {range}: read={} applied={} invalid={} rejected={} {}={} published={} publish_failed={}",
                r.read, r.applied, r.invalid, r.rejected,
                if dry_run { "would_fire" } else { "triggers" }, r.triggers.len(), r.published, r.publish_failed
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dead { command } => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            let bus = bus::Bus::connect(&config).await?;
            bus.ensure_streams().await?;
            match command {
                DeadCommand::List { excerpt } => {
                    let mut out = std::io::stdout().lock();
                    let n = crate::replay::dead_list(&bus, excerpt, &mut out).await?;
                    eprintln!("{n} dead letters");
                    Ok(ExitCode::SUCCESS)
                }
                DeadCommand::Redrive { seq, all } => {
                    let selection = match (seq, all) {
                        (Some(n), _) => crate::replay::RedriveSelection::Sequence(n),
                        (None, true) => crate::replay::RedriveSelection::All,
                        (None, false) => bail!("give --seq N or --all"),
                    };
                    let r = crate::replay::redrive(&bus, selection).await?;
                    for (dead, seq) in &r.redriven {
                        println!("redriven dead_seq={dead} new_seq={seq}");
                    }
                    for (dead, why) in &r.refused {
                        eprintln!("refused dead_seq={dead}: {why}");
                    }
                    eprintln!("redriven={} refused={}", r.redriven.len(), r.refused.len());
                    Ok(if r.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
                }
            }
        }
        Command::RepoId { provider, repository } => {
            let config = load_config(cli.config.as_deref())?;
            init_quiet_tracing(&config)?;
            let Some(provider) = Provider::parse(&provider) else {
                bail!("unknown provider {provider:?} (github, gitlab, bitbucket, azure_devops, generic)");
            };
            let store = open_store(&config).await?;
            match store.repo_id(provider, &repository).await? {
                Some(id) => {
                    println!("{id}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("runwatch: repository {provider}:{repository} is unknown");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let engine = Arc::new(Engine::new(config.rule_set()?, config.limits));
    let pool = store::connect(&config.database).await?;
    Ok(Store::new(pool, engine, StoreOptions::from_config(config)))
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(BufReader::new(std::io::stdin())))
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Box::new(BufReader::new(f)))
    }
}

fn run_simulate(rules: RuleSet, limits: Limits, events: &Path) -> anyhow::Result<ExitCode> {
    let input = open_input(events)?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let report = simulate::run(
        Engine::new(rules, limits),
        limits,
        input,
        stdout.lock(),
        stderr.lock(),
    )?;
    Ok(if report.rejected > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_publish(config: &Config, file: &Path) -> anyhow::Result<ExitCode> {
    let input = open_input(file)?;
    let bus = bus::Bus::connect(config).await?;
    bus.ensure_streams().await?;
    let (mut published, mut duplicates, mut invalid) = (0u64, 0u64, 0u64);
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode(&line, &config.limits) {
            Ok(event) => {
                let ack = bus
                    .publish_event(event.provider, &event.event_id, bytes::Bytes::from(line))
                    .await
                    .with_context(|| format!("line {}: publishing event {}", i + 1, event.event_id))?;
                if ack.duplicate {
                    duplicates += 1;
                } else {
                    published += 1;
                }
            }
            Err(r) => {
                invalid += 1;
                eprintln!("line {}: {r}", i + 1);
            }
        }
    }
    println!("published={published} duplicates={duplicates} invalid={invalid}");
    Ok(if invalid > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

async fn run_tail(
    config: &Config,
    from_start: bool,
    count: Option<u64>,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let bus = bus::Bus::connect(config).await?;
    bus.ensure_streams().await?;
    let mut messages = Box::pin(bus.trigger_messages(from_start).await?);
    let mut seen = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        let next = match timeout {
            Some(t) => match tokio::time::timeout(t, messages.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => messages.next().await,
        };
        let Some(next) = next else { break };
        let (_, payload) = next?;
        out.write_all(&payload)?;
        out.write_all(b"\n")?;
        out.flush()?;
        seen += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn signal_watch(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received");
    shutdown.cancel();
}
