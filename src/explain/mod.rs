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
//!   worker's role.

pub mod query;
pub mod text;
pub mod verdict;

use std::time::Duration;

use crate::config::Config;
use crate::event::Provider;
use crate::store::{self, StoreError};

pub use query::{GroupRow, GroupStateFilter, ListOptions};
pub use verdict::{Explanation, RuleExplanation, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{what} cannot be read: {detail}")]
    Corrupt { what: String, detail: String },
}

/// Which group to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// (provider, `owner/name`, pull request or `None` for a push build, commit or a
    /// unique prefix of it).
    Group {
        provider: Provider,
        repository: String,
        pr_number: Option<u64>,
        commit: String,
    },
    /// The group a trigger came from.
    Trigger(uuid::Uuid),
}

impl Target {
    /// From the command line's words: `PROVIDER OWNER/NAME PR COMMIT`, PR `-` for none.
    pub fn parse(
        provider: &str,
        repository: &str,
        pr: &str,
        commit: &str,
    ) -> Result<Target, ExplainError> {
        let provider = Provider::parse(provider).ok_or_else(|| {
            ExplainError::Usage(format!(
                "unknown provider {provider:?} ({})",
                Provider::names()
            ))
        })?;
        if !repository.contains('/') {
            return Err(ExplainError::Usage(format!(
                "repository {repository:?}: expected OWNER/NAME"
            )));
        }
        let pr_number = if pr == "-" {
            None
        } else {
            match pr.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(ExplainError::Usage(format!(
                        "pull request {pr:?}: expected a number from 1, or - for a push build"
                    )));
                }
            }
        };
        if commit.is_empty() {
            return Err(ExplainError::Usage("the commit must not be empty".into()));
        }
        Ok(Target::Group {
            provider,
            repository: repository.to_string(),
            pr_number,
            commit: commit.to_string(),
        })
    }
}

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
    let result = query::list_groups(&pool, options).await;
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

/// `--since` as a cut-off time, saturating at the Unix epoch (no overflow on a huge
/// duration, and always a timestamp Postgres accepts).
pub fn since_cutoff(
    now: chrono::DateTime<chrono::Utc>,
    since: Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .map_or(chrono::DateTime::UNIX_EPOCH, |t| {
            t.max(chrono::DateTime::UNIX_EPOCH)
        })
}

#[cfg(test)]
mod tests {
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
