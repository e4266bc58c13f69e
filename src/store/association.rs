//! The pull requests of a commit and the heads of pull requests, in Postgres
//! (`commit_pulls`, `pull_heads`; docs/design.md "Pull requests of a commit").
//!
//! Every record transaction first takes a transaction-scoped advisory lock per
//! (repository, commit) of its batch, in key order, before any group row; the group rows are
//! then locked as before. So a transaction that learns that a commit belongs to a pull
//! request and one that fans a run without a pull request out to the commit's known pull
//! requests are serialized: the second always sees what the first wrote.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};

use super::StoreError;
use super::lenient::Lenient;
pub(super) use crate::engine::routing::Commit;
use crate::engine::routing::{Associations, Pull};
use crate::engine::{GroupState, PullAuthor, PullInfo, PullState, PullStatus};

/// The advisory lock key of a commit: 32 bits of SHA-256 of the repository id and the commit.
/// Two commits sharing a key are merely serialized.
fn lock_key(c: &Commit) -> i32 {
    let mut h = Sha256::new();
    h.update(c.0.to_be_bytes());
    h.update(c.1.as_bytes());
    let d = h.finalize();
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Locks the commits (sorted, deduplicated keys: every transaction takes them in the same
/// order), then reads their known pull requests, in one call
/// (`runwatch_lock_commits_pulls`: the read sees what a previous holder of a lock wrote).
pub(super) async fn lock_commits_load_pulls(
    tx: &mut Transaction<'static, Postgres>,
    commits: &BTreeSet<Commit>,
) -> Result<Associations, StoreError> {
    let keys: BTreeSet<i32> = commits.iter().map(lock_key).collect();
    let keys: Vec<i32> = keys.into_iter().collect();
    let (r, s): (Vec<i64>, Vec<String>) = commits.iter().cloned().unzip();
    // A function's result columns carry no NOT NULL: "!" as the code always read them.
    let rows = sqlx::query!(
        r#"SELECT repository_id AS "repository_id!", commit_sha AS "commit_sha!", pr_number AS "pr_number!"
           FROM runwatch_lock_commits_pulls($1, $2, $3)"#,
        &keys,
        &r,
        &s
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut out: HashMap<Commit, BTreeSet<u64>> = HashMap::new();
    for row in rows {
        let Ok(pr) = u64::try_from(row.pr_number) else {
            continue;
        };
        out.entry((row.repository_id, row.commit_sha))
            .or_default()
            .insert(pr);
    }
    Ok(out.into())
}

/// Records associations learnt by the batch.
pub(super) async fn insert_pulls(
    tx: &mut Transaction<'static, Postgres>,
    learnt: &[(i64, String, u64)],
) -> Result<(), StoreError> {
    if learnt.is_empty() {
        return Ok(());
    }
    let mut r = Vec::with_capacity(learnt.len());
    let mut s = Vec::with_capacity(learnt.len());
    let mut p = Vec::with_capacity(learnt.len());
    for (repo, sha, pr) in learnt {
        r.push(*repo);
        s.push(sha.clone());
        p.push(i64::try_from(*pr).unwrap_or(i64::MAX));
    }
    sqlx::query!(
        "INSERT INTO commit_pulls (repository_id, commit_sha, pr_number)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
        &r,
        &s,
        &p
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The states of the commits' groups without a pull request (their runs, and whether a rule
/// fired there: [`crate::engine::Engine::inherit_fired`]), where such a group exists. Read
/// without a row lock: under the commit lock only the timer sweep can write these rows, and
/// it never changes runs. A row whose state does not decode counts as empty (it is reported
/// when its own events arrive).
pub(super) async fn load_pr_less_runs(
    tx: &mut Transaction<'static, Postgres>,
    commits: &BTreeSet<Commit>,
) -> Result<HashMap<Commit, GroupState>, StoreError> {
    let mut out = HashMap::new();
    if commits.is_empty() {
        return Ok(out);
    }
    let (r, s): (Vec<i64>, Vec<String>) = commits.iter().cloned().unzip();
    let rows = sqlx::query!(
        r#"SELECT g.repository_id, g.commit_sha, g.state AS "state: Lenient<GroupState>" FROM groups g
         JOIN UNNEST($1::bigint[], $2::text[]) AS u(r, s)
           ON g.repository_id = u.r AND COALESCE(g.pr_number, 0) = 0 AND g.commit_sha = u.s"#,
        &r,
        &s
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let Ok(state) = row.state.0 else {
            continue;
        };
        out.insert((row.repository_id, row.commit_sha), state);
    }
    Ok(out)
}

/// The head, state and info columns of a `pull_heads` row (or of
/// `runwatch_lock_groups_pulls`, where they are NULL without a row), as the queries read them.
pub(super) struct PullColumns {
    pub(super) head_sha: Option<String>,
    pub(super) head_at: Option<DateTime<Utc>>,
    pub(super) pr_state: Option<String>,
    pub(super) pr_draft: Option<bool>,
    pub(super) state_at: Option<DateTime<Utc>>,
    pub(super) pr_title: Option<String>,
    pub(super) pr_author: Option<String>,
    pub(super) pr_author_bot: Option<bool>,
    pub(super) pr_head_branch: Option<String>,
    pub(super) pr_base_branch: Option<String>,
    pub(super) pr_url: Option<String>,
    pub(super) info_at: Option<DateTime<Utc>>,
}

/// The pull request of a row's [`PullColumns`]; `None` when the row has none.
pub(super) fn pull_from_row(row: PullColumns) -> Option<Pull> {
    let status = match (
        row.pr_state.as_deref().and_then(PullState::parse),
        row.state_at,
    ) {
        (Some(state), Some(at)) => Some(PullStatus {
            state,
            draft: row.pr_draft.unwrap_or(false),
            at,
        }),
        _ => None,
    };
    let head = row.head_at.zip(row.head_sha);
    let info = row.info_at.map(|at| PullInfo {
        title: row.pr_title,
        author: row.pr_author.map(|login| PullAuthor {
            login,
            bot: row.pr_author_bot.unwrap_or(false),
        }),
        head_branch: row.pr_head_branch,
        base_branch: row.pr_base_branch,
        url: row.pr_url,
        at,
    });
    (head.is_some() || status.is_some() || info.is_some()).then_some(Pull { head, status, info })
}

/// Which of the commits are known to belong to a pull request (the timer sweep: a group
/// without a pull request does not fire then).
pub(super) async fn commits_in_pulls(
    tx: &mut Transaction<'static, Postgres>,
    commits: &BTreeSet<Commit>,
) -> Result<BTreeSet<Commit>, StoreError> {
    let mut out = BTreeSet::new();
    if commits.is_empty() {
        return Ok(out);
    }
    let (r, s): (Vec<i64>, Vec<String>) = commits.iter().cloned().unzip();
    let rows = sqlx::query!(
        "SELECT DISTINCT c.repository_id, c.commit_sha FROM commit_pulls c
         JOIN UNNEST($1::bigint[], $2::text[]) AS u(r, s) ON c.repository_id = u.r AND c.commit_sha = u.s",
        &r,
        &s
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        out.insert((row.repository_id, row.commit_sha));
    }
    Ok(out)
}

/// The known heads and states of the pull requests (the timer sweep and `explain`; the
/// record transaction reads them with the groups' rows).
pub(super) async fn load_heads(
    tx: &mut Transaction<'static, Postgres>,
    prs: &BTreeSet<(i64, u64)>,
) -> Result<BTreeMap<(i64, u64), Pull>, StoreError> {
    let mut out = BTreeMap::new();
    if prs.is_empty() {
        return Ok(out);
    }
    let r: Vec<i64> = prs.iter().map(|(r, _)| *r).collect();
    let p: Vec<i64> = prs
        .iter()
        .map(|(_, p)| i64::try_from(*p).unwrap_or(i64::MAX))
        .collect();
    let rows = sqlx::query!(
        "SELECT h.repository_id, h.pr_number, h.head_sha, h.head_at, h.pr_state, h.pr_draft, h.state_at,
                h.pr_title, h.pr_author, h.pr_author_bot, h.pr_head_branch, h.pr_base_branch,
                h.pr_url, h.info_at
         FROM pull_heads h
         JOIN UNNEST($1::bigint[], $2::bigint[]) AS u(r, p) ON h.repository_id = u.r AND h.pr_number = u.p",
        &r,
        &p
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let Ok(pr) = u64::try_from(row.pr_number) else {
            continue;
        };
        let pull = pull_from_row(PullColumns {
            head_sha: Some(row.head_sha),
            head_at: Some(row.head_at),
            pr_state: row.pr_state,
            pr_draft: row.pr_draft,
            state_at: row.state_at,
            pr_title: row.pr_title,
            pr_author: row.pr_author,
            pr_author_bot: row.pr_author_bot,
            pr_head_branch: row.pr_head_branch,
            pr_base_branch: row.pr_base_branch,
            pr_url: row.pr_url,
            info_at: row.info_at,
        });
        if let Some(pull) = pull {
            out.insert((row.repository_id, pr), pull);
        }
    }
    Ok(out)
}

/// Writes heads, states and infos, each only over an older one (the head by
/// `(head_at, head_sha)`, the state by [`PullStatus::supersedes`]'s order, the info by
/// [`PullInfo::supersedes`]'s), so concurrent writers converge on the newest whatever their
/// order.
pub(super) async fn write_heads(
    tx: &mut Transaction<'static, Postgres>,
    pulls: &BTreeMap<(i64, u64), Pull>,
) -> Result<(), StoreError> {
    let (mut r, mut p, mut s, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut st, mut dr, mut st_at) = (Vec::new(), Vec::new(), Vec::new());
    let (mut title, mut login, mut bot, mut hb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bb, mut url, mut info_at) = (Vec::new(), Vec::new(), Vec::new());
    for ((repo, pr), pull) in pulls {
        // Every message carries a head: a learnt pull request always has one.
        let Some((t, sha)) = &pull.head else { continue };
        r.push(*repo);
        p.push(i64::try_from(*pr).unwrap_or(i64::MAX));
        s.push(sha.clone());
        at.push(*t);
        st.push(pull.status.map(|x| x.state.as_str()));
        dr.push(pull.status.map(|x| x.draft));
        st_at.push(pull.status.map(|x| x.at));
        let info = pull.info.as_ref();
        let author = info.and_then(|i| i.author.as_ref());
        title.push(info.and_then(|i| i.title.clone()));
        login.push(author.map(|a| a.login.clone()));
        bot.push(author.map(|a| a.bot));
        hb.push(info.and_then(|i| i.head_branch.clone()));
        bb.push(info.and_then(|i| i.base_branch.clone()));
        url.push(info.and_then(|i| i.url.clone()));
        info_at.push(info.map(|i| i.at));
    }
    if r.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO pull_heads (repository_id, pr_number, head_sha, head_at, pr_state, pr_draft, state_at,
                                 pr_title, pr_author, pr_author_bot, pr_head_branch, pr_base_branch,
                                 pr_url, info_at)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[],
                              $5::text[], $6::boolean[], $7::timestamptz[],
                              $8::text[], $9::text[], $10::boolean[], $11::text[], $12::text[],
                              $13::text[], $14::timestamptz[])
         ON CONFLICT (repository_id, pr_number) DO UPDATE SET
           (head_sha, head_at) = (
             SELECT CASE WHEN newer THEN EXCLUDED.head_sha ELSE pull_heads.head_sha END,
                    CASE WHEN newer THEN EXCLUDED.head_at ELSE pull_heads.head_at END
             FROM (SELECT (pull_heads.head_at, pull_heads.head_sha COLLATE \"C\")
                          < (EXCLUDED.head_at, EXCLUDED.head_sha COLLATE \"C\") AS newer) n),
           (pr_state, pr_draft, state_at) = (
             SELECT CASE WHEN newer THEN EXCLUDED.pr_state ELSE pull_heads.pr_state END,
                    CASE WHEN newer THEN EXCLUDED.pr_draft ELSE pull_heads.pr_draft END,
                    CASE WHEN newer THEN EXCLUDED.state_at ELSE pull_heads.state_at END
             FROM (SELECT EXCLUDED.state_at IS NOT NULL AND (pull_heads.state_at IS NULL OR
                     (pull_heads.state_at, array_position(ARRAY['open','closed','merged'], pull_heads.pr_state),
                      pull_heads.pr_draft)
                   < (EXCLUDED.state_at, array_position(ARRAY['open','closed','merged'], EXCLUDED.pr_state),
                      EXCLUDED.pr_draft)) AS newer) n),
           (pr_title, pr_author, pr_author_bot, pr_head_branch, pr_base_branch, pr_url, info_at) = (
             SELECT CASE WHEN newer THEN EXCLUDED.pr_title ELSE pull_heads.pr_title END,
                    CASE WHEN newer THEN EXCLUDED.pr_author ELSE pull_heads.pr_author END,
                    CASE WHEN newer THEN EXCLUDED.pr_author_bot ELSE pull_heads.pr_author_bot END,
                    CASE WHEN newer THEN EXCLUDED.pr_head_branch ELSE pull_heads.pr_head_branch END,
                    CASE WHEN newer THEN EXCLUDED.pr_base_branch ELSE pull_heads.pr_base_branch END,
                    CASE WHEN newer THEN EXCLUDED.pr_url ELSE pull_heads.pr_url END,
                    CASE WHEN newer THEN EXCLUDED.info_at ELSE pull_heads.info_at END
             FROM (SELECT EXCLUDED.info_at IS NOT NULL AND (pull_heads.info_at IS NULL OR
                     (pull_heads.info_at, COALESCE(pull_heads.pr_title, '') COLLATE \"C\",
                      COALESCE(pull_heads.pr_author, '') COLLATE \"C\",
                      COALESCE(pull_heads.pr_author_bot, false),
                      COALESCE(pull_heads.pr_head_branch, '') COLLATE \"C\",
                      COALESCE(pull_heads.pr_base_branch, '') COLLATE \"C\",
                      COALESCE(pull_heads.pr_url, '') COLLATE \"C\")
                   < (EXCLUDED.info_at, COALESCE(EXCLUDED.pr_title, '') COLLATE \"C\",
                      COALESCE(EXCLUDED.pr_author, '') COLLATE \"C\",
                      COALESCE(EXCLUDED.pr_author_bot, false),
                      COALESCE(EXCLUDED.pr_head_branch, '') COLLATE \"C\",
                      COALESCE(EXCLUDED.pr_base_branch, '') COLLATE \"C\",
                      COALESCE(EXCLUDED.pr_url, '') COLLATE \"C\")) AS newer) n),
           updated_at = now()",
        &r,
        &p,
        &s,
        &at,
        &st as _,
        &dr as _,
        &st_at as _,
        &title as _,
        &login as _,
        &bot as _,
        &hb as _,
        &bb as _,
        &url as _,
        &info_at as _
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One pull request's head, state and info, as a decision hands them to the engine
/// (`explain`, in its own read-only transaction).
pub async fn load_pull(
    tx: &mut Transaction<'static, Postgres>,
    repository_id: i64,
    pr: u64,
) -> Result<Option<Pull>, StoreError> {
    let key = (repository_id, pr);
    Ok(load_heads(tx, &BTreeSet::from([key])).await?.remove(&key))
}

/// Whether the commit is known to belong to a pull request (`explain`, for a group without
/// one: as the record and timer transactions set `commit_in_pull`).
pub async fn commit_in_pull(
    tx: &mut Transaction<'static, Postgres>,
    repository_id: i64,
    commit_sha: &str,
) -> Result<bool, StoreError> {
    let commit = (repository_id, commit_sha.to_string());
    Ok(!commits_in_pulls(tx, &BTreeSet::from([commit]))
        .await?
        .is_empty())
}
