//! The trigger message, schema `runwatch.trigger.v1` (the `WorkflowRunGroup`), and its
//! deterministic id.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Conclusion, Provider, Status};

pub const TRIGGER_SCHEMA: &str = "runwatch.trigger.v1";

/// The UUIDv5 namespace of trigger ids (fixed forever: ids must stay stable across
/// versions so that a replay publishes nothing new).
pub const TRIGGER_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b4e_9a3d_4c57_8e21_5d0b_7a94_c3e8);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRepository {
    pub owner: String,
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    pub internal_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRun {
    pub attempt: u32,
    pub workflow: String,
    pub status: Status,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub schema: String,
    pub trigger_id: Uuid,
    /// The rule's kind, e.g. `all_completed_with_failure`.
    pub rule: String,
    /// The rule's name in the rule set (the kind unless configured otherwise).
    pub rule_name: String,
    pub provider: Provider,
    pub repository: TriggerRepository,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    /// For `repeated_failure`: the workflow whose streak fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The group's episode (re-runs open new ones when `refire_on_rerun` is set).
    pub episode: u32,
    pub runs: BTreeMap<String, TriggerRun>,
    pub failed_workflows: Vec<String>,
    pub fired_at: DateTime<Utc>,
}

/// A deterministic id from the parts that identify a decision.
pub fn trigger_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&TRIGGER_NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// The outbound subject of a trigger: `<prefix>.<provider>`.
pub fn subject(prefix: &str, provider: Provider) -> String {
    format!("{prefix}.{}", provider.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(trigger_id(&["a", "b"]), trigger_id(&["a", "b"]));
        assert_ne!(trigger_id(&["a", "b"]), trigger_id(&["ab", ""]));
        assert_eq!(trigger_id(&["a"]).get_version_num(), 5);
    }
}
