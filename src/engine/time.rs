//! Saturating time arithmetic for the engine's timers and windows (a leaf: the engine's
//! modules import it directly).

use chrono::{DateTime, Utc};

/// `t + d`, saturating at the largest time chrono can hold instead of panicking (the
/// configuration bounds settle and cooldown; this keeps a library caller safe too).
pub(crate) fn plus(t: DateTime<Utc>, d: chrono::Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
