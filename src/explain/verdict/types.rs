//! The types the verdicts share: the stored group, outbox rows and streaks they read, and the
//! explanation they produce. A leaf module, so the verdict's children import it without
//! importing their parent.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::engine::{BudgetScope, Due, Flips, GroupState, RepoRef, StreakKey, StreakState};
use crate::event::{Conclusion, Provider, Status};
use crate::trigger::{KnownFlaky, Trigger};

/// One group as stored.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub id: i64,
    pub repo: RepoRef,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub state: GroupState,
}

/// One outbox row; `trigger` is `None` when the payload does not decode as a trigger.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub trigger_id: Uuid,
    pub group_id: Option<i64>,
    pub trigger: Option<Trigger>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub set_aside_at: Option<DateTime<Utc>>,
    pub set_aside_reason: Option<String>,
}

/// The state shared by groups that the verdicts read: the streaks of the group's runs and
/// when each rule last fired for the group's repository (cooldowns), by rule name; the
/// flips of the group's workflows in its repository, by workflow.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub streaks: BTreeMap<StreakKey, StreakState>,
    pub cooldowns: BTreeMap<String, DateTime<Utc>>,
    pub flips: BTreeMap<String, Flips>,
}

/// Everything `explain` says about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The database's clock when the explanation was read.
    pub explained_at: DateTime<Utc>,
    pub group: GroupInfo,
    /// The merged runs, by run id.
    pub runs: Vec<RunInfo>,
    /// One verdict per configured rule, in configuration order.
    pub rules: Vec<RuleExplanation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    pub id: i64,
    pub provider: Provider,
    /// `owner/name`, the latest spelling seen.
    pub repository: String,
    pub repository_id: i64,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The earliest pending timer, if any.
    pub next_due: Option<Due>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub workflow: String,
    pub attempt: u32,
    pub status: Status,
    pub conclusion: Option<Conclusion>,
    pub updated_at: DateTime<Utc>,
    pub url: Option<String>,
    /// The run's known jobs of its attempt (docs/design.md "Jobs and steps"), by id; filled
    /// by the query, not judged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobInfo>,
}

/// A known job of a run, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub job_id: String,
    pub name: String,
    pub status: Status,
    pub conclusion: Option<Conclusion>,
    /// The failed steps' names.
    pub failed_steps: Vec<String>,
}

/// One rule's verdict: `verdict` names the kind, `reason` says it in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The rule fired for the group (in its current episode, for `all_completed_with_failure`).
    Fired { triggers: Vec<FiredTrigger> },
    /// Runs the rule considers have not completed.
    Waiting { runs: Vec<PendingRun> },
    /// The rule decided to fire in its current episode, but the trigger would have exceeded
    /// a budget (`max_triggers_per_*`): recorded, not published.
    OverBudget {
        budget: BudgetScope,
        used: u32,
        limit: u32,
        window_seconds: u64,
        at: DateTime<Utc>,
    },
    /// The condition held; the settle timer judges it again when due.
    SettleDue { due: Due },
    /// The condition held during the repository's cooldown; judged again when it ends.
    Cooldown { until: DateTime<Utc>, due: Due },
    /// Nothing in the group as it stands makes the rule fire.
    WillNotFire {
        cause: Cause,
        /// For `filtered_out`: the filters that leave nothing.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        filters: Vec<&'static str>,
        /// For `streak`: the streaks the group's completed runs belong to.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        streaks: Vec<StreakInfo>,
        /// For `known_flaky`: the failed workflows and their flips.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        known_flaky: Vec<KnownFlaky>,
    },
    /// The condition holds but the rule has not judged this state.
    NotJudged,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Fired { .. } => "fired",
            Verdict::OverBudget { .. } => "over_budget",
            Verdict::Waiting { .. } => "waiting",
            Verdict::SettleDue { .. } => "settle_due",
            Verdict::Cooldown { .. } => "cooldown",
            Verdict::WillNotFire { .. } => "will_not_fire",
            Verdict::NotJudged => "not_judged",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    NoPullRequest,
    NoFailure,
    FilteredOut,
    NoRuns,
    /// `only_head_commit`: the pull request has moved past the group's commit.
    NotHead,
    /// `only_open`: the pull request is closed without merging.
    Closed,
    /// `only_open`: the pull request is merged.
    Merged,
    /// `skip_draft`: the pull request is a draft.
    Draft,
    /// `authors`: the pull request's author is not known yet.
    AuthorUnknown,
    /// `authors` / `exclude_authors`: the author is not one the rule fires for.
    Author,
    /// `skip_bots`: the author is a bot.
    Bot,
    /// A group without a pull request whose commit belongs to one: its runs are judged in
    /// the pull request's group (`require_pr = false`).
    InPullRequest,
    Streak,
    /// `skip_flaky`: every failed workflow is known flaky.
    KnownFlaky,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRun {
    pub run_id: String,
    pub workflow: String,
    pub status: Status,
}

/// Where a trigger is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Published (its PubAck arrived).
    Sent,
    /// In the outbox, not published yet: the relay publishes it.
    Unsent,
    /// In the outbox, set aside (its payload cannot be published).
    SetAside,
    /// Not in the outbox any more (purged).
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiredTrigger {
    pub trigger_id: Uuid,
    /// `all_completed_with_failure`: the episode; `repeated_failure`: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode: Option<u32>,
    /// `repeated_failure`: the streak's branch and workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The trigger's `fired_at` (the outbox row's creation when the payload is unreadable;
    /// absent when the row is gone).
    pub fired_at: Option<DateTime<Utc>>,
    pub delivery: Delivery,
    pub sent_at: Option<DateTime<Utc>>,
    /// Relay claims of the row (the deciding worker's own publish is not counted).
    pub attempts: Option<i32>,
    pub last_error: Option<String>,
    pub set_aside_reason: Option<String>,
}

/// A `repeated_failure` streak (repository, rule, branch, workflow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreakInfo {
    pub branch: String,
    pub workflow: String,
    pub threshold: u32,
    /// The newest completed runs that failed, counted back to the first that did not.
    pub failures_in_a_row: u32,
    /// The streak reached the threshold and has fired (or was suppressed by a cooldown).
    pub fired: bool,
    /// For a fired streak: its trigger id, and whether that trigger is in the outbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_in_outbox: Option<bool>,
}

/// A time as the text form shows it (UTC, seconds).
pub fn show_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Queued => "queued",
        Status::InProgress => "in_progress",
        Status::Completed => "completed",
    }
}
