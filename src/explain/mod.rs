//! `runwatch explain` and `runwatch groups list`: why a group did (not) fire, and which
//! groups exist, read from the database only.
//!
//! - [`verdict`] is pure: from a group's stored state, the rules, the outbox rows, the
//!   streaks and the cooldowns, one verdict per rule with its reason in words. It renders
//!   the engine's state and the engine's own checks ([`crate::engine::Check`]); it holds
//!   no rule and changes nothing.
//! - [`text`] renders an explanation for a person; `--json` serializes the same value.
//! - [`query`] loads what the verdicts need in one `REPEATABLE READ READ ONLY` transaction
//!   (plain SELECTs, no row lock: the worker is never held up), with the rights of the
//!   worker's role; the pull request's columns are read by the store's own functions, as
//!   the worker reads them. [`list`] is `groups list`'s one SELECT.

pub mod error;
pub mod list;
pub mod query;
pub mod target;
pub mod text;
pub mod verdict;

use crate::config::Config;
use crate::store;

pub use error::ExplainError;
pub use list::{GroupRow, GroupStateFilter, ListOptions};
pub use target::{Target, since_cutoff};
pub use verdict::{Explanation, RuleExplanation, Verdict};

/// Output form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// `explain`: one JSON object; `groups list`: one JSON object per line.
    Json,
}

/// What a command prints: found (the text to print on stdout) or not found (a message for
/// stderr; exit status 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Found(String),
    NotFound(String),
}

/// `runwatch explain`: connects with the configured database URL and rules, explains one
/// group.
pub async fn explain_command(
    config: &Config,
    target: &Target,
    format: Format,
) -> Result<Outcome, ExplainError> {
    let rules = config.rule_set()?;
    let pool = store::connect(&config.database).await?;
    let result = query::explain(&pool, &rules, target).await;
    pool.close().await;
    Ok(match result? {
        Ok(explanation) => Outcome::Found(match format {
            Format::Text => text::explanation(&explanation),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&explanation)?;
                s.push('\n');
                s
            }
        }),
        Err(missing) => Outcome::NotFound(missing),
    })
}

/// `runwatch groups list`.
pub async fn groups_list_command(
    config: &Config,
    options: &ListOptions,
    format: Format,
) -> Result<String, ExplainError> {
    let pool = store::connect(&config.database).await?;
    let result = list::list_groups(&pool, options).await;
    pool.close().await;
    let rows = result?;
    Ok(match format {
        Format::Text => text::groups_table(&rows),
        Format::Json => {
            let mut s = String::new();
            for r in &rows {
                s.push_str(&serde_json::to_string(r)?);
                s.push('\n');
            }
            s
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_groups_list_since_too_far_back_is_the_epoch() {
        let now = chrono::Utc::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(since_cutoff(now, hour), now - chrono::Duration::hours(1));
        for huge in [Duration::from_secs(100 * 365 * 86_400), Duration::MAX] {
            assert_eq!(since_cutoff(now, huge), chrono::DateTime::UNIX_EPOCH);
        }
    }
}
