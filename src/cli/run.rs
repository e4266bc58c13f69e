//! `runwatch run`: the worker.

use std::process::ExitCode;

use anyhow::bail;
use metrics_exporter_prometheus::PrometheusHandle;

use super::io::shutdown_on_signal;
use crate::config::Config;
use crate::worker::{self, Fault, RunOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not apply migrations (the database role needs no DDL rights); the schema is
    /// checked instead, and a missing migration is an error naming it.
    #[arg(long)]
    no_migrate: bool,
}

pub async fn run(
    config: Config,
    args: Args,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<ExitCode> {
    let options = RunOptions {
        no_migrate: args.no_migrate,
        fault: fault_from_env()?,
    };
    worker::run(config, options, metrics, shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Test-only faults (`RUNWATCH_CRASH_AFTER_COMMIT=1`, `RUNWATCH_FAULT=consume_exit|consume_panic`),
/// in a build with the `fault-injection` feature (`make test`).
#[cfg(feature = "fault-injection")]
fn fault_from_env() -> anyhow::Result<Option<Fault>> {
    if std::env::var("RUNWATCH_CRASH_AFTER_COMMIT").is_ok_and(|v| v == "1") {
        return Ok(Some(Fault::CrashAfterCommit));
    }
    match std::env::var("RUNWATCH_FAULT").as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("consume_exit") => Ok(Some(Fault::ConsumeExit)),
        Ok("consume_panic") => Ok(Some(Fault::ConsumePanic)),
        Ok(other) => bail!("RUNWATCH_FAULT={other:?}: expected consume_exit or consume_panic"),
    }
}

/// Without the `fault-injection` feature the test-only variables are refused, not ignored.
#[cfg(not(feature = "fault-injection"))]
fn fault_from_env() -> anyhow::Result<Option<Fault>> {
    for var in ["RUNWATCH_CRASH_AFTER_COMMIT", "RUNWATCH_FAULT"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            bail!(
                "{var} is set, but this build has no fault injection (a test-only cargo feature, `fault-injection`)"
            );
        }
    }
    Ok(None)
}
