//! `runwatch publish FILE`: validate events (and pull request heads) and publish them to the
//! inbound stream.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::io::open_input;
use crate::config::Config;
use crate::pull_request::decode_input;
use crate::startup;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON-lines file, or - for standard input.
    file: PathBuf,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let input = open_input(&args.file)?;
    let bus = startup::open_bus(config).await?;
    let (mut published, mut duplicates, mut invalid) = (0u64, 0u64, 0u64);
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode_input(&line, &config.limits) {
            Ok(event) => {
                let ack = bus
                    .publish_event(event.provider(), event.event_id(), bytes::Bytes::from(line))
                    .await
                    .with_context(|| format!("line {}: publishing event {}", i + 1, event.event_id()))?;
                if ack.duplicate {
                    duplicates += 1;
                } else {
                    published += 1;
                }
            }
            Err(r) => {
                invalid += 1;
                eprintln!("line {}: {r}", i + 1);
            }
        }
    }
    println!("published={published} duplicates={duplicates} invalid={invalid}");
    Ok(if invalid > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS })
}
