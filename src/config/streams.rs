//! `[streams]` and `[consumer]`: the JetStream streams and the worker's durable consumer.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub events: String,
    pub events_subject_prefix: String,
    pub triggers: String,
    pub triggers_subject_prefix: String,
    pub dead: String,
    pub dead_subject_prefix: String,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    pub replicas: usize,
    /// How long the events stream keeps a message (JetStream `max_age`).
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    /// The events stream's size bound (`max_bytes`); the oldest messages go first.
    pub events_max_bytes: i64,
    /// How long the triggers stream keeps a trigger.
    #[serde(with = "humantime_serde")]
    pub triggers_max_age: Duration,
    /// The triggers stream's size bound.
    pub triggers_max_bytes: i64,
    /// How long the dead-letter stream keeps a letter.
    #[serde(with = "humantime_serde")]
    pub dead_max_age: Duration,
    /// The dead-letter stream's size bound.
    pub dead_max_bytes: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub durable: String,
    pub batch_size: usize,
    /// Record transactions of one batch in flight at once, on disjoint repositories
    /// (`worker::lanes`).
    pub lanes: usize,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    pub max_deliver: u32,
    pub max_ack_pending: i64,
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}
