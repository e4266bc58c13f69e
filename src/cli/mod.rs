//! The `runwatch` command line: one module per command, each with its arguments (clap) and
//! a short `run` that opens what it needs through [`crate::startup`]. `anyhow` lives here, at
//! the binary's edge; the library returns typed errors.
//!
//! Exit statuses: 0 success, 1 unknown repository (`repo-id`) or group (`explain`), 2 an error (bad
//! configuration, a service unreachable, a task that ended unexpectedly), 3 some input was
//! refused (`publish`, `simulate`, `dead redrive`).

mod dead;
mod deliver;
mod explain;
mod groups;
mod ingest;
mod io;
mod migrate;
mod normalize;
mod publish;
mod purge;
mod replay;
mod repo_id;
mod run;
mod simulate;
mod triggers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry;

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
    Run(run::Args),
    /// Apply the database migrations (creating the database if missing) and exit.
    Migrate,
    /// Validate events (JSON lines) and publish them to the inbound stream with
    /// Nats-Msg-Id = event_id, awaiting every PubAck. Invalid lines are reported and skipped
    /// (exit status 3).
    Publish(publish::Args),
    /// Read triggers from the outbound stream.
    Triggers {
        #[command(subcommand)]
        command: triggers::Command,
    },
    /// Run the rule engine over a file of events with no NATS and no database, and print
    /// every trigger that would fire, one JSON object per line. Time is event time. A
    /// malformed line is reported on stderr with its line number and skipped (exit status 3).
    Simulate(simulate::Args),
    /// Delete groups not updated for the given time (never one whose trigger is unsent or
    /// whose timer is pending), in batches; print the number of groups deleted.
    Purge(purge::Args),
    /// Print a repository's internal id; exit status 1 when it is unknown.
    RepoId(repo_id::Args),
    /// Serve the webhook ingest on ingest.listen: POST /webhooks/github (X-Hub-Signature-256)
    /// and /webhooks/gitlab (X-Gitlab-Token), /healthz, /readyz, /metrics. Deliveries are
    /// normalized and published to the inbound stream; 2xx only after the PubAck.
    Ingest,
    /// Print the events a webhook delivery normalizes to, as JSON lines (nothing for ping or
    /// an event type that is not published).
    Normalize(normalize::Args),
    /// Re-apply events from the inbound stream (from a sequence or a time up to the last
    /// sequence at start) through the worker's store code, publishing what fires; a
    /// progress bar goes to stderr. Trigger ids are deterministic, so a replay into the same
    /// database publishes nothing new. With --dry-run, evaluate from an empty state in
    /// memory instead (what would these rules have fired?), touching no database.
    Replay(replay::Args),
    /// Why a group did or did not fire: its merged runs and, for every configured rule, a
    /// verdict with its reason. Reads the database only (no lock); exit status 1 when the
    /// group is unknown. Use the rules the workers run with.
    Explain(explain::Args),
    /// List groups (newest first); reads the database only (no lock).
    Groups {
        #[command(subcommand)]
        command: groups::Command,
    },
    /// Deliver triggers to HTTP endpoints: one durable consumer per [[deliver.targets]]
    /// entry (or one endpoint with --url), signed POSTs, retries with backoff across
    /// restarts, dead letters for what is refused. Serves /healthz, /readyz and /metrics on
    /// http.listen.
    Deliver(deliver::Args),
    /// Inspect and redrive the dead-letter stream.
    Dead {
        #[command(subcommand)]
        command: dead::Command,
    },
}

/// How much a command logs.
enum Logging {
    /// Long-running services: the configured level and format, and metrics.
    Service,
    /// One-shot commands: warnings and errors only (RUST_LOG still wins).
    Quiet,
    /// Offline commands whose output is the point: nothing.
    None,
}

impl Command {
    fn logging(&self) -> Logging {
        match self {
            Command::Run(_) | Command::Ingest | Command::Deliver(_) => Logging::Service,
            Command::Simulate(_) | Command::Normalize(_) => Logging::None,
            _ => Logging::Quiet,
        }
    }
}

/// Parses the command line and runs it.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            telemetry::report_fatal(&error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes, each cause once: many errors already print their source in
/// their own message (`configuration: key `rules`: ...`), so a cause whose text is already
/// shown is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // `migrate` needs the database only: it reads no NATS secret file.
    let config = match cli.command {
        Command::Migrate => Config::load_without_nats_secrets(cli.config.as_deref())?,
        _ => Config::load(cli.config.as_deref())?,
    };
    // `[[deliver.targets]]` as far as it can be checked without reading deliver's files
    // and variables (which `runwatch deliver` reads): the same check for every command.
    crate::deliver::target::check(&config.deliver.targets)?;
    let metrics = match cli.command.logging() {
        Logging::Service => {
            telemetry::init_tracing(&config.log)?;
            // The services export spans when an OTLP endpoint is configured, of the share
            // of new traces the sample ratio says.
            crate::trace_context::set_sample_ratio(config.telemetry.sample_ratio()?);
            if let Some(endpoint) = config.telemetry.endpoint()? {
                crate::trace_export::init(&endpoint, "runwatch")?;
            }
            Some(telemetry::init_metrics()?)
        }
        Logging::Quiet => {
            let mut log = config.log.clone();
            log.level = "warn".into();
            telemetry::init_tracing(&log)?;
            None
        }
        Logging::None => None,
    };
    let result = match cli.command {
        Command::Run(args) => run::run(config, args, metrics).await,
        Command::Migrate => migrate::run(&config).await,
        Command::Publish(args) => publish::run(&config, args).await,
        Command::Triggers { command } => triggers::run(&config, command).await,
        Command::Simulate(args) => simulate::run(&config, args),
        Command::Purge(args) => purge::run(&config, args).await,
        Command::RepoId(args) => repo_id::run(&config, args).await,
        Command::Ingest => ingest::run(config, metrics).await,
        Command::Normalize(args) => normalize::run(&config, args),
        Command::Replay(args) => replay::run(&config, args).await,
        Command::Deliver(args) => deliver::run(config, args, metrics).await,
        Command::Dead { command } => dead::run(&config, command).await,
        Command::Explain(args) => explain::run(&config, args).await,
        Command::Groups { command } => groups::run(&config, command).await,
    };
    // Spans still queued are sent before the process ends.
    crate::trace_export::shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("inner detail")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Silent(#[source] Inner);

    #[test]
    fn each_cause_is_shown_once() {
        let e = anyhow::Error::new(Repeats(Inner)).context("doing x");
        assert_eq!(error_text(&e), "doing x: outer: inner detail");
        let e = anyhow::Error::new(Silent(Inner));
        assert_eq!(error_text(&e), "outer: inner detail");
    }
}
