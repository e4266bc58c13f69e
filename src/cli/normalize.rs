//! `runwatch normalize`: the events a webhook delivery body normalizes to, offline.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::io::open_input;
use crate::config::Config;
use crate::ingest::{Normalized, Source, normalize_delivery};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("provider_event").required(true)))]
pub struct Args {
    /// The X-GitHub-Event value (workflow_run, check_suite, status, pull_request, ping, ...).
    #[arg(long, value_name = "NAME", group = "provider_event")]
    github_event: Option<String>,
    /// The X-Gitlab-Event value ("Pipeline Hook", ...).
    #[arg(long, value_name = "NAME", group = "provider_event")]
    gitlab_event: Option<String>,
    /// The X-Buildkite-Event value (build.finished, ...).
    #[arg(long, value_name = "NAME", group = "provider_event")]
    buildkite_event: Option<String>,
    /// The circleci-event-type value (workflow-completed, ...).
    #[arg(long, value_name = "NAME", group = "provider_event")]
    circleci_event: Option<String>,
    /// The delivery id (X-GitHub-Delivery / X-Gitlab-Event-UUID); default: derived from
    /// the file's SHA-256.
    #[arg(long, value_name = "ID")]
    delivery: Option<String>,
    /// The delivery body (JSON), or - for standard input.
    file: PathBuf,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let (source, name) = match (
        args.github_event,
        args.gitlab_event,
        args.buildkite_event,
        args.circleci_event,
    ) {
        (Some(n), ..) => (Source::Github, n),
        (_, Some(n), ..) => (Source::Gitlab, n),
        (_, _, Some(n), _) => (Source::Buildkite, n),
        (_, _, _, Some(n)) => (Source::Circleci, n),
        _ => bail!("give --github-event, --gitlab-event, --buildkite-event or --circleci-event"),
    };
    let mut body = Vec::new();
    open_input(&args.file)?.read_to_end(&mut body)?;
    let normalized = normalize_delivery(source, &name, args.delivery.as_deref(), &body, config)
        .with_context(|| format!("{}", args.file.display()))?;
    match normalized {
        Normalized::Events(events) => {
            let mut out = std::io::stdout().lock();
            for e in events {
                serde_json::to_writer(&mut out, &e)?;
                out.write_all(b"\n")?;
            }
        }
        Normalized::RunsAndJobs { events, jobs } => {
            let mut out = std::io::stdout().lock();
            for j in jobs {
                serde_json::to_writer(&mut out, &j)?;
                out.write_all(b"\n")?;
            }
            for e in events {
                serde_json::to_writer(&mut out, &e)?;
                out.write_all(b"\n")?;
            }
        }
        Normalized::PullRequest(link) => println!("{}", serde_json::to_string(&link)?),
        Normalized::Ping => eprintln!("ping: answered 200, nothing published"),
        Normalized::Ignored { kind } => {
            eprintln!("{kind}: accepted (202) and counted, not published")
        }
    }
    Ok(ExitCode::SUCCESS)
}
