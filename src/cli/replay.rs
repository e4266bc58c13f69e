//! `runwatch replay`: history through the live store, or (`--dry-run`) through the engine
//! from an empty state in memory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::bus::EventsFrom;
use crate::config::{Config, load_rules_file};
use crate::engine::Engine;
use crate::replay::{self, ReplayOptions};
use crate::startup::{self, Schema};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First stream sequence to replay.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "since",
        conflicts_with = "since"
    )]
    from_seq: Option<u64>,
    /// Replay messages stored since this time: RFC 3339, or a duration ago (e.g. 2h).
    #[arg(long, value_name = "TIME", value_parser = replay::parse_since)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Evaluate from an empty state in memory, as `simulate` does, and print the triggers
    /// that would fire (JSON lines); never touches the database.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: the rules to evaluate instead of the configured ones.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    rules: Option<PathBuf>,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let from = match (args.from_seq, args.since) {
        (Some(n), _) => EventsFrom::Sequence(n),
        (None, Some(t)) => EventsFrom::Time(t),
        (None, None) => bail!("give --from-seq or --since"),
    };
    let options = ReplayOptions {
        from,
        progress: true,
    };
    let bus = startup::open_bus(config).await?;
    let r = if args.dry_run {
        let rules = match args.rules {
            Some(path) => load_rules_file(&path)?,
            None => config.rule_set()?,
        };
        let mut out = std::io::stdout().lock();
        replay::dry_run(
            config,
            Engine::new(rules, config.limits),
            &bus,
            options,
            &mut out,
        )
        .await?
    } else {
        let store = startup::open_store(config, Schema::Check).await?;
        replay::replay(config, &store, &bus, options).await?
    };
    let range = r
        .sequences
        .map_or_else(|| "-".to_string(), |(a, b)| format!("{a}..={b}"));
    eprintln!(
        "replayed sequences {range}: read={} applied={} invalid={} rejected={} {}={} published={} publish_failed={}",
        r.read,
        r.applied,
        r.invalid,
        r.rejected,
        if args.dry_run {
            "would_fire"
        } else {
            "triggers"
        },
        r.triggers.len(),
        r.published,
        r.publish_failed
    );
    Ok(ExitCode::SUCCESS)
}
