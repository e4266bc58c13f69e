//! What to explain (a group, or the group of a trigger) and from when to list groups.

use std::time::Duration;

use super::error::ExplainError;
use crate::event::Provider;

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
