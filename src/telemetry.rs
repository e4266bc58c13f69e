//! Tracing (text or JSON logs on stderr) and the Prometheus metrics recorder.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configuration key `log.level`: {0}")]
    Filter(String),
    #[error("metrics recorder: {0}")]
    Metrics(String),
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, wins over `log.level`.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init_tracing(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = match config.format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
}

/// Latency buckets in seconds, for the transaction, publish and end-to-end histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the global metrics recorder and returns the handle that renders `/metrics`.
pub fn init_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let err = |e: metrics_exporter_prometheus::BuildError| TelemetryError::Metrics(e.to_string());
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Full("runwatch_batch_size".into()), SIZE_BUCKETS)
        .map_err(err)?
        .install_recorder()
        .map_err(err)
}
