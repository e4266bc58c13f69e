//! The group rows of a transaction: locked (created when absent) with their pull
//! requests' heads, decoded into [`Slot`]s (or set aside as [`CorruptRow`]s), written back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use tracing::error;
use uuid::Uuid;

use crate::engine::routing::{self, Pull};
use crate::engine::{GroupCtx, GroupState, RepoRef};
use crate::event::{RejectCode, Rejection};
use crate::store::{StoreError, association};

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

pub(super) fn slot_from_row(
    row: &sqlx::postgres::PgRow,
    repos: &HashMap<i64, RepoRef>,
) -> Result<Result<Slot, CorruptRow>, StoreError> {
    let id: i64 = row.try_get("id")?;
    let repo_id: i64 = row.try_get("repository_id")?;
    let pr: Option<i64> = row.try_get("pr_number")?;
    let commit_sha: String = row.try_get("commit_sha")?;
    let branch: Option<String> = row.try_get("branch")?;
    // Straight from the jsonb bytes into the engine's type: no intermediate Value.
    let state: GroupState = match row.try_get::<Json<GroupState>, _>("state") {
        Ok(s) => s.0,
        Err(sqlx::Error::ColumnDecode { source, .. }) => {
            return Ok(Err(CorruptRow {
                id,
                label: format!(
                    "group repository={repo_id} pr={} commit={commit_sha}",
                    pr.unwrap_or(0)
                ),
                detail: source.to_string(),
            }));
        }
        Err(e) => return Err(e.into()),
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
    let rows = sqlx::query("SELECT * FROM runwatch_lock_groups_pulls($1, $2, $3)")
        .bind(&rid)
        .bind(&pr)
        .bind(&sha)
        .fetch_all(&mut **tx)
        .await?;
    let mut out = BTreeMap::new();
    let mut corrupt = BTreeMap::new();
    let mut pulls = BTreeMap::new();
    for row in &rows {
        let pr: Option<i64> = row.try_get("pr_number")?;
        if let Some(pr) = pr.and_then(|p| u64::try_from(p).ok())
            && let Some(pull) = association::pull_from_row(row)?
        {
            pulls.insert((row.try_get("repository_id")?, pr), pull);
        }
        match slot_from_row(row, repos)? {
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
                let key: GroupKey = (
                    row.try_get("repository_id")?,
                    row.try_get::<Option<i64>, _>("pr_number")?.unwrap_or(0),
                    row.try_get("commit_sha")?,
                );
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
    sqlx::query(
        // updated_at and touched_on are set here, so the PL/pgSQL trigger does not run. The
        // data-modifying WITH runs exactly once, whatever the outer UPDATE matches.
        "WITH sent AS (
             UPDATE outbox SET sent_at = now(), last_error = NULL
             WHERE trigger_id = ANY($6) AND sent_at IS NULL)
         UPDATE groups SET branch = u.b, state = u.st, due_event_at = u.de, due_wall_at = u.dw,
                           updated_at = now(), touched_on = (now() AT TIME ZONE 'UTC')::date
         FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[])
              AS u(id, b, st, de, dw)
         WHERE groups.id = u.id",
    )
    .bind(&ids)
    .bind(&branches)
    .bind(&states)
    .bind(&due_event)
    .bind(&due_wall)
    .bind(sent)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
