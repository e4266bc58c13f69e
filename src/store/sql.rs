//! The statements of the periodic sweeps (timers, relay, purge), one `.sql` file each in
//! `src/store/sql/`, so that the store runs them and the size tests (`tests/api/size.rs`)
//! explain them with the same text. Each reads an index in the order of its `LIMIT`, so it
//! costs O(log n + rows due) whatever the table holds and whatever its statistics say.

/// The timer sweep: `$1` the event clock, `$2` the most rows of each timer kind.
pub const TIMERS_DUE: &str = include_str!("sql/timers_due.sql");

/// The relay's claim of unsent triggers: `$1` the most rows, `$2` the lease in seconds.
pub const RELAY_CLAIM: &str = include_str!("sql/relay_claim.sql");

/// Purge, groups: `$1` the age in seconds, `$2` the most rows per statement.
pub const PURGE_GROUPS: &str = include_str!("sql/purge_groups.sql");

/// Purge, groups without a `touched_on` day (written before it existed): the same
/// parameters.
pub const PURGE_GROUPS_UNSTAMPED: &str = include_str!("sql/purge_groups_unstamped.sql");

/// Purge of what is not a group, in the order it runs (each `$1` the age in seconds, `$2`
/// the most rows per statement): sent triggers, failure streaks, commit → pull request
/// associations, pull request heads, trigger budgets, jobs.
pub const PURGE_REST: [&str; 6] = [
    include_str!("sql/purge_outbox.sql"),
    include_str!("sql/purge_streaks.sql"),
    include_str!("sql/purge_commit_pulls.sql"),
    include_str!("sql/purge_pull_heads.sql"),
    include_str!("sql/purge_trigger_budgets.sql"),
    include_str!("sql/purge_jobs.sql"),
];

/// Purge, flips (`$1` the age in seconds: the longer of `purge.older_than` and the longest
/// `flaky_window`, `$2` the most rows per statement).
pub const PURGE_FLIPS: &str = include_str!("sql/purge_flips.sql");
