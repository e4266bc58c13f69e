//! `runwatch groups list`: groups, newest first (the library's `explain` module).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use crate::explain::{self, Format, GroupStateFilter, ListOptions};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A table of groups, most recently written first; reads the database only (no lock).
    List {
        /// Only this repository (owner/name, case-insensitive).
        #[arg(long, value_name = "OWNER/NAME")]
        repo: Option<String>,
        /// Only groups in this state.
        #[arg(long, value_enum)]
        state: Option<GroupStateFilter>,
        /// Only groups written within this long (e.g. 2h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// At most this many groups.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: Command) -> anyhow::Result<ExitCode> {
    let Command::List {
        repo,
        state,
        since,
        limit,
        json,
    } = command;
    let options = ListOptions {
        repo,
        state,
        since,
        limit,
    };
    let format = if json { Format::Json } else { Format::Text };
    let text = explain::groups_list_command(config, &options, format).await?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
