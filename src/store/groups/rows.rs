//! The group rows of a transaction: locked (created when absent) with their pull
//! requests' heads, decoded into [`Slot`]s (or set aside as [`CorruptRow`]s), written back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use tracing::error;
use uuid::Uuid;

use crate::engine::routing::{self, Pull};
use crate::engine::{GroupCtx, GroupState, RepoRef};
use crate::event::{RejectCode, Rejection};
use crate::store::StoreError;
use crate::store::association::{self, PullColumns};
use crate::store::lenient::Lenient;

/// A group's key as stored: (repository id, pull request or 0, commit).
pub(super) type GroupKey = (i64, i64, String);

pub(super) struct Slot {
    pub(super) id: i64,
    pub(super) repo: RepoRef,
    pub(super) pr_number: Option<u64>,
    pub(super) commit_sha: String,
    pub(super) branch: Option<String>,
    pub(super) state: GroupState,
    pub(super) original_branch: Option<String>,
    pub(super) original_state: GroupState,
}

impl Slot {
    /// The engine's view of this group.
    pub(super) fn ctx(&mut self) -> GroupCtx<'_> {
        GroupCtx {
            repo: &self.repo,
            pr_number: self.pr_number,
            commit_sha: &self.commit_sha,
            branch: &mut self.branch,
            state: &mut self.state,
        }
    }

    pub(super) fn changed(&self) -> bool {
        self.branch != self.original_branch || self.state != self.original_state
    }
}

pub(super) fn pr_key(pr: Option<u64>) -> i64 {
    pr.map_or(0, |p| i64::try_from(p).unwrap_or(i64::MAX))
}

/// A row whose stored state cannot be decoded (written by hand, by a newer version, by a
/// bug). It is set aside: never written, its events dead-lettered as `corrupt_state`, its
/// timers dropped; everything else carries on.
pub(super) struct CorruptRow {
    pub(super) id: i64,
    pub(super) label: String,
    pub(super) detail: String,
}

impl CorruptRow {
    pub(super) fn report(&self, op: &'static str) {
        metrics::counter!("runwatch_corrupt_rows_total", "op" => op).increment(1);
        error!(row = self.id, key = %self.label, detail = %self.detail, op,
            "stored state cannot be decoded: row set aside (repair it, then redrive its dead letters)");
    }

    pub(super) fn rejection(&self) -> Rejection {
        Rejection::new(
            RejectCode::CorruptState,
            format!(
                "{} (row {}): stored state cannot be decoded: {}",
                self.label, self.id, self.detail
            ),
        )
    }
}

/// A group row as the record transaction and the timer sweep read it.
pub(super) struct GroupColumns {
    pub(super) id: i64,
    pub(super) repository_id: i64,
    pub(super) pr_number: Option<i64>,
    pub(super) commit_sha: String,
    pub(super) branch: Option<String>,
    /// Straight from the json bytes into the engine's type: no intermediate Value.
    pub(super) state: Lenient<GroupState>,
}

pub(super) fn slot_from_row(
    row: GroupColumns,
    repos: &HashMap<i64, RepoRef>,
) -> Result<Result<Slot, CorruptRow>, StoreError> {
    let GroupColumns {
        id,
        repository_id: repo_id,
        pr_number: pr,
        commit_sha,
        branch,
        state,
    } = row;
    let state: GroupState = match state.0 {
        Ok(s) => s,
        Err(source) => {
            return Ok(Err(CorruptRow {
                id,
                label: format!(
                    "group repository={repo_id} pr={} commit={commit_sha}",
                    pr.unwrap_or(0)
                ),
                detail: source.to_string(),
            }));
        }
    };
    let repo = repos
        .get(&repo_id)
        .cloned()
        .ok_or(StoreError::Db(sqlx::Error::RowNotFound))?;
    Ok(Ok(Slot {
        id,
        repo,
        pr_number: pr.and_then(|p| u64::try_from(p).ok()),
        commit_sha,
        original_branch: branch.clone(),
        branch,
        original_state: state.clone(),
        state,
    }))
}

/// Gives the engine the head and the state of the slot's pull request (not stored with the
/// group).
pub(super) fn set_head(slot: &mut Slot, heads: &BTreeMap<(i64, u64), Pull>) {
    let pull = slot
        .pr_number
        .and_then(|n| heads.get(&(slot.repo.internal_id, n)));
    routing::show_pull(&mut slot.state, pull);
    routing::show_pull(&mut slot.original_state, pull);
}

/// The groups of a batch, locked; the rows that cannot be decoded; the pull requests' heads
/// and states.
pub(super) type Locked = (
    BTreeMap<GroupKey, Slot>,
    BTreeMap<GroupKey, CorruptRow>,
    BTreeMap<(i64, u64), Pull>,
);

/// Inserts the absent groups, then locks all of them in key order and reads their pull
/// requests' heads and states (one round trip).
pub(super) async fn lock_groups(
    tx: &mut Transaction<'static, Postgres>,
    keys: &BTreeSet<GroupKey>,
    repos: &HashMap<i64, RepoRef>,
) -> Result<Locked, StoreError> {
    let mut rid = Vec::with_capacity(keys.len());
    let mut pr = Vec::with_capacity(keys.len());
    let mut sha = Vec::with_capacity(keys.len());
    for (r, p, s) in keys {
        rid.push(*r);
        pr.push(*p);
        sha.push(s.clone());
    }
    // runwatch_lock_groups_pulls (migrations/20261203230001): INSERT … ON CONFLICT DO
    // NOTHING, then SELECT … LEFT JOIN pull_heads … ORDER BY key FOR UPDATE, as two
    // statements in one round trip.
    // A function's result columns carry no NOT NULL: "!" on those the code always read as
    // non-null (the group's key; a NULL state is a row that does not decode).
    let rows = sqlx::query!(
        r#"SELECT id AS "id!", repository_id AS "repository_id!", pr_number, commit_sha AS "commit_sha!",
                  branch, state AS "state!: Lenient<GroupState>", head_sha, head_at, pr_state,
                  pr_draft, state_at, pr_title, pr_author, pr_author_bot, pr_head_branch,
                  pr_base_branch, pr_url, info_at
           FROM runwatch_lock_groups_pulls($1, $2, $3)"#,
        &rid,
        &pr,
        &sha
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut out = BTreeMap::new();
    let mut corrupt = BTreeMap::new();
    let mut pulls = BTreeMap::new();
    for row in rows {
        if let Some(pr) = row.pr_number.and_then(|p| u64::try_from(p).ok())
            && let Some(pull) = association::pull_from_row(PullColumns {
                head_sha: row.head_sha,
                head_at: row.head_at,
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
            })
        {
            pulls.insert((row.repository_id, pr), pull);
        }
        let key: GroupKey = (
            row.repository_id,
            row.pr_number.unwrap_or(0),
            row.commit_sha.clone(),
        );
        let group = GroupColumns {
            id: row.id,
            repository_id: row.repository_id,
            pr_number: row.pr_number,
            commit_sha: row.commit_sha,
            branch: row.branch,
            state: row.state,
        };
        match slot_from_row(group, repos)? {
            Ok(slot) => {
                out.insert(
                    (
                        slot.repo.internal_id,
                        pr_key(slot.pr_number),
                        slot.commit_sha.clone(),
                    ),
                    slot,
                );
            }
            Err(c) => {
                c.report("record");
                corrupt.insert(key, c);
            }
        }
    }
    Ok((out, corrupt, pulls))
}

/// Writes the groups whose state or branch changed, with their due times, and marks the
/// triggers `sent` as published, in one statement.
pub(super) async fn write_groups<'a>(
    tx: &mut Transaction<'static, Postgres>,
    slots: impl Iterator<Item = &'a Slot>,
    sent: &[Uuid],
) -> Result<(), StoreError> {
    let (mut ids, mut branches, mut states, mut due_event, mut due_wall) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in slots.filter(|s| s.changed()) {
        let due = s.state.next_due();
        ids.push(s.id);
        branches.push(s.branch.clone());
        states.push(Json(&s.state));
        due_event.push(due.map(|d| d.event));
        due_wall.push(due.map(|d| d.wall));
    }
    if ids.is_empty() && sent.is_empty() {
        return Ok(());
    }
    // updated_at and touched_on are set here, so the PL/pgSQL trigger does not run. The
    // data-modifying WITH runs exactly once, whatever the outer UPDATE matches.
    sqlx::query!(
        "WITH sent AS (
             UPDATE outbox SET sent_at = now(), last_error = NULL
             WHERE trigger_id = ANY($6) AND sent_at IS NULL)
         UPDATE groups SET branch = u.b, state = u.st, due_event_at = u.de, due_wall_at = u.dw,
                           updated_at = now(), touched_on = (now() AT TIME ZONE 'UTC')::date
         FROM UNNEST($1::bigint[], $2::text[], $3::json[], $4::timestamptz[], $5::timestamptz[])
              AS u(id, b, st, de, dw)
         WHERE groups.id = u.id",
        &ids,
        &branches as _,
        &states as _,
        &due_event as _,
        &due_wall as _,
        sent
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
