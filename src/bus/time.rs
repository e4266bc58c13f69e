//! The times NATS JetStream holds: a start time (`DeliverPolicy::ByStartTime`) goes to the
//! server as RFC 3339 and is compared there as int64 nanoseconds since the Unix epoch, so a
//! time outside 1677-09-21T00:12:43.145224192Z ..= 2262-04-11T23:47:16.854775807Z overflows
//! on the server (a start in 9999 used to deliver the whole stream). Such a time is refused
//! here, before it is sent. Postgres (4713 BC to 294276 AD) and RFC 3339 (years 0000 to
//! 9999) hold every time in that range.

use chrono::{DateTime, Utc};

/// The earliest time NATS holds: `i64::MIN` nanoseconds from the Unix epoch.
pub const NATS_TIME_MIN: DateTime<Utc> = DateTime::from_timestamp_nanos(i64::MIN);
/// The latest time NATS holds: `i64::MAX` nanoseconds from the Unix epoch.
pub const NATS_TIME_MAX: DateTime<Utc> = DateTime::from_timestamp_nanos(i64::MAX);

/// Why a time cannot go to NATS, or `Ok` when it can.
pub fn check_nats_time(t: DateTime<Utc>) -> Result<(), String> {
    let show = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    if t < NATS_TIME_MIN {
        Err(format!(
            "{} is before {}, the earliest time NATS JetStream holds (int64 nanoseconds from 1970)",
            show(t),
            show(NATS_TIME_MIN)
        ))
    } else if t > NATS_TIME_MAX {
        Err(format!(
            "{} is after {}, the latest time NATS JetStream holds (int64 nanoseconds from 1970)",
            show(t),
            show(NATS_TIME_MAX)
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_bounds_are_int64_nanoseconds() {
        assert_eq!(NATS_TIME_MIN, at("1677-09-21T00:12:43.145224192Z"));
        assert_eq!(NATS_TIME_MAX, at("2262-04-11T23:47:16.854775807Z"));
        assert!(check_nats_time(NATS_TIME_MIN).is_ok());
        assert!(check_nats_time(NATS_TIME_MAX).is_ok());
        assert!(check_nats_time(at("2026-11-25T08:00:00Z")).is_ok());
        let late = check_nats_time(at("9999-01-01T00:00:00Z")).unwrap_err();
        assert!(
            late.starts_with("9999-01-01T00:00:00Z is after 2262-04-11T23:47:16.854775807Z"),
            "{late}"
        );
        assert!(check_nats_time(at("2262-04-11T23:47:16.854775808Z")).is_err());
        assert!(check_nats_time(at("1677-09-21T00:12:43.145224191Z")).is_err());
        assert!(check_nats_time(at("0000-01-01T00:00:00Z")).is_err());
    }
}
