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
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

use super::StoreError;
use crate::engine::{GroupState, RunState};

/// A (repository id, commit) pair.
pub(super) type Commit = (i64, String);

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
) -> Result<HashMap<Commit, BTreeSet<u64>>, StoreError> {
    let keys: BTreeSet<i32> = commits.iter().map(lock_key).collect();
    let keys: Vec<i32> = keys.into_iter().collect();
    let (r, s): (Vec<i64>, Vec<String>) = commits.iter().cloned().unzip();
    let rows = sqlx::query("SELECT * FROM runwatch_lock_commits_pulls($1, $2, $3)")
        .bind(&keys)
        .bind(&r)
        .bind(&s)
        .fetch_all(&mut **tx)
        .await?;
    let mut out: HashMap<Commit, BTreeSet<u64>> = HashMap::new();
    for row in rows {
        let pr: i64 = row.try_get("pr_number")?;
        let Ok(pr) = u64::try_from(pr) else { continue };
        out.entry((row.try_get("repository_id")?, row.try_get("commit_sha")?))
            .or_default()
            .insert(pr);
    }
    Ok(out)
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
    sqlx::query(
        "INSERT INTO commit_pulls (repository_id, commit_sha, pr_number)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
    )
    .bind(&r)
    .bind(&s)
    .bind(&p)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The runs of the commits' groups without a pull request, where such a group exists. Read
/// without a row lock: under the commit lock only the timer sweep can write these rows, and
/// it never changes runs. A row whose state does not decode counts as empty (it is reported
/// when its own events arrive).
pub(super) async fn load_pr_less_runs(
    tx: &mut Transaction<'static, Postgres>,
    commits: &BTreeSet<Commit>,
) -> Result<HashMap<Commit, BTreeMap<String, RunState>>, StoreError> {
    let mut out = HashMap::new();
    if commits.is_empty() {
        return Ok(out);
    }
    let (r, s): (Vec<i64>, Vec<String>) = commits.iter().cloned().unzip();
    let rows = sqlx::query(
        "SELECT g.repository_id, g.commit_sha, g.state FROM groups g
         JOIN UNNEST($1::bigint[], $2::text[]) AS u(r, s)
           ON g.repository_id = u.r AND COALESCE(g.pr_number, 0) = 0 AND g.commit_sha = u.s",
    )
    .bind(&r)
    .bind(&s)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let Ok(state) = row.try_get::<Json<GroupState>, _>("state") else {
            continue;
        };
        out.insert(
            (row.try_get("repository_id")?, row.try_get("commit_sha")?),
            state.0.runs,
        );
    }
    Ok(out)
}

/// A pull request's head: (when reported, commit). The latest by this order wins.
pub(super) type Head = (DateTime<Utc>, String);

/// The known heads of the pull requests.
pub(super) async fn load_heads(
    tx: &mut Transaction<'static, Postgres>,
    prs: &BTreeSet<(i64, u64)>,
) -> Result<BTreeMap<(i64, u64), Head>, StoreError> {
    let mut out = BTreeMap::new();
    if prs.is_empty() {
        return Ok(out);
    }
    let r: Vec<i64> = prs.iter().map(|(r, _)| *r).collect();
    let p: Vec<i64> = prs
        .iter()
        .map(|(_, p)| i64::try_from(*p).unwrap_or(i64::MAX))
        .collect();
    let rows = sqlx::query(
        "SELECT h.repository_id, h.pr_number, h.head_sha, h.head_at FROM pull_heads h
         JOIN UNNEST($1::bigint[], $2::bigint[]) AS u(r, p) ON h.repository_id = u.r AND h.pr_number = u.p",
    )
    .bind(&r)
    .bind(&p)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let pr: i64 = row.try_get("pr_number")?;
        let Ok(pr) = u64::try_from(pr) else { continue };
        out.insert(
            (row.try_get("repository_id")?, pr),
            (row.try_get("head_at")?, row.try_get("head_sha")?),
        );
    }
    Ok(out)
}

/// Writes heads, each only over an older one (by `(head_at, head_sha)`), so concurrent
/// writers converge on the latest whatever their order.
pub(super) async fn write_heads(
    tx: &mut Transaction<'static, Postgres>,
    heads: &BTreeMap<(i64, u64), Head>,
) -> Result<(), StoreError> {
    if heads.is_empty() {
        return Ok(());
    }
    let (mut r, mut p, mut s, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((repo, pr), (t, sha)) in heads {
        r.push(*repo);
        p.push(i64::try_from(*pr).unwrap_or(i64::MAX));
        s.push(sha.clone());
        at.push(*t);
    }
    sqlx::query(
        "INSERT INTO pull_heads (repository_id, pr_number, head_sha, head_at)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[])
         ON CONFLICT (repository_id, pr_number) DO UPDATE
           SET head_sha = EXCLUDED.head_sha, head_at = EXCLUDED.head_at, updated_at = now()
           WHERE (pull_heads.head_at, pull_heads.head_sha COLLATE \"C\")
                 < (EXCLUDED.head_at, EXCLUDED.head_sha COLLATE \"C\")",
    )
    .bind(&r)
    .bind(&p)
    .bind(&s)
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether `candidate` replaces `current` as a pull request's head (the same order as
/// [`write_heads`]: later `updated_at`, then the larger commit as bytes).
pub(super) fn newer_head(current: Option<&Head>, candidate: &Head) -> bool {
    current.is_none_or(|c| (candidate.0, candidate.1.as_bytes()) > (c.0, c.1.as_bytes()))
}
