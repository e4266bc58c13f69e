//! Every numeric key of the configuration and its range.

use super::bounds::{
    Bounds, DAY, HOUR, MIB, MINUTE, Number, PURGE_OLDER_THAN, TIB, dur, int, int_or_off, millis, n,
    secs, size,
};
use super::sections::Config;

/// One numeric configuration key and its range.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange {
    /// `section.key`.
    pub key: &'static str,
    /// What is accepted.
    pub bounds: Bounds,
    /// Reads the value from a configuration.
    pub get: fn(&Config) -> Number,
}

/// Every numeric configuration key and its range: [`Config::validate`] checks exactly
/// these, a test checks both ends of each, and another that the README shows the same.
/// The upper ends keep every sum and product on these values far from overflow (a settle
/// or cooldown of at most 365 days added to any time an event can carry, for instance).
pub const RANGES: &[KeyRange] = &[
    KeyRange {
        key: "database.max_connections",
        bounds: int(1, 1000),
        get: |c| n(c.database.max_connections),
    },
    KeyRange {
        key: "database.acquire_timeout",
        bounds: dur(millis(10), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.database.acquire_timeout),
    },
    KeyRange {
        key: "database.lock_timeout",
        bounds: dur(millis(10), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.database.lock_timeout),
    },
    KeyRange {
        key: "database.statement_timeout",
        bounds: dur(millis(100), secs(HOUR)),
        get: |c| Number::Duration(c.database.statement_timeout),
    },
    KeyRange {
        key: "nats.connect_timeout",
        bounds: dur(millis(100), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.nats.connect_timeout),
    },
    KeyRange {
        key: "nats.request_timeout",
        bounds: dur(millis(100), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.nats.request_timeout),
    },
    KeyRange {
        key: "streams.duplicate_window",
        bounds: dur(secs(10), secs(DAY)),
        get: |c| Number::Duration(c.streams.duplicate_window),
    },
    KeyRange {
        key: "streams.replicas",
        bounds: int(1, 5),
        get: |c| size(c.streams.replicas),
    },
    KeyRange {
        key: "streams.events_max_age",
        bounds: dur(secs(HOUR), secs(3650 * DAY)),
        get: |c| Number::Duration(c.streams.events_max_age),
    },
    KeyRange {
        key: "streams.events_max_bytes",
        bounds: int_or_off(MIB, 64 * TIB),
        get: |c| n(c.streams.events_max_bytes),
    },
    KeyRange {
        key: "streams.triggers_max_age",
        bounds: dur(secs(HOUR), secs(3650 * DAY)),
        get: |c| Number::Duration(c.streams.triggers_max_age),
    },
    KeyRange {
        key: "streams.triggers_max_bytes",
        bounds: int_or_off(MIB, 64 * TIB),
        get: |c| n(c.streams.triggers_max_bytes),
    },
    KeyRange {
        key: "streams.dead_max_age",
        bounds: dur(secs(HOUR), secs(3650 * DAY)),
        get: |c| Number::Duration(c.streams.dead_max_age),
    },
    KeyRange {
        key: "streams.dead_max_bytes",
        bounds: int_or_off(MIB, 64 * TIB),
        get: |c| n(c.streams.dead_max_bytes),
    },
    KeyRange {
        key: "consumer.batch_size",
        bounds: int(1, 4096),
        get: |c| size(c.consumer.batch_size),
    },
    KeyRange {
        key: "consumer.lanes",
        bounds: int(1, 64),
        get: |c| size(c.consumer.lanes),
    },
    KeyRange {
        key: "consumer.linger",
        bounds: dur(secs(0), secs(10)),
        get: |c| Number::Duration(c.consumer.linger),
    },
    KeyRange {
        key: "consumer.ack_wait",
        bounds: dur(secs(1), secs(HOUR)),
        get: |c| Number::Duration(c.consumer.ack_wait),
    },
    KeyRange {
        key: "consumer.max_deliver",
        bounds: int(1, 1000),
        get: |c| n(c.consumer.max_deliver),
    },
    KeyRange {
        key: "consumer.max_ack_pending",
        bounds: int(1, 1_000_000),
        get: |c| n(c.consumer.max_ack_pending),
    },
    KeyRange {
        key: "consumer.heartbeat",
        bounds: dur(millis(100), secs(MINUTE)),
        get: |c| Number::Duration(c.consumer.heartbeat),
    },
    KeyRange {
        key: "retry.min_delay",
        bounds: dur(millis(1), secs(HOUR)),
        get: |c| Number::Duration(c.retry.min_delay),
    },
    KeyRange {
        key: "retry.max_delay",
        bounds: dur(millis(1), secs(HOUR)),
        get: |c| Number::Duration(c.retry.max_delay),
    },
    KeyRange {
        key: "retry.factor",
        bounds: Bounds::Float {
            min: 1.0,
            max: 10.0,
        },
        get: |c| Number::Float(f64::from(c.retry.factor)),
    },
    KeyRange {
        key: "retry.transaction_attempts",
        bounds: int(1, 100),
        get: |c| n(c.retry.transaction_attempts),
    },
    KeyRange {
        key: "outbox.relay_interval",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.outbox.relay_interval),
    },
    KeyRange {
        key: "outbox.lease",
        bounds: dur(secs(1), secs(30 * MINUTE)),
        get: |c| Number::Duration(c.outbox.lease),
    },
    KeyRange {
        key: "outbox.relay_batch",
        bounds: int(1, 10_000),
        get: |c| n(c.outbox.relay_batch),
    },
    KeyRange {
        key: "timers.interval",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.timers.interval),
    },
    KeyRange {
        key: "timers.batch",
        bounds: int(1, 10_000),
        get: |c| n(c.timers.batch),
    },
    KeyRange {
        key: "purge.interval",
        bounds: Bounds::Duration {
            min: secs(1),
            max: secs(30 * DAY),
            off: true,
        },
        get: |c| Number::Duration(c.purge.interval),
    },
    KeyRange {
        key: "purge.older_than",
        bounds: PURGE_OLDER_THAN,
        get: |c| Number::Duration(c.purge.older_than),
    },
    KeyRange {
        key: "purge.batch",
        bounds: int(1, 100_000),
        get: |c| n(c.purge.batch),
    },
    KeyRange {
        key: "purge.pause",
        bounds: dur(millis(0), secs(MINUTE)),
        get: |c| Number::Duration(c.purge.pause),
    },
    KeyRange {
        key: "shutdown.timeout",
        bounds: dur(secs(1), secs(HOUR)),
        get: |c| Number::Duration(c.shutdown.timeout),
    },
    KeyRange {
        key: "limits.max_message_bytes",
        bounds: int(1024, 64 * MIB),
        get: |c| size(c.limits.max_message_bytes),
    },
    KeyRange {
        key: "limits.max_metadata_bytes",
        bounds: int(16, 64 * MIB),
        get: |c| size(c.limits.max_metadata_bytes),
    },
    KeyRange {
        key: "limits.max_string_bytes",
        bounds: int(64, MIB),
        get: |c| size(c.limits.max_string_bytes),
    },
    KeyRange {
        key: "limits.max_runs_per_group",
        bounds: int(1, 100_000),
        get: |c| size(c.limits.max_runs_per_group),
    },
    KeyRange {
        key: "limits.max_clock_skew",
        bounds: dur(secs(1), secs(DAY)),
        get: |c| Number::Duration(c.limits.max_clock_skew),
    },
    KeyRange {
        key: "ingest.max_body_bytes",
        bounds: int(1024, 64 * MIB),
        get: |c| size(c.ingest.max_body_bytes),
    },
    KeyRange {
        key: "ingest.header_read_timeout",
        bounds: dur(millis(100), secs(5 * MINUTE)),
        get: |c| Number::Duration(c.ingest.header_read_timeout),
    },
    KeyRange {
        key: "ingest.body_read_timeout",
        bounds: dur(millis(100), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.ingest.body_read_timeout),
    },
    KeyRange {
        key: "ingest.max_connections",
        bounds: int(1, 65_536),
        get: |c| size(c.ingest.max_connections),
    },
    KeyRange {
        key: "ingest.max_requests_in_flight",
        bounds: int(1, 65_536),
        get: |c| size(c.ingest.max_requests_in_flight),
    },
    KeyRange {
        key: "ingest.max_buffered_bytes",
        bounds: int(1024, 1024 * MIB),
        get: |c| size(c.ingest.max_buffered_bytes),
    },
    KeyRange {
        key: "deliver.min_delay",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.deliver.min_delay),
    },
    KeyRange {
        key: "deliver.max_delay",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.deliver.max_delay),
    },
    KeyRange {
        key: "deliver.retry_after_max",
        bounds: dur(secs(1), secs(DAY)),
        get: |c| Number::Duration(c.deliver.retry_after_max),
    },
];
