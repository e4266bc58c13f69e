//! The normalized event, schema `runwatch.workflow_run.v1`: decoding, validation and limits.
//!
//! Unknown fields are ignored; wrong types, missing required fields and anything over the
//! size limits are rejected with a [`Rejection`] that says why.

mod rejection;
mod validate;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use rejection::{MAX_DETAIL_BYTES, RejectCode, Rejection};
pub(crate) use validate::{
    check_event_id, check_metadata, check_no_controls, check_pr_number, check_required,
    check_strings, check_time,
};
pub use validate::{decode, max_time, min_time};

pub const SCHEMA: &str = "runwatch.workflow_run.v1";

/// Size limits on one event (DESIGN.md "Limits"); configurable under `[limits]`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_metadata_bytes: usize,
    pub max_string_bytes: usize,
    pub max_runs_per_group: usize,
    /// How far an event's `run.updated_at` may run ahead of the worker's wall clock and
    /// still move the worker's event clock (DESIGN.md "Order"): a mis-dated event still
    /// merges, but it cannot make every other group's timers due.
    #[serde(with = "humantime_serde", default = "default_max_clock_skew")]
    pub max_clock_skew: std::time::Duration,
}

fn default_max_clock_skew() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_metadata_bytes: 16 * 1024,
            max_string_bytes: 1024,
            max_runs_per_group: 500,
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Provider {
    Github,
    Gitlab,
    Bitbucket,
    AzureDevops,
    Generic,
    Buildkite,
    Circleci,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Bitbucket => "bitbucket",
            Provider::AzureDevops => "azure_devops",
            Provider::Generic => "generic",
            Provider::Buildkite => "buildkite",
            Provider::Circleci => "circleci",
        }
    }

    /// Every provider's name, comma-separated, in declaration order (for messages).
    pub fn names() -> String {
        <Provider as clap::ValueEnum>::value_variants()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Some(match s {
            "github" => Provider::Github,
            "gitlab" => Provider::Gitlab,
            "bitbucket" => Provider::Bitbucket,
            "azure_devops" => Provider::AzureDevops,
            "generic" => Provider::Generic,
            "buildkite" => Provider::Buildkite,
            "circleci" => Provider::Circleci,
            _ => return None,
        })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's status; its order is the merge's phase order: queued < in_progress < completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[serde(alias = "requested", alias = "waiting", alias = "pending")]
    Queued,
    InProgress,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    TimedOut,
    Skipped,
    Neutral,
    ActionRequired,
    StartupFailure,
    Stale,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::TimedOut => "timed_out",
            Conclusion::Skipped => "skipped",
            Conclusion::Neutral => "neutral",
            Conclusion::ActionRequired => "action_required",
            Conclusion::StartupFailure => "startup_failure",
            Conclusion::Stale => "stale",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub owner: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The provider hosting the repository when it is not the event's provider (a
    /// Buildkite or CircleCI build of a GitHub or GitLab repository): the repository is then
    /// that provider's `owner/name` (`id`, the CI's own, is not used), so the build joins the
    /// groups of the host's events of the same commit (`crate::repository::RepoClaim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Provider>,
}

fn default_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    #[serde(default = "default_attempt")]
    pub attempt: u32,
    pub workflow: String,
    pub status: Status,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One normalized workflow-run event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: String,
    pub event_id: String,
    pub provider: Provider,
    pub repository: Repository,
    pub commit_sha: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub pr_number: Option<u64>,
    pub run: Run,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

/// The largest `pr_number` accepted: it is stored as a signed 64-bit integer.
pub const MAX_PR_NUMBER: u64 = i64::MAX as u64;

/// The largest `run.attempt` accepted: a 32-bit unsigned integer; a larger one is refused
/// by the decoder as `invalid`, never wrapped.
pub const MAX_ATTEMPT: u32 = u32::MAX;

#[cfg(test)]
mod tests;
