//! `runwatch explain`: why a group did or did not fire (the library's `explain` module).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;

use crate::config::Config;
use crate::event::Provider;
use crate::explain::{self, Format, Outcome, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the runs happened.
    #[arg(required_unless_present = "trigger", value_enum)]
    provider: Option<Provider>,
    /// owner/name (case-insensitive).
    #[arg(required_unless_present = "trigger")]
    repository: Option<String>,
    /// The pull request number, or - for a push build.
    #[arg(required_unless_present = "trigger", allow_hyphen_values = true)]
    pr: Option<String>,
    /// The commit (or a unique prefix of it).
    #[arg(required_unless_present = "trigger")]
    commit: Option<String>,
    /// Explain the group a trigger came from instead.
    #[arg(long, value_name = "ID", conflicts_with_all = ["provider", "repository", "pr", "commit"])]
    trigger: Option<uuid::Uuid>,
    /// One JSON object (documented in docs/operations.md) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let target = match (
        args.trigger,
        args.provider,
        args.repository,
        args.pr,
        args.commit,
    ) {
        (Some(id), ..) => Target::Trigger(id),
        (None, Some(p), Some(r), Some(n), Some(c)) => Target::parse(p.as_str(), &r, &n, &c)?,
        _ => bail!("give PROVIDER OWNER/NAME PR COMMIT, or --trigger ID"),
    };
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    match explain::explain_command(config, &target, format).await? {
        Outcome::Found(text) => {
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Outcome::NotFound(why) => {
            eprintln!("runwatch: {why}");
            Ok(ExitCode::from(1))
        }
    }
}
