//! `runwatch migrate`: apply the migrations (creating the database if configured so). Needs
//! no NATS.

use std::process::ExitCode;

use crate::config::Config;
use crate::startup;

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    startup::migrate(config).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}
