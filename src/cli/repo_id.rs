//! `runwatch repo-id PROVIDER OWNER/NAME`: the seed's `get_repo_id`.

use std::process::ExitCode;

use crate::config::Config;
use crate::event::Provider;
use crate::startup::{self, Schema};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the runs happened.
    #[arg(value_enum)]
    provider: Provider,
    /// owner/name (case-insensitive).
    repository: String,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let provider = args.provider;
    let store = startup::open_store(config, Schema::Check).await?;
    match store.repo_id(provider, &args.repository).await? {
        Some(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "runwatch: repository {provider}:{} is unknown",
                args.repository
            );
            Ok(ExitCode::from(1))
        }
    }
}
