//! The reads behind `explain`: one `REPEATABLE READ READ ONLY` transaction (one consistent snapshot; plain SELECTs, no row lock, so the worker is
//! never held up), needing only SELECT on runwatch's tables (the worker role has it).

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::verdict::{self, Explanation, GroupView, OutboxRow, Shared};
use super::{ExplainError, Target};
use crate::engine::{GroupState, RepoRef, RuleSet, StreakKey, StreakState, routing};
use crate::event::Provider;
use crate::store;
use crate::store::Lenient;
use crate::trigger::Trigger;

pub(super) const READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Explains the target's group with `rules`; `Ok(Err(message))` when it is not found.
pub async fn explain(
    pool: &PgPool,
    rules: &RuleSet,
    target: &Target,
) -> Result<Result<Explanation, String>, ExplainError> {
    let mut tx = pool.begin_with(READ_ONLY).await?;
    let out = explain_in(&mut tx, rules, target).await;
    tx.commit().await?;
    out
}

async fn explain_in(
    tx: &mut Transaction<'static, Postgres>,
    rules: &RuleSet,
    target: &Target,
) -> Result<Result<Explanation, String>, ExplainError> {
    let group_id = match find_group(tx, target).await? {
        Ok(id) => id,
        Err(missing) => return Ok(Err(missing)),
    };
    let row = sqlx::query!(
        r#"SELECT g.id, g.pr_number, g.commit_sha, g.branch, g.state AS "state: Lenient<GroupState>", g.updated_at,
                r.id AS repository_id, r.stable_key, r.provider, r.owner, r.name, r.external_id,
                now() AS "now!"
         FROM groups g JOIN repositories r ON r.id = g.repository_id WHERE g.id = $1"#,
        group_id
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Err(format!("group {group_id} is gone (purged)")));
    };
    let state: GroupState = match row.state.0 {
        Ok(s) => s,
        Err(source) => {
            return Err(ExplainError::Corrupt {
                what: format!("the state of group {group_id}"),
                detail: source.to_string(),
            });
        }
    };
    let pr = row.pr_number;
    let now = row.now;
    let repository_id = row.repository_id;
    let mut state = state;
    // What the worker hands the engine besides the stored state: the pull request's head,
    // state and info (`only_head_commit`, `only_open`, `skip_draft`, the author filters),
    // or, for a group without a pull request, whether its commit belongs to one.
    match pr.and_then(|p| u64::try_from(p).ok()) {
        Some(pr) => {
            let pull = store::load_pull(tx, repository_id, pr).await?;
            routing::show_pull(&mut state, pull.as_ref());
        }
        None => {
            state.commit_in_pull =
                store::commit_in_pull(tx, repository_id, &row.commit_sha).await?;
        }
    }
    let group = GroupView {
        id: group_id,
        repo: RepoRef {
            internal_id: repository_id,
            stable_key: row.stable_key,
            provider: Provider::parse(&row.provider).unwrap_or(Provider::Generic),
            owner: row.owner,
            name: row.name,
            external_id: row.external_id,
        },
        pr_number: pr.and_then(|p| u64::try_from(p).ok()),
        commit_sha: row.commit_sha,
        branch: row.branch,
        updated_at: row.updated_at,
        state,
    };

    let mut shared = Shared::default();
    // last_fired_at IS NOT NULL in the WHERE clause, which Postgres does not infer: "!".
    for r in sqlx::query!(
        r#"SELECT rule, last_fired_at AS "last_fired_at!" FROM cooldowns WHERE repository_id = $1 AND last_fired_at IS NOT NULL"#,
        group.repo.internal_id
    )
    .fetch_all(&mut **tx)
    .await?
    {
        shared.cooldowns.insert(r.rule, r.last_fired_at);
    }
    if rules.counts_flips() {
        load_flips(tx, &group, rules, &mut shared).await?;
    }
    let keys = verdict::streak_keys(&group, rules);
    if !keys.is_empty() {
        let rule: Vec<&str> = keys.iter().map(|k| k.rule.as_str()).collect();
        let branch: Vec<&str> = keys.iter().map(|k| k.branch.as_str()).collect();
        let workflow: Vec<&str> = keys.iter().map(|k| k.workflow.as_str()).collect();
        let rows = sqlx::query!(
            r#"SELECT s.rule, s.branch, s.workflow, s.state AS "state: Lenient<StreakState>" FROM streaks s
             JOIN UNNEST($2::text[], $3::text[], $4::text[]) AS u(ru, b, w)
               ON s.rule = u.ru AND s.branch = u.b AND s.workflow = u.w
             WHERE s.repository_id = $1"#,
            group.repo.internal_id,
            &rule as _,
            &branch as _,
            &workflow as _
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let key = StreakKey {
                repository_id: group.repo.internal_id,
                rule: r.rule,
                branch: r.branch,
                workflow: r.workflow,
            };
            let state: StreakState = match r.state.0 {
                Ok(s) => s,
                Err(source) => {
                    return Err(ExplainError::Corrupt {
                        what: format!(
                            "the streak of rule {} branch {:?} workflow {:?}",
                            key.rule, key.branch, key.workflow
                        ),
                        detail: source.to_string(),
                    });
                }
            };
            shared.streaks.insert(key, state);
        }
    }
    let ids: Vec<Uuid> = verdict::trigger_ids_to_load(&group, rules, &shared);
    let mut outbox = Vec::new();
    for r in sqlx::query!(
        "SELECT trigger_id, group_id, payload, created_at, sent_at, attempts, last_error, set_aside_at,
                set_aside_reason
         FROM outbox WHERE group_id = $1 OR trigger_id = ANY($2) ORDER BY created_at, trigger_id",
        group_id,
        &ids
    )
    .fetch_all(&mut **tx)
    .await?
    {
        outbox.push(OutboxRow {
            trigger_id: r.trigger_id,
            group_id: r.group_id,
            trigger: serde_json::from_slice::<Trigger>(&r.payload).ok(),
            created_at: r.created_at,
            sent_at: r.sent_at,
            attempts: r.attempts,
            last_error: r.last_error,
            set_aside_at: r.set_aside_at,
            set_aside_reason: r.set_aside_reason,
        });
    }
    let mut explanation = verdict::explain(&group, rules, &outbox, &shared, now);
    add_jobs(tx, group.repo.internal_id, &mut explanation).await?;
    Ok(Ok(explanation))
}

/// The known jobs of the group's runs, each of its run's attempt (primary-key prefix of
/// `jobs`), sorted by name then id. A job that cannot be decoded is left out.
async fn add_jobs(
    tx: &mut Transaction<'static, Postgres>,
    repository_id: i64,
    e: &mut Explanation,
) -> Result<(), ExplainError> {
    if e.runs.is_empty() {
        return Ok(());
    }
    let run: Vec<&str> = e.runs.iter().map(|r| r.run_id.as_str()).collect();
    let attempt: Vec<i64> = e.runs.iter().map(|r| i64::from(r.attempt)).collect();
    let rows = sqlx::query!(
        r#"SELECT j.run_id, j.job_id, j.job AS "job: Lenient<crate::engine::JobState>" FROM jobs j
         JOIN UNNEST($2::text[], $3::bigint[]) AS u(run, a)
           ON j.run_id = u.run AND j.attempt = u.a
         WHERE j.repository_id = $1"#,
        repository_id,
        &run as _,
        &attempt
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let Ok(job) = row.job.0 else {
            continue;
        };
        if let Some(r) = e.runs.iter_mut().find(|r| r.run_id == row.run_id) {
            r.jobs.push(verdict::JobInfo {
                job_id: row.job_id,
                name: job.name,
                status: job.status,
                conclusion: job.conclusion,
                failed_steps: job.failed_steps.into_iter().map(|s| s.name).collect(),
            });
        }
    }
    for r in &mut e.runs {
        r.jobs
            .sort_by(|a, b| (&a.name, &a.job_id).cmp(&(&b.name, &b.job_id)));
    }
    Ok(())
}

/// The flips of the group's workflows that the verdicts may count (as the worker loads
/// them: the newest `MAX_FLIPS_COUNTED` of each, dated after the group's newest run's time
/// minus the longest `flaky_window`).
async fn load_flips(
    tx: &mut Transaction<'static, Postgres>,
    group: &GroupView,
    rules: &RuleSet,
    shared: &mut Shared,
) -> Result<(), ExplainError> {
    let workflows: std::collections::BTreeSet<&str> = group
        .state
        .runs
        .values()
        .map(|r| r.workflow.as_str())
        .collect();
    let Some(at) = group.state.runs.values().map(|r| r.updated_at).max() else {
        return Ok(());
    };
    let workflows: Vec<&str> = workflows.into_iter().collect();
    let from = chrono::Duration::from_std(rules.longest_flaky_window())
        .ok()
        .and_then(|d| at.checked_sub_signed(d))
        .filter(|t| t.timestamp() > -62_135_596_800);
    // The columns of UNNEST and of the LATERAL subquery carry no NOT NULL: "!" as the code
    // always read them.
    let rows = sqlx::query!(
        r#"SELECT u.w AS "workflow!", f.run_id AS "run_id!", f.attempt AS "attempt!", f.flipped_at AS "flipped_at!"
         FROM UNNEST($2::text[]) AS u(w)
         CROSS JOIN LATERAL (
             SELECT run_id, attempt, flipped_at FROM flips
             WHERE repository_id = $1 AND workflow = u.w AND job = ''
               AND ($3::timestamptz IS NULL OR flipped_at > $3)
             ORDER BY flipped_at DESC LIMIT $4) f"#,
        group.repo.internal_id,
        &workflows as _,
        from,
        i64::from(crate::engine::flaky::MAX_FLIPS_COUNTED)
    )
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let flip = crate::engine::Flip {
            attempt: u32::try_from(r.attempt).unwrap_or(u32::MAX),
            at: r.flipped_at,
        };
        crate::engine::flaky::record(shared.flips.entry(r.workflow).or_default(), &r.run_id, flip);
    }
    Ok(())
}

/// The id of the target's group, or a message saying what is missing.
async fn find_group(
    tx: &mut Transaction<'static, Postgres>,
    target: &Target,
) -> Result<Result<i64, String>, ExplainError> {
    match target {
        Target::Trigger(id) => {
            let group =
                sqlx::query_scalar!("SELECT group_id FROM outbox WHERE trigger_id = $1", id)
                    .fetch_optional(&mut **tx)
                    .await?;
            Ok(match group {
                None => Err(format!(
                    "trigger {id} is not in the outbox (never decided here, or purged)"
                )),
                Some(g) => match g {
                    Some(g) => Ok(g),
                    None => Err(format!(
                        "trigger {id} is in the outbox, but its group was purged"
                    )),
                },
            })
        }
        Target::Group {
            provider,
            repository,
            pr_number,
            commit,
        } => {
            let (owner, name) = repository
                .split_once('/')
                .unwrap_or((repository.as_str(), ""));
            let pr = pr_number.map_or(0, |p| i64::try_from(p).unwrap_or(i64::MAX));
            let rows = sqlx::query!(
                "SELECT g.id, g.commit_sha FROM groups g JOIN repositories r ON r.id = g.repository_id
                 WHERE r.provider = $1 AND lower(r.owner) = lower($2) AND lower(r.name) = lower($3)
                   AND COALESCE(g.pr_number, 0) = $4 AND starts_with(g.commit_sha, $5)
                 ORDER BY (g.commit_sha = $5) DESC, g.id LIMIT 3",
                provider.as_str(),
                owner,
                name,
                pr,
                commit
            )
            .fetch_all(&mut **tx)
            .await?;
            let shas: Vec<String> = rows.iter().map(|r| r.commit_sha.clone()).collect();
            let pr_words = pr_number.map_or_else(
                || "no pull request".to_string(),
                |p| format!("pull request {p}"),
            );
            match shas.first() {
                None => Ok(Err(format!(
                    "no group for {provider} {repository}, {pr_words}, commit {commit}"
                ))),
                Some(first) if first == commit || shas.len() == 1 => Ok(Ok(rows[0].id)),
                Some(_) => Err(ExplainError::Usage(format!(
                    "commit {commit} is ambiguous for {provider} {repository}, {pr_words}: {} match; give more of it",
                    shas.join(", ")
                ))),
            }
        }
    }
}
