//! `runwatch publish FILE`: validate events (and pull request heads) and publish them to the
//! inbound stream.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::io::open_input;
use crate::config::Config;
use crate::input::BoundedLines;
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
    let mut lines = BoundedLines::new(input, config.limits.max_message_bytes);
    loop {
        let (number, line) = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                // What was published before the bad line stays published (event ids
                // deduplicate a re-run within streams.duplicate_window).
                println!("published={published} duplicates={duplicates} invalid={invalid}");
                return Err(e.into());
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode_input(line, &config.limits) {
            Ok(event) => {
                let ack = bus
                    .publish_event(
                        event.provider(),
                        event.event_id(),
                        bytes::Bytes::copy_from_slice(line),
                    )
                    .await
                    .with_context(|| {
                        format!("line {number}: publishing event {}", event.event_id())
                    })?;
                if ack.duplicate {
                    duplicates += 1;
                } else {
                    published += 1;
                }
            }
            Err(r) => {
                invalid += 1;
                eprintln!("line {number}: {r}");
            }
        }
    }
    println!("published={published} duplicates={duplicates} invalid={invalid}");
    Ok(if invalid > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
