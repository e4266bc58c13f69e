//! What the decisions of a transaction share besides their groups: the streak and
//! cooldown rows (locked), the flips (read, then written as the greater of two).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use super::rows::CorruptRow;
use crate::engine::{
    CooldownKey, Flip, FlipKey, Flips, Ledger, RunState, StreakKey, StreakState, flaky,
};
use crate::store::lenient::Lenient;
use crate::store::{Store, StoreError};

impl Store {
    /// The (repository, workflow) keys whose flips a decision may count, of `runs`.
    pub(super) fn flip_keys<'r>(
        &self,
        repository_id: i64,
        runs: impl IntoIterator<Item = &'r RunState>,
    ) -> Vec<FlipKey> {
        runs.into_iter()
            .filter(|r| self.engine.may_count_flips(r))
            .map(|r| FlipKey {
                repository_id,
                workflow: r.workflow.clone(),
            })
            .collect()
    }

    /// The flips the rules may count for `keys` (repository id, workflow), in one
    /// statement: per key, the newest [`flaky::MAX_FLIPS_COUNTED`] dated after `event_clock`
    /// minus the longest `flaky_window` (index `flips_window`). The engine counts within each
    /// rule's window from there, exactly as over every flip (docs/design.md "Flaky
    /// workflows"). Nothing when no rule counts flips.
    pub(super) async fn load_flips(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        keys: &BTreeSet<FlipKey>,
        event_clock: DateTime<Utc>,
    ) -> Result<BTreeMap<FlipKey, Flips>, StoreError> {
        let mut out = BTreeMap::new();
        if !self.engine.rules().counts_flips() || keys.is_empty() {
            return Ok(out);
        }
        let r: Vec<i64> = keys.iter().map(|k| k.repository_id).collect();
        let w: Vec<&str> = keys.iter().map(|k| k.workflow.as_str()).collect();
        // Before year 1 (a worker that has seen no event yet) every flip counts.
        let from = chrono::Duration::from_std(self.engine.rules().longest_flaky_window())
            .ok()
            .and_then(|d| event_clock.checked_sub_signed(d))
            .filter(|t| *t > earliest_timestamp());
        // The columns of UNNEST and of the LATERAL subquery carry no NOT NULL: "!" as the
        // code always read them.
        let rows = sqlx::query!(
            r#"SELECT u.r AS "repository_id!", u.w AS "workflow!", f.run_id AS "run_id!",
                      f.attempt AS "attempt!", f.flipped_at AS "flipped_at!"
             FROM UNNEST($1::bigint[], $2::text[]) AS u(r, w)
             CROSS JOIN LATERAL (
                 SELECT run_id, attempt, flipped_at FROM flips
                 WHERE repository_id = u.r AND workflow = u.w AND job = ''
                   AND ($3::timestamptz IS NULL OR flipped_at > $3)
                 ORDER BY flipped_at DESC LIMIT $4) f"#,
            &r,
            &w as _,
            from,
            i64::from(flaky::MAX_FLIPS_COUNTED)
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = FlipKey {
                repository_id: row.repository_id,
                workflow: row.workflow,
            };
            let flip = Flip {
                attempt: u32::try_from(row.attempt).unwrap_or(u32::MAX),
                at: row.flipped_at,
            };
            flaky::record(out.entry(key).or_insert_with(Flips::new), &row.run_id, flip);
        }
        Ok(out)
    }
}

/// Inserts the absent streak and cooldown rows, then locks them in key order.
pub(super) async fn lock_ledger(
    tx: &mut Transaction<'static, Postgres>,
    streaks: &BTreeSet<StreakKey>,
    cooldowns: &BTreeSet<CooldownKey>,
) -> Result<(Ledger, BTreeMap<StreakKey, CorruptRow>), StoreError> {
    let mut ledger = Ledger::default();
    let mut corrupt = BTreeMap::new();
    if !streaks.is_empty() {
        let (mut r, mut ru, mut b, mut w) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in streaks {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            b.push(k.branch.clone());
            w.push(k.workflow.clone());
        }
        sqlx::query!(
            "INSERT INTO streaks (repository_id, rule, branch, workflow)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT DO NOTHING",
            &r,
            &ru,
            &b,
            &w
        )
        .execute(&mut **tx)
        .await?;
        let rows = sqlx::query!(
            r#"SELECT s.repository_id, s.rule, s.branch, s.workflow, s.state AS "state: Lenient<StreakState>" FROM streaks s
             JOIN UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(r, ru, b, w)
               ON s.repository_id = u.r AND s.rule = u.ru AND s.branch = u.b AND s.workflow = u.w
             ORDER BY s.repository_id, s.rule COLLATE "C", s.branch COLLATE "C", s.workflow COLLATE "C"
             FOR UPDATE OF s"#,
            &r,
            &ru,
            &b,
            &w
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = StreakKey {
                repository_id: row.repository_id,
                rule: row.rule,
                branch: row.branch,
                workflow: row.workflow,
            };
            match row.state.0 {
                Ok(state) => {
                    ledger.streaks.insert(key, state);
                }
                Err(source) => {
                    let c = CorruptRow {
                        id: key.repository_id,
                        label: format!(
                            "streak repository={} rule={} branch={} workflow={}",
                            key.repository_id, key.rule, key.branch, key.workflow
                        ),
                        detail: source.to_string(),
                    };
                    c.report("record");
                    corrupt.insert(key, c);
                }
            }
        }
    }
    if !cooldowns.is_empty() {
        let (mut r, mut ru) = (Vec::new(), Vec::new());
        for k in cooldowns {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
        }
        sqlx::query!(
            "INSERT INTO cooldowns (repository_id, rule)
             SELECT * FROM UNNEST($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING",
            &r,
            &ru
        )
        .execute(&mut **tx)
        .await?;
        let rows = sqlx::query!(
            r#"SELECT c.repository_id, c.rule, c.last_fired_at FROM cooldowns c
             JOIN UNNEST($1::bigint[], $2::text[]) AS u(r, ru) ON c.repository_id = u.r AND c.rule = u.ru
             ORDER BY c.repository_id, c.rule COLLATE "C"
             FOR UPDATE OF c"#,
            &r,
            &ru
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            if let Some(last) = row.last_fired_at {
                ledger.cooldowns.insert(
                    CooldownKey {
                        repository_id: row.repository_id,
                        rule: row.rule,
                    },
                    last,
                );
            }
        }
    }
    Ok((ledger, corrupt))
}

/// 0001-01-01T00:00:00Z: the earliest time an input can carry (and Postgres can hold).
pub(super) fn earliest_timestamp() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Writes the flips the engine added or moved to a greater (attempt, time), in key order.
/// A row another transaction wrote meanwhile keeps the greater of the two, so concurrent
/// decisions need no lock beyond the row's own and the table ends the same in any order.
pub(super) async fn write_flips(
    tx: &mut Transaction<'static, Postgres>,
    before: &Ledger,
    after: &Ledger,
) -> Result<(), StoreError> {
    let (mut r, mut w, mut run, mut attempt, mut at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, flips) in &after.flips {
        let old = before.flips.get(k);
        for (id, f) in flips {
            if old.and_then(|o| o.get(id)) != Some(f) {
                r.push(k.repository_id);
                w.push(k.workflow.as_str());
                run.push(id.as_str());
                attempt.push(i64::from(f.attempt));
                at.push(f.at);
            }
        }
    }
    if r.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO flips (repository_id, workflow, run_id, attempt, flipped_at)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
         ON CONFLICT (repository_id, workflow, job, run_id) DO UPDATE
             SET attempt = EXCLUDED.attempt, flipped_at = EXCLUDED.flipped_at
             WHERE (EXCLUDED.attempt, EXCLUDED.flipped_at) > (flips.attempt, flips.flipped_at)",
        &r,
        &w as _,
        &run as _,
        &attempt,
        &at
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the streaks and cooldowns that changed.
pub(super) async fn write_ledger(
    tx: &mut Transaction<'static, Postgres>,
    before: &Ledger,
    after: &Ledger,
) -> Result<(), StoreError> {
    let (mut r, mut ru, mut b, mut w, mut st) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, s) in &after.streaks {
        if before.streaks.get(k) != Some(s) {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            b.push(k.branch.clone());
            w.push(k.workflow.clone());
            st.push(Json(s));
        }
    }
    if !r.is_empty() {
        sqlx::query!(
            "UPDATE streaks s SET state = u.st
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) AS u(r, ru, b, w, st)
             WHERE s.repository_id = u.r AND s.rule = u.ru AND s.branch = u.b AND s.workflow = u.w",
            &r,
            &ru,
            &b,
            &w,
            &st as _
        )
        .execute(&mut **tx)
        .await?;
    }
    let (mut r, mut ru, mut at) = (Vec::new(), Vec::new(), Vec::new());
    for (k, t) in &after.cooldowns {
        if before.cooldowns.get(k) != Some(t) {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            at.push(*t);
        }
    }
    if !r.is_empty() {
        sqlx::query!(
            "UPDATE cooldowns c SET last_fired_at = u.t
             FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(r, ru, t)
             WHERE c.repository_id = u.r AND c.rule = u.ru",
            &r,
            &ru,
            &at
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
