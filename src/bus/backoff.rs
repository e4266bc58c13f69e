//! The one exponential, jittered backoff (backon) every retry of runwatch's own uses: NATS
//! connects and pull recovery (`retry.*`), the worker's nak delays and held batches
//! (`retry.*`), deliver's nak delays and consumer set-up (`deliver.*_delay`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::RetryConfig;

/// Delays from `min` growing by `factor` up to `max`, with jitter, without a limit on
/// attempts (add one with `with_max_times`).
pub fn exponential(min: Duration, max: Duration, factor: f32) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(factor)
        .with_jitter()
        .without_max_times()
}

/// The backoff of `[retry]`.
pub fn backoff(retry: &RetryConfig) -> ExponentialBuilder {
    exponential(retry.min_delay, retry.max_delay, retry.factor)
}

/// The delay before delivery `delivered + 1` of a message (`delivered` counts from 1): the
/// `delivered`-th delay of `builder`, at most `max`.
pub fn nth_delay(builder: ExponentialBuilder, delivered: u64, max: Duration) -> Duration {
    builder
        .build()
        .nth(delivered.saturating_sub(1).min(64) as usize)
        .unwrap_or(max)
}
