//! `runwatch simulate`: the rule engine over a file, no services, event time.

use std::path::PathBuf;
use std::process::ExitCode;

use super::io::open_input;
use crate::config::{Config, load_rules_file};
use crate::engine::Engine;
use crate::simulate;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A rules file ([[rules]] array) replacing the configured rules.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// A JSON-lines file of events, or - for standard input.
    events: PathBuf,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let rules = match args.rules {
        Some(path) => load_rules_file(&path)?,
        None => config.rule_set()?,
    };
    let input = open_input(&args.events)?;
    let report = simulate::run(
        Engine::new(rules, config.limits),
        config.limits,
        input,
        std::io::stdout().lock(),
        std::io::stderr().lock(),
    )?;
    Ok(if report.rejected > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
