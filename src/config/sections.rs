//! The whole configuration: one field a section, each section's type in a module of its
//! own (`[ingest]` and `[deliver]` in their subsystems' leaf `config` modules).

use std::path::PathBuf;

use serde::Deserialize;

use super::database::DatabaseConfig;
use super::nats::NatsConfig;
use super::streams::{ConsumerConfig, StreamsConfig};
use super::telemetry::{LogConfig, TelemetryConfig};
use super::worker::{
    HttpConfig, OutboxConfig, PurgeConfig, RetryConfig, ShutdownConfig, TimersConfig,
};
use crate::deliver::config::DeliverConfig;
use crate::engine::rules::RuleConfig;
use crate::event::Limits;
use crate::ingest::config::IngestConfig;

/// The whole configuration, as read from its layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub streams: StreamsConfig,
    pub consumer: ConsumerConfig,
    pub retry: RetryConfig,
    pub outbox: OutboxConfig,
    pub timers: TimersConfig,
    pub purge: PurgeConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub limits: Limits,
    pub log: LogConfig,
    /// `[ingest]`: the webhook server of `runwatch ingest`.
    pub ingest: IngestConfig,
    /// `[deliver]`: `runwatch deliver` and its targets.
    pub deliver: DeliverConfig,
    /// `[telemetry]`: OpenTelemetry export of traces (off unless an endpoint is given).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub rules: Option<Vec<RuleConfig>>,
    #[serde(default)]
    pub rules_file: Option<PathBuf>,
}
