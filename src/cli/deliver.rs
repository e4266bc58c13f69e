//! `runwatch deliver`: triggers to HTTP endpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusHandle;

use super::io::shutdown_on_signal;
use crate::config::{Config, ConfigError};
use crate::deliver::{self, TargetConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deliver every trigger to this one endpoint (target `default`) instead of the
    /// configured [[deliver.targets]].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With --url: a file holding the secret that signs each request (Standard Webhooks
    /// when it holds `whsec_` secrets, else Runwatch-Signature-256).
    #[arg(long, value_name = "FILE", requires = "url")]
    secret_file: Option<PathBuf>,
}

pub async fn run(
    config: Config,
    args: Args,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<ExitCode> {
    let quick = args.url.is_some();
    let targets = match args.url {
        Some(url) => vec![TargetConfig::quick("default", &url, args.secret_file)],
        None => config.deliver.targets.clone(),
    };
    let targets = deliver::target::build(&targets, true).map_err(|e| match e {
        // Errors about the quick-start target name its options.
        ConfigError::Invalid { key, message } if quick => ConfigError::Invalid {
            key: key
                .replace("deliver.targets[0].url", "--url")
                .replace("deliver.targets[0].secret_file", "--secret-file"),
            message,
        },
        e => e,
    })?;
    deliver::run(config, targets, metrics, shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
