//! The bounds of numeric keys, and the error that names a key whose value is outside them.

use std::time::Duration;

use super::error::ConfigError;

/// The bounds of one numeric configuration key. Durations are inclusive ranges; `off`
/// also accepts `0s` (which turns the feature off) below `min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bounds {
    /// An integer in `min..=max`, or `0` when `off`.
    Int { min: i128, max: i128, off: bool },
    /// A number in `min..=max`.
    Float { min: f64, max: f64 },
    /// A duration in `min..=max`, or `0s` when `off`.
    Duration {
        min: Duration,
        max: Duration,
        off: bool,
    },
}

/// A value of a numeric key, as [`Bounds`] checks it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i128),
    Float(f64),
    Duration(Duration),
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(v) => write!(f, "{v}"),
            Number::Float(v) => write!(f, "{v}"),
            Number::Duration(d) => f.write_str(&short_duration(*d)),
        }
    }
}

/// `d` in its largest exact unit (`365d`, `5m`, `100ms`), as humantime reads it back.
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ns", d.as_nanos());
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        "0s".into()
    } else {
        format!("{ms}ms")
    }
}

impl Bounds {
    /// Whether `v` is within the bounds.
    pub fn contains(&self, v: Number) -> bool {
        match (*self, v) {
            (Bounds::Int { min, max, off }, Number::Int(v)) => {
                (off && v == 0) || (min..=max).contains(&v)
            }
            (Bounds::Float { min, max }, Number::Float(v)) => {
                v.is_finite() && (min..=max).contains(&v)
            }
            (Bounds::Duration { min, max, off }, Number::Duration(v)) => {
                (off && v.is_zero()) || (min..=max).contains(&v)
            }
            _ => false,
        }
    }

    /// The range as the README's configuration table shows it: `1..=10000`,
    /// `1ms..=1h`, `0s or 1m..=30d`.
    pub fn text(&self) -> String {
        match *self {
            Bounds::Int { min, max, off } => {
                format!("{}{min}..={max}", if off { "0 or " } else { "" })
            }
            Bounds::Float { min, max } => format!("{min:?}..={max:?}"),
            Bounds::Duration { min, max, off } => format!(
                "{}{}..={}",
                if off { "0s or " } else { "" },
                short_duration(min),
                short_duration(max)
            ),
        }
    }
}

pub(super) const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
pub(super) const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
pub(super) const MINUTE: u64 = 60;
pub(super) const HOUR: u64 = 3600;
pub(super) const DAY: u64 = 86_400;
pub(super) const MIB: i128 = 1 << 20;
pub(super) const TIB: i128 = 1 << 40;

pub(super) const fn int(min: i128, max: i128) -> Bounds {
    Bounds::Int {
        min,
        max,
        off: false,
    }
}
/// `min..=max`, or `0` for "no bound".
pub(super) const fn int_or_off(min: i128, max: i128) -> Bounds {
    Bounds::Int {
        min,
        max,
        off: true,
    }
}
pub(super) const fn dur(min: Duration, max: Duration) -> Bounds {
    Bounds::Duration {
        min,
        max,
        off: false,
    }
}
pub(super) fn n<T: Into<i128>>(v: T) -> Number {
    Number::Int(v.into())
}
pub(super) fn size(v: usize) -> Number {
    Number::Int(i128::try_from(v).unwrap_or(i128::MAX))
}

/// The numeric keys of a delivery target, checked per target as
/// `deliver.targets[N].<key>`. A request's `timeout` plus a margin is its consumer's
/// `ack_wait`, so the bound keeps that sum small.
pub const TARGET_RANGES: &[(&str, Bounds)] = &[
    ("timeout", dur(millis(100), secs(10 * MINUTE))),
    ("max_attempts", int(1, 1000)),
    ("concurrency", int(1, 256)),
];

/// `purge.older_than`, and `runwatch purge --older-than`.
pub const PURGE_OLDER_THAN: Bounds = dur(secs(HOUR), secs(3650 * DAY));

pub(super) fn out_of_range(key: &str, bounds: &Bounds, v: Number) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: format!("{v} is out of range; accepted: {}", bounds.text()),
    }
}

/// Checks a duration given on the command line against a key's bounds.
pub fn check_duration(what: &str, bounds: &Bounds, d: Duration) -> Result<(), ConfigError> {
    if bounds.contains(Number::Duration(d)) {
        Ok(())
    } else {
        Err(out_of_range(what, bounds, Number::Duration(d)))
    }
}
