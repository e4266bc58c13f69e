//! What a target's task and its deliveries share: the target, its HTTP client and the
//! retry delays of `[deliver]`.

use std::time::Duration;

use super::config::DeliverConfig;
use super::target::Target;
use crate::bus::Bus;
use crate::bus::backoff::{exponential, nth_delay};

/// The retry delays of `[deliver]`.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub min: Duration,
    pub max: Duration,
    pub retry_after_max: Duration,
}

impl Delays {
    pub fn from_config(c: &DeliverConfig) -> Delays {
        Delays {
            min: c.min_delay,
            max: c.max_delay,
            retry_after_max: c.retry_after_max,
        }
    }

    /// The nak delay after failed attempt `attempt` (1-based): the receiver's
    /// `Retry-After` capped at `retry_after_max`, else exponential with jitter (backon).
    pub fn after(&self, attempt: u64, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.retry_after_max);
        }
        nth_delay(exponential(self.min, self.max, 2.0), attempt, self.max)
    }
}

/// What a target's task and its deliveries share.
pub(super) struct TargetCtx {
    pub(super) bus: Bus,
    pub(super) target: Target,
    pub(super) client: reqwest::Client,
    pub(super) delays: Delays,
    pub(super) triggers_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_capped_and_backoff_grows() {
        let d = Delays {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(60),
        };
        assert_eq!(
            d.after(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            d.after(1, Some(Duration::from_secs(86_400))),
            Duration::from_secs(60)
        );
        for attempt in [1, 2, 5, 1000, u64::MAX] {
            let delay = d.after(attempt, None);
            assert!(delay <= Duration::from_secs(20), "{attempt}: {delay:?}");
        }
    }
}
