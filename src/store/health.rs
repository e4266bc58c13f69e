//! What a database error means, and whether the database is currently refusing the worker.
//!
//! Every [`StoreError`] has an [`ErrorKind`]. Only [`ErrorKind::Input`] (a data exception
//! or a constraint on the input's own values, SQLSTATE classes 22 and 23, or a value that
//! cannot be encoded) is the input's fault; every other kind is the database's (it is down,
//! blocked, refusing, out of resources, or its schema is not what this binary expects),
//! and retrying the same input later may succeed.
//!
//! [`Health`] keeps, per operation (`record`, `timers`, `relay`), the episode of database
//! failures under way: `/readyz` answers 503 with its reason while any lasts, the gauge
//! `runwatch_database_unavailable` is 1, each failed attempt counts in
//! `runwatch_database_errors_total{kind}`, and a warning is logged when an episode starts
//! and at most every [`LOG_EVERY`] while it lasts (never one line per retry). The first
//! success of the operation ends its episode (logged at info).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::StoreError;

/// How often a lasting episode is logged again.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// What kind of failure a database error is. The label set of
/// `runwatch_database_errors_total` is exactly [`ErrorKind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Class 08, a broken or refused connection, TLS.
    Connection,
    /// 40001 serialization failure, 40P01 deadlock, other class 40 (after the transaction's
    /// own retries).
    Conflict,
    /// 55P03 lock_not_available: `database.lock_timeout` struck.
    LockTimeout,
    /// 57014 query_canceled: `database.statement_timeout` struck (or a cancel).
    StatementTimeout,
    /// 42501 insufficient_privilege.
    Permission,
    /// 25006 read_only_sql_transaction (a standby, `default_transaction_read_only`).
    ReadOnly,
    /// Class 53 (disk full, out of memory, too many connections), 58 (system error).
    Resources,
    /// 57P01..57P05: admin shutdown, crash shutdown, cannot connect now; a closed pool.
    Shutdown,
    /// No pooled connection within `database.acquire_timeout`.
    PoolTimeout,
    /// An I/O error on the connection.
    Io,
    /// Class 42 but 42501 (an undefined table or column...), a row or column missing: the
    /// schema is not what this binary expects.
    Schema,
    /// Class 22 (data exception) or 23 (integrity constraint) or an encoding error: the
    /// input's own values. The only kind that may end in a dead letter.
    Input,
    /// Anything else (internal errors, an unknown SQLSTATE, a protocol error).
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Connection,
        ErrorKind::Conflict,
        ErrorKind::LockTimeout,
        ErrorKind::StatementTimeout,
        ErrorKind::Permission,
        ErrorKind::ReadOnly,
        ErrorKind::Resources,
        ErrorKind::Shutdown,
        ErrorKind::PoolTimeout,
        ErrorKind::Io,
        ErrorKind::Schema,
        ErrorKind::Input,
        ErrorKind::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Conflict => "conflict",
            ErrorKind::LockTimeout => "lock_timeout",
            ErrorKind::StatementTimeout => "statement_timeout",
            ErrorKind::Permission => "permission",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::Resources => "resources",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::Io => "io",
            ErrorKind::Schema => "schema",
            ErrorKind::Input => "input",
            ErrorKind::Other => "other",
        }
    }

    /// How `/readyz` puts it: `refusing`, `blocked`, `unavailable`, `failing`.
    fn state(self) -> &'static str {
        match self {
            ErrorKind::Permission | ErrorKind::ReadOnly => "refusing",
            ErrorKind::LockTimeout | ErrorKind::StatementTimeout | ErrorKind::Conflict => "blocked",
            ErrorKind::Connection
            | ErrorKind::Resources
            | ErrorKind::Shutdown
            | ErrorKind::PoolTimeout
            | ErrorKind::Io => "unavailable",
            ErrorKind::Schema | ErrorKind::Input | ErrorKind::Other => "failing",
        }
    }

    /// Of a SQLSTATE.
    pub fn of_sqlstate(code: &str) -> ErrorKind {
        match code {
            "40001" | "40P01" => ErrorKind::Conflict,
            "55P03" => ErrorKind::LockTimeout,
            "57014" => ErrorKind::StatementTimeout,
            "42501" => ErrorKind::Permission,
            "25006" => ErrorKind::ReadOnly,
            c if c.starts_with("08") => ErrorKind::Connection,
            c if c.starts_with("40") => ErrorKind::Conflict,
            c if c.starts_with("57") => ErrorKind::Shutdown,
            c if c.starts_with("53") || c.starts_with("58") => ErrorKind::Resources,
            c if c.starts_with("42") => ErrorKind::Schema,
            c if c.starts_with("22") || c.starts_with("23") => ErrorKind::Input,
            _ => ErrorKind::Other,
        }
    }
}

impl StoreError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::Database(d) => {
                    ErrorKind::of_sqlstate(d.code().as_deref().unwrap_or(""))
                }
                sqlx::Error::PoolTimedOut => ErrorKind::PoolTimeout,
                sqlx::Error::PoolClosed => ErrorKind::Shutdown,
                sqlx::Error::Io(_) => ErrorKind::Io,
                sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => ErrorKind::Connection,
                sqlx::Error::Encode(_) => ErrorKind::Input,
                sqlx::Error::RowNotFound
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::TypeNotFound { .. } => ErrorKind::Schema,
                _ => ErrorKind::Other,
            },
            StoreError::State { .. } | StoreError::Encode(_) => ErrorKind::Input,
            StoreError::SchemaBehind { .. } | StoreError::SchemaUnreadable => ErrorKind::Schema,
            StoreError::Migrate(_) | StoreError::Url { .. } => ErrorKind::Other,
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            StoreError::Db(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// The reason `/readyz` shows: `database: refusing (permission, SQLSTATE 42501:
    /// permission denied for table groups)`.
    pub fn readiness_reason(&self) -> String {
        let kind = self.kind();
        let detail = match self {
            StoreError::Db(sqlx::Error::Database(d)) => d.message().to_string(),
            other => other.to_string(),
        };
        let label = kind.label().replace('_', " ");
        match self.sqlstate() {
            Some(code) => format!(
                "database: {} ({label}, SQLSTATE {code}: {detail})",
                kind.state()
            ),
            None => format!("database: {} ({label}: {detail})", kind.state()),
        }
    }
}

/// The operations whose failures make an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// The consume task's record transaction.
    Record,
    /// The timer sweep.
    Timers,
    /// The outbox relay.
    Relay,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Record => "record",
            Op::Timers => "timers",
            Op::Relay => "relay",
        }
    }
}

/// One operation's episode of failures.
#[derive(Debug)]
struct Episode {
    reason: String,
    since: Instant,
    logged: Instant,
    failures: u64,
}

/// Whether the database currently refuses this process (see the module documentation).
#[derive(Debug, Default)]
pub struct Health {
    failing: Mutex<BTreeMap<Op, Episode>>,
}

impl Health {
    /// Sets the gauge to 0 and the record operation's error counters to 0, so dashboards
    /// see series before the first failure. A no-op without a recorder.
    pub fn register_metrics() {
        metrics::gauge!("runwatch_database_unavailable").set(0.0);
        for k in ErrorKind::ALL {
            count(Op::Record, k).increment(0);
        }
    }

    /// `op` failed with `e`, which is not the input's fault: starts or continues its
    /// episode. Logs when the episode starts and at most every [`LOG_EVERY`].
    pub fn failed(&self, op: Op, e: &StoreError) {
        let kind = e.kind();
        count(op, kind).increment(1);
        let reason = e.readiness_reason();
        let sqlstate = e.sqlstate().unwrap_or_default();
        let now = Instant::now();
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match failing.get_mut(&op) {
            None => {
                tracing::warn!(op = op.label(), kind = kind.label(), sqlstate, error = %e,
                    "database refuses the worker: retrying with backoff, readiness off (inputs keep their deliveries)");
                failing.insert(
                    op,
                    Episode {
                        reason,
                        since: now,
                        logged: now,
                        failures: 1,
                    },
                );
            }
            Some(ep) => {
                ep.failures = ep.failures.saturating_add(1);
                ep.reason = reason;
                if now.duration_since(ep.logged) >= LOG_EVERY {
                    ep.logged = now;
                    tracing::warn!(op = op.label(), kind = kind.label(), sqlstate, error = %e, failures = ep.failures,
                        for_s = now.duration_since(ep.since).as_secs(), "database still refuses the worker");
                }
            }
        }
        metrics::gauge!("runwatch_database_unavailable").set(1.0);
    }

    /// `op` succeeded (or the database answered it): ends its episode, if any.
    pub fn succeeded(&self, op: Op) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ep) = failing.remove(&op) {
            tracing::info!(
                op = op.label(),
                failures = ep.failures,
                after_s = ep.since.elapsed().as_secs_f64(),
                "database answers the worker again"
            );
            if failing.is_empty() {
                metrics::gauge!("runwatch_database_unavailable").set(0.0);
            }
        }
    }

    /// The reason readiness is off, while an episode lasts: `<op>: <reason>`.
    pub fn unavailable(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.iter().next().map(|(op, ep)| {
            format!(
                "{} (op {}, for {}s)",
                ep.reason,
                op.label(),
                ep.since.elapsed().as_secs()
            )
        })
    }
}

/// `runwatch_database_errors_total{op, kind}`: 3 × 13 series at most.
pub fn count(op: Op, kind: ErrorKind) -> metrics::Counter {
    metrics::counter!("runwatch_database_errors_total", "op" => op.label(), "kind" => kind.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for (code, kind) in [
            ("08006", ErrorKind::Connection),
            ("08P01", ErrorKind::Connection),
            ("40001", ErrorKind::Conflict),
            ("40P01", ErrorKind::Conflict),
            ("55P03", ErrorKind::LockTimeout),
            ("57014", ErrorKind::StatementTimeout),
            ("42501", ErrorKind::Permission),
            ("25006", ErrorKind::ReadOnly),
            ("53100", ErrorKind::Resources),
            ("53300", ErrorKind::Resources),
            ("58030", ErrorKind::Resources),
            ("57P01", ErrorKind::Shutdown),
            ("57P03", ErrorKind::Shutdown),
            ("42P01", ErrorKind::Schema),
            ("42703", ErrorKind::Schema),
            ("22008", ErrorKind::Input),
            ("22P05", ErrorKind::Input),
            ("23505", ErrorKind::Input),
            ("XX000", ErrorKind::Other),
            ("", ErrorKind::Other),
        ] {
            assert_eq!(ErrorKind::of_sqlstate(code), kind, "{code}");
        }
        assert_eq!(
            StoreError::Db(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::PoolTimeout
        );
        assert_eq!(
            StoreError::Db(sqlx::Error::PoolClosed).kind(),
            ErrorKind::Shutdown
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(StoreError::Db(sqlx::Error::Io(io)).kind(), ErrorKind::Io);
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(StoreError::Encode(bad).kind(), ErrorKind::Input);
        let labels: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len(), "labels are distinct");
    }

    #[test]
    fn an_episode_lasts_until_its_operation_succeeds() {
        let h = Health::default();
        assert_eq!(h.unavailable(), None);
        h.failed(Op::Record, &StoreError::Db(sqlx::Error::PoolTimedOut));
        h.failed(Op::Timers, &StoreError::Db(sqlx::Error::PoolTimedOut));
        let why = h.unavailable().unwrap();
        assert!(
            why.starts_with("database: unavailable (pool timeout"),
            "{why}"
        );
        h.succeeded(Op::Record);
        assert!(h.unavailable().is_some(), "timers still failing");
        h.succeeded(Op::Relay);
        assert!(
            h.unavailable().is_some(),
            "another operation's success ends nothing"
        );
        h.succeeded(Op::Timers);
        assert_eq!(h.unavailable(), None);
    }
}
