//! `runwatch purge --older-than DURATION`: the seed's `clean_old_convos`.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use crate::startup::{self, Schema};
use crate::store::PurgePace;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    older_than: Duration,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    crate::config::check_duration(
        "--older-than",
        &crate::config::PURGE_OLDER_THAN,
        args.older_than,
    )?;
    let store = startup::open_store(config, Schema::Check).await?;
    let n = store
        .purge(PurgePace {
            older_than: args.older_than,
            batch: config.purge.batch,
            pause: config.purge.pause,
        })
        .await?;
    println!("{n}");
    Ok(ExitCode::SUCCESS)
}
