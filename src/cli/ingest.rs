//! `runwatch ingest`: the webhook server.

use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusHandle;

use super::io::shutdown_on_signal;
use crate::config::Config;

pub async fn run(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<ExitCode> {
    crate::ingest::run(config, metrics, shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
