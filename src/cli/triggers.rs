//! `runwatch triggers tail`: print triggers from the outbound stream.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;

use crate::config::Config;
use crate::startup;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
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

pub async fn run(config: &Config, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Tail {
        from_start,
        count,
        timeout,
    } = command;
    let bus = startup::open_bus(config).await?;
    let mut messages = Box::pin(bus.trigger_messages(from_start).await?);
    let mut seen = 0u64;
    let mut out = std::io::stdout().lock();
    while count.is_none_or(|c| seen < c) {
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
