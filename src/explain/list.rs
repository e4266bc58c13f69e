//! The read behind `groups list`: one `REPEATABLE READ READ ONLY` transaction of one
//! SELECT, most recently written groups first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::ExplainError;
use super::query::READ_ONLY;

/// A group's state in `groups list`, in this order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GroupStateFilter {
    /// A settle or cooldown timer is pending.
    PendingTimer,
    /// A trigger of the group is in the outbox, or a rule fired in its current episode.
    Fired,
    /// A rule's decision in its current episode was over a trigger budget (not published),
    /// and no trigger of the group is in the outbox.
    OverBudget,
    /// Some run has not completed.
    Waiting,
    /// Every run completed, nothing fired, no timer.
    Idle,
}

impl GroupStateFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStateFilter::PendingTimer => "pending-timer",
            GroupStateFilter::Fired => "fired",
            GroupStateFilter::OverBudget => "over-budget",
            GroupStateFilter::Waiting => "waiting",
            GroupStateFilter::Idle => "idle",
        }
    }

    fn parse(s: &str) -> GroupStateFilter {
        match s {
            "pending-timer" => GroupStateFilter::PendingTimer,
            "fired" => GroupStateFilter::Fired,
            "over-budget" => GroupStateFilter::OverBudget,
            "waiting" => GroupStateFilter::Waiting,
            _ => GroupStateFilter::Idle,
        }
    }
}

/// What `groups list` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// `owner/name`, case-insensitive, any provider.
    pub repo: Option<String>,
    pub state: Option<GroupStateFilter>,
    /// Only groups written within this long.
    pub since: Option<Duration>,
    pub limit: u32,
}

/// One line of `groups list` (and one JSON object of `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupRow {
    pub id: i64,
    pub provider: String,
    pub repository: String,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    /// How many runs the group holds.
    pub runs: i64,
    pub state: GroupStateFilter,
    pub updated_at: DateTime<Utc>,
    /// The earliest pending timer (wall clock).
    pub next_due: Option<DateTime<Utc>>,
}

/// Groups, most recently written first.
pub async fn list_groups(
    pool: &PgPool,
    options: &ListOptions,
) -> Result<Vec<GroupRow>, ExplainError> {
    let (owner, name) = match options.repo.as_deref() {
        Some(r) => match r.split_once('/') {
            Some((o, n)) => (Some(o.to_string()), Some(n.to_string())),
            None => {
                return Err(ExplainError::Usage(format!(
                    "--repo {r:?}: expected OWNER/NAME"
                )));
            }
        },
        None => (None, None),
    };
    let cutoff = options.since.map(|d| super::since_cutoff(Utc::now(), d));
    let mut tx = pool.begin_with(READ_ONLY).await?;
    // The columns of the subquery carry no NOT NULL: "!" on those the code always read as
    // non-null.
    let rows = sqlx::query!(
        r#"SELECT s.id AS "id!", s.provider AS "provider!", s.repository AS "repository!", s.pr_number,
                  s.commit_sha AS "commit_sha!", s.branch, s.updated_at AS "updated_at!", s.due_wall_at,
                  s.runs AS "runs!", s.state AS "state!"
         FROM (
           SELECT g.id, r.provider, r.owner || '/' || r.name AS repository, g.pr_number, g.commit_sha,
                  g.branch, g.updated_at, g.due_wall_at,
                  (SELECT count(*) FROM jsonb_object_keys(
                      CASE WHEN jsonb_typeof(j.st->'runs') = 'object' THEN j.st->'runs' ELSE '{}'::jsonb END)) AS runs,
                  CASE WHEN g.due_wall_at IS NOT NULL OR g.due_event_at IS NOT NULL THEN 'pending-timer'
                       WHEN g.id IN (SELECT o.group_id FROM outbox o WHERE o.group_id IS NOT NULL) THEN 'fired'
                       WHEN jsonb_path_exists(j.st, '$.rules.* ? (exists(@.over_budget))') THEN 'over-budget'
                       WHEN jsonb_path_exists(j.st, '$.rules.* ? (@.fired == true)') THEN 'fired'
                       WHEN jsonb_path_exists(j.st, '$.runs.*[2] ? (@ != "completed")')
                         OR jsonb_path_exists(j.st, '$.runs.* ? (@.status != "completed")') THEN 'waiting'
                       ELSE 'idle' END AS state
           FROM groups g JOIN repositories r ON r.id = g.repository_id
                CROSS JOIN LATERAL (SELECT g.state::jsonb AS st) j
           WHERE ($1::timestamptz IS NULL OR g.updated_at >= $1)
             AND ($2::text IS NULL OR (lower(r.owner) = lower($2) AND lower(r.name) = lower($3)))
         ) s
         WHERE ($4::text IS NULL OR s.state = $4)
         ORDER BY s.updated_at DESC, s.id DESC
         LIMIT $5"#,
        cutoff,
        owner,
        name,
        options.state.map(GroupStateFilter::as_str),
        i64::from(options.limit)
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| GroupRow {
            id: r.id,
            provider: r.provider,
            repository: r.repository,
            pr_number: r.pr_number.and_then(|p| u64::try_from(p).ok()),
            commit_sha: r.commit_sha,
            branch: r.branch,
            runs: r.runs,
            state: GroupStateFilter::parse(&r.state),
            updated_at: r.updated_at,
            next_due: r.due_wall_at,
        })
        .collect())
}
