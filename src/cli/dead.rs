//! `runwatch dead list` and `runwatch dead redrive`.

use std::process::ExitCode;

use anyhow::bail;

use crate::config::Config;
use crate::dead_letters::{self, RedriveSelection};
use crate::startup;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
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
        #[arg(
            long,
            value_name = "N",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        seq: Option<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(config: &Config, command: Command) -> anyhow::Result<ExitCode> {
    let bus = startup::open_bus(config).await?;
    match command {
        Command::List { excerpt } => {
            let n = dead_letters::dead_list(&bus, excerpt, &mut std::io::stdout().lock()).await?;
            eprintln!("{n} dead letters");
            Ok(ExitCode::SUCCESS)
        }
        Command::Redrive { seq, all } => {
            let selection = match (seq, all) {
                (Some(n), _) => RedriveSelection::Sequence(n),
                (None, true) => RedriveSelection::All,
                (None, false) => bail!("give --seq N or --all"),
            };
            let r = dead_letters::redrive(&bus, selection).await?;
            for (dead, seq) in &r.redriven {
                println!("redriven dead_seq={dead} new_seq={seq}");
            }
            for (dead, why) in &r.refused {
                eprintln!("refused dead_seq={dead}: {why}");
            }
            eprintln!("redriven={} refused={}", r.redriven.len(), r.refused.len());
            Ok(if r.refused.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
    }
}
